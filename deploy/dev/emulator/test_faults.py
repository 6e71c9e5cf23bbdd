"""Checks deploy/dev/emulator/faults.py against a live emulator (bqemu.py, every patch), from a
plain HTTP client (requests), as the syncs' client sees it: statuses and BigQuery error bodies,
counts, matching, a reset connection, a slow answer, an incomplete page then the real one.
Run by `make test` (python -m unittest discover -s deploy/dev/emulator).
"""

import concurrent.futures
import os
import sys
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulator import faults  # noqa: E402
from emulator.faults_emulator import PROJECT, Emulator  # noqa: E402

ERRORS = {
    # kind: (HTTP status, errors[0].reason, errors[0].domain, error.status)
    "rateLimitExceeded": (403, "rateLimitExceeded", "usageLimits", "PERMISSION_DENIED"),
    "quotaExceeded": (403, "quotaExceeded", "usageLimits", "PERMISSION_DENIED"),
    "backendError": (500, "backendError", "global", "INTERNAL"),
    "unavailable": (503, "backendError", "global", "UNAVAILABLE"),
}


class Faults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()
        cls.control = cls.emu.url + faults.CONTROL_PATH

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        requests.delete(self.control, timeout=10).raise_for_status()

    def add(self, **rule):
        response = requests.post(self.control, json=rule, timeout=10)
        self.assertEqual(response.status_code, 201, response.text)
        return response.json()

    def rules(self):
        response = requests.get(self.control, timeout=10)
        self.assertEqual(response.status_code, 200)
        return response.json()

    def datasets(self):
        return self.emu.api("GET", "/datasets")

    def assert_passes(self, response):
        self.assertEqual(response.status_code, 200, response.text)
        self.assertNotIn("error", response.json())

    # -- kinds ----------------------------------------------------------------------------

    def test_error_kinds_answer_bigquery_error_bodies(self):
        for kind, (status, reason, domain, state) in ERRORS.items():
            with self.subTest(kind=kind):
                self.add(fault=kind)
                response = self.emu.query("SELECT 1")
                self.assertEqual(response.status_code, status)
                self.assertTrue(response.headers["content-type"].startswith("application/json"))
                error = response.json()["error"]
                self.assertEqual(error["code"], status)
                self.assertEqual(error["status"], state)
                self.assertTrue(error["message"])
                self.assertEqual(len(error["errors"]), 1)
                self.assertEqual(error["errors"][0]["reason"], reason)
                self.assertEqual(error["errors"][0]["domain"], domain)
                self.assertEqual(error["errors"][0]["message"], error["message"])
                # gcp-bigquery-client reads errors[] as string maps
                self.assertTrue(all(isinstance(v, str) for v in error["errors"][0].values()))
                self.assert_passes(self.emu.query("SELECT 1"))  # count 1: spent

    def test_reset_is_a_connection_error(self):
        self.add(fault="reset", path="/datasets$")
        with self.assertRaises(requests.exceptions.ConnectionError):
            self.datasets()
        self.assert_passes(self.datasets())

    def test_slow_answers_the_real_answer_after_the_delay(self):
        self.add(fault="slow", delay_ms=400, sql="SELECT 42")
        started = time.monotonic()
        response = self.emu.query("SELECT 42 AS answer")
        elapsed = time.monotonic() - started
        self.assert_passes(response)
        self.assertEqual(response.json()["rows"], [{"f": [{"v": "42"}]}])
        self.assertGreaterEqual(elapsed, 0.4)
        started = time.monotonic()
        self.assert_passes(self.emu.query("SELECT 42 AS answer"))
        self.assertLess(time.monotonic() - started, 0.4)

    def test_empty_page_on_jobs_query_then_the_real_answer_on_the_poll(self):
        self.add(fault="empty_page", path="/queries$")
        first = self.emu.query("SELECT x FROM UNNEST([1, 2, 3]) AS x ORDER BY x")
        self.assertEqual(first.status_code, 200, first.text)
        body = first.json()
        self.assertIs(body["jobComplete"], False)
        for absent in ("rows", "schema", "totalRows", "pageToken"):
            self.assertNotIn(absent, body)
        job_id = body["jobReference"]["jobId"]
        poll = self.emu.api("GET", f"/queries/{job_id}")
        self.assert_passes(poll)
        self.assertIs(poll.json()["jobComplete"], True)
        self.assertEqual([r["f"][0]["v"] for r in poll.json()["rows"]], ["1", "2", "3"])

    def test_empty_page_on_get_query_results_then_the_real_answer(self):
        job_id = self.emu.run("SELECT 'x' AS v")["jobReference"]["jobId"]
        self.add(fault="empty_page", method="GET", count=2)
        for _ in range(2):
            page = self.emu.api("GET", f"/queries/{job_id}")
            self.assertEqual(page.status_code, 200)
            self.assertEqual(
                page.json(),
                {"kind": "bigquery#getQueryResultsResponse", "jobComplete": False,
                 "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"}},
            )  # fmt: skip
        page = self.emu.api("GET", f"/queries/{job_id}")
        self.assertEqual(page.json()["rows"], [{"f": [{"v": "x"}]}])
        # Other endpoints are no job pages: an empty_page rule does not apply to them.
        self.add(fault="empty_page", method="GET")
        self.assert_passes(self.datasets())
        self.assertEqual(self.rules()["faults"][0]["hits"], 0)

    def test_truncated_answers_a_finished_query_without_rows(self):
        self.add(fault="truncated", sql="UNNEST")
        first = self.emu.query("SELECT x FROM UNNEST([1, 2, 3]) AS x ORDER BY x")
        self.assert_passes(first)
        body = first.json()
        self.assertIs(body["jobComplete"], True)
        self.assertEqual((body["rows"], body["totalRows"]), ([], "0"))
        self.assertNotIn("pageToken", body)
        self.assertIn("schema", body)
        # Spent: the same query then answers in full.
        again = self.emu.query("SELECT x FROM UNNEST([1, 2, 3]) AS x ORDER BY x")
        self.assertEqual([r["f"][0]["v"] for r in again.json()["rows"]], ["1", "2", "3"])
        # On getQueryResults too: an unfinished first answer (empty_page), then the poll's
        # finished one loses its rows.
        self.add(fault="empty_page", sql="GENERATE_ARRAY")
        self.add(fault="truncated", sql="GENERATE_ARRAY")
        first = self.emu.query("SELECT x FROM UNNEST(GENERATE_ARRAY(1, 4)) AS x")
        self.assertIs(first.json()["jobComplete"], False)
        poll = self.emu.api("GET", f"/queries/{first.json()['jobReference']['jobId']}")
        self.assert_passes(poll)
        self.assertEqual((poll.json()["rows"], poll.json()["totalRows"]), ([], "0"))
        # jobs.insert is no query page: a truncated rule does not apply to it.
        self.add(fault="truncated", method="POST", path="/jobs$")
        query = {"query": "SELECT 5", "useLegacySql": False}
        self.assert_passes(self.emu.api("POST", "/jobs", {"configuration": {"query": query}}))
        self.assertEqual(self.rules()["faults"][0]["hits"], 0)

    def test_empty_page_on_jobs_insert_is_a_running_job(self):
        self.add(fault="empty_page", method="POST", path="/jobs$")
        query = {"query": "SELECT 5", "useLegacySql": False}
        response = self.emu.api("POST", "/jobs", {"configuration": {"query": query}})
        self.assertEqual(response.status_code, 200, response.text)
        job = response.json()
        self.assertEqual(job["status"], {"state": "RUNNING"})
        self.assertNotIn("endTime", job["statistics"])
        polled = self.emu.api("GET", f"/jobs/{job['jobReference']['jobId']}").json()
        self.assertEqual(polled["status"]["state"], "DONE")

    # -- counting and matching ------------------------------------------------------------

    def test_count_applies_exactly_n_times(self):
        rule = self.add(fault="backendError", path="/datasets$", count=3)
        self.assertEqual((rule["count"], rule["remaining"], rule["hits"]), (3, 3, 0))
        statuses = [self.datasets().status_code for _ in range(5)]
        self.assertEqual(statuses, [500, 500, 500, 200, 200])
        listing = self.rules()
        self.assertEqual(listing["faults"], [])
        self.assertEqual(
            [(r["id"], r["remaining"], r["hits"]) for r in listing["spent"]], [(rule["id"], 0, 3)]
        )

    def test_counts_hold_under_concurrent_requests(self):
        self.add(fault="unavailable", path="/datasets$", count=7)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: self.datasets().status_code, range(30)))
        self.assertEqual(statuses.count(503), 7)
        self.assertEqual(statuses.count(200), 23)

    def test_method_path_and_sql_must_all_match(self):
        self.add(fault="rateLimitExceeded", method="post", path="/queries$", sql=r"FROM\s+`?secret")
        self.assert_passes(self.emu.query("SELECT 1"))  # sql differs
        self.assert_passes(self.datasets())  # method and path differ
        self.assertEqual(self.rules()["faults"][0]["hits"], 0)
        response = self.emu.query("SELECT * FROM secret.t")
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.rules()["faults"], [])

        self.add(fault="quotaExceeded", method="GET", path="/datasets")
        self.assert_passes(self.emu.query("SELECT 1"))  # POST
        self.assertEqual(self.datasets().status_code, 403)

    def test_sql_matches_jobs_insert_and_the_job_polled(self):
        self.add(fault="backendError", sql="SELECT 7")
        response = self.emu.api(
            "POST",
            "/jobs",
            {"configuration": {"query": {"query": "SELECT 7", "useLegacySql": False}}},
        )
        self.assertEqual(response.status_code, 500)
        job_id = self.emu.run("SELECT 7 AS seven")["jobReference"]["jobId"]
        self.add(fault="backendError", method="GET", sql="SELECT 7")
        self.assertEqual(self.emu.api("GET", f"/queries/{job_id}").status_code, 500)
        self.assertEqual(self.emu.api("GET", f"/queries/{job_id}").status_code, 200)

    def test_rules_apply_first_added_first(self):
        first = self.add(fault="backendError", path="/datasets$")
        self.add(fault="unavailable", path="/datasets$")
        self.assertEqual(self.datasets().status_code, 500)
        self.assertEqual(self.datasets().status_code, 503)
        self.assertEqual(self.rules()["spent"][0]["id"], first["id"])

    # -- control --------------------------------------------------------------------------

    def test_control_endpoints_and_health_never_match(self):
        self.add(fault="backendError")  # matches any request...
        self.assertEqual(requests.get(self.emu.url + "/healthz", timeout=10).status_code, 200)
        self.assertEqual(requests.get(self.control, timeout=10).status_code, 200)
        other = requests.post(self.emu.url + "/_emulator/other", timeout=10)
        self.assertEqual(other.status_code, 404)
        self.assertEqual(self.rules()["faults"][0]["hits"], 0)  # ... but none of those

    def test_list_and_clear(self):
        self.add(fault="slow", delay_ms=5, count=2, path="^/nowhere")
        self.add(fault="reset", path="^/nowhere")
        listing = self.rules()
        self.assertEqual(
            [
                (r["fault"], r["count"], r["remaining"], r["hits"], r["path"])
                for r in listing["faults"]
            ],
            [("slow", 2, 2, 0, "^/nowhere"), ("reset", 1, 1, 0, "^/nowhere")],
        )
        cleared = requests.delete(self.control, timeout=10)
        self.assertEqual(cleared.json(), {"cleared": 2})
        self.assertEqual(self.rules(), {"faults": [], "spent": []})

    def test_bad_rules_are_refused(self):
        for rule in (
            {"fault": "meteorStrike"},
            {"fault": "slow"},
            {"fault": "reset", "delay_ms": 5},
            {"fault": "reset", "path": "("},
            {"fault": "reset", "count": 0},
            {"fault": "reset", "colour": "red"},
        ):
            with self.subTest(rule=rule):
                response = requests.post(self.control, json=rule, timeout=10)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.json()["error"]["errors"][0]["reason"], "invalid")
        self.assertEqual(self.rules()["faults"], [])

    def test_unmatched_requests_pass_through_unchanged(self):
        sql = "SELECT x FROM UNNEST([3, 1]) AS x ORDER BY x"
        plain = self.emu.query(sql).json()
        self.add(fault="backendError", path="^/nowhere", sql="nothing like this")
        matched_nothing = self.emu.query(sql).json()
        for volatile in ("jobReference",):
            plain.pop(volatile)
            matched_nothing.pop(volatile)
        self.assertEqual(matched_nothing, plain)


if __name__ == "__main__":
    unittest.main()
