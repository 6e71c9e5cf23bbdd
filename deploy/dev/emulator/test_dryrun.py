"""Checks deploy/dev/emulator/dryrun.py against a live emulator (bqemu.py, every patch): dry
runs answer BigQuery's fields with the documented byte estimate, execute and write nothing,
and fail as the real run fails.
Run by `make test` (python -m unittest discover -s deploy/dev/emulator).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulator.faults_emulator import PROJECT, Emulator  # noqa: E402

EVENTS = {
    "tableReference": {"projectId": PROJECT, "datasetId": "ds", "tableId": "events"},
    "schema": {
        "fields": [
            {"name": "id", "type": "INTEGER"},
            {"name": "name", "type": "STRING"},
            {"name": "day", "type": "DATE"},
            {"name": "score", "type": "FLOAT"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "st", "type": "RECORD", "fields": [
                {"name": "a", "type": "INTEGER"}, {"name": "b", "type": "STRING"}]},
        ]
    },
    "timePartitioning": {"type": "DAY", "field": "day"},
}  # fmt: skip
EVENT_ROWS = """
  (1, 'alpha', DATE '2024-01-01', 1.5, ['a', 'bb'], STRUCT(1 AS a, 'x' AS b)),
  (2, 'beta-beta', DATE '2024-01-02', NULL, [], NULL),
  (3, NULL, DATE '2024-01-02', 3.0, ['ccc'], STRUCT(NULL AS a, 'yy' AS b)),
  (4, 'é', DATE '2024-01-03', 4.0, ['d'], STRUCT(4 AS a, 'z' AS b))"""
# Logical bytes per column (BigQuery "Data type sizes": INT64/FLOAT64/DATE 8, STRING 2 + UTF-8
# bytes, STRUCT the sum of its fields, REPEATED the sum of its elements, NULL 0).
SIZE = {
    "id": 4 * 8,
    "name": (2 + 5) + (2 + 9) + 0 + (2 + 2),
    "day": 4 * 8,
    "score": 3 * 8,
    "tags": (3 + 4) + 0 + 5 + 3,
    "st": (8 + 3) + 0 + (0 + 4) + (8 + 3),
}
# Rows per partition: 2024-01-01 -> id 1, 2024-01-02 -> ids 2 and 3, 2024-01-03 -> id 4.

TYPES = {
    "tableReference": {"projectId": PROJECT, "datasetId": "ds", "tableId": "types"},
    "schema": {
        "fields": [
            {"name": "b", "type": "BOOLEAN"},
            {"name": "n", "type": "NUMERIC"},
            {"name": "raw", "type": "BYTES"},
            {"name": "ts", "type": "TIMESTAMP"},
            {"name": "ints", "type": "INTEGER", "mode": "REPEATED"},
        ]
    },
}
TYPES_SIZE = 1 + 16 + (2 + 3) + 8 + 3 * 8  # the second row is all NULL / empty


class DryRun(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()
        try:
            cls.emu.api("POST", "/datasets", {"datasetReference": {"datasetId": "ds"}})
            for table in (EVENTS, TYPES):
                cls.emu.api("POST", "/datasets/ds/tables", table).raise_for_status()
            columns = "id, name, day, score, tags, st"
            cls.emu.run(f"INSERT INTO ds.events ({columns}) VALUES {EVENT_ROWS}")
            cls.emu.run(
                "INSERT INTO ds.types (b, n, raw, ts, ints) VALUES "
                "(TRUE, NUMERIC '1.5', b'abc', TIMESTAMP '2024-01-01 00:00:00+00', [1, 2, 3]),"
                " (NULL, NULL, NULL, NULL, [])"
            )
        except BaseException:
            cls.emu.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def dry(self, sql, **fields):
        response = self.emu.query(sql, dryRun=True, **fields)
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()

    def bytes_of(self, sql, **fields):
        return int(self.dry(sql, **fields)["totalBytesProcessed"])

    def dry_job(self, sql, job_id=None):
        """jobs.insert of a dry-run query job; the job resource."""
        body = {"configuration": {"dryRun": True, "query": {"query": sql, "useLegacySql": False}}}
        if job_id:
            body["jobReference"] = {"jobId": job_id}
        response = self.emu.api("POST", "/jobs", body)
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()

    def events_state(self):
        rows = self.emu.run("SELECT id, name FROM ds.events ORDER BY id")["rows"]
        table = self.emu.api("GET", "/datasets/ds/tables/events").json()
        tables = self.emu.api("GET", "/datasets/ds/tables").json().get("tables", [])
        return rows, table["numRows"], sorted(t["tableReference"]["tableId"] for t in tables)

    # -- the estimate ---------------------------------------------------------------------

    def test_one_column_reads_less_than_star(self):
        one = self.bytes_of("SELECT id FROM ds.events")
        star = self.bytes_of("SELECT * FROM ds.events")
        self.assertEqual(one, SIZE["id"])
        self.assertEqual(star, sum(SIZE.values()))
        self.assertLess(one, star)
        # Every referenced column counts, wherever it is referenced; COUNT(*) reads none.
        self.assertEqual(
            self.bytes_of("SELECT name FROM ds.events WHERE score > 1"),
            SIZE["name"] + SIZE["score"],
        )
        self.assertEqual(self.bytes_of("SELECT COUNT(*) FROM ds.events"), 0)
        # A CTE column nobody uses is not read.
        self.assertEqual(
            self.bytes_of("WITH e AS (SELECT * FROM ds.events) SELECT tags FROM e"), SIZE["tags"]
        )

    def test_sizes_are_the_documented_type_sizes(self):
        self.assertEqual(self.bytes_of("SELECT * FROM ds.types"), TYPES_SIZE)
        self.assertEqual(self.bytes_of("SELECT raw FROM ds.types"), 2 + 3)
        self.assertEqual(self.bytes_of("SELECT ints FROM ds.types"), 24)

    def test_a_partition_filter_reduces_the_bytes(self):
        row = 8 + 8  # id and day
        whole = self.bytes_of("SELECT id FROM ds.events WHERE id > 0 OR day IS NULL")
        self.assertEqual(whole, 4 * row)
        for where, rows in (
            ("day = DATE '2024-01-01'", 1),
            ("day BETWEEN '2024-01-02' AND '2024-01-09'", 3),
            ("day IN ('2024-01-03') AND id > 0", 1),
            ("_PARTITIONDATE IS NOT NULL AND day > '2024-01-01'", 3),
        ):
            with self.subTest(where=where):
                sql = f"SELECT id FROM ds.events WHERE {where}"
                self.assertEqual(self.bytes_of(sql), rows * row)
        param = {
            "parameterMode": "NAMED",
            "queryParameters": [{
                "name": "d",
                "parameterType": {"type": "DATE"},
                "parameterValue": {"value": "2024-01-02"},
            }],
        }  # fmt: skip
        self.assertEqual(self.bytes_of("SELECT id FROM ds.events WHERE day = @d", **param), 2 * row)
        first_partition = 8 + (2 + 5) + 8 + 8 + (3 + 4) + (8 + 3)
        self.assertEqual(
            self.bytes_of("SELECT * FROM ds.events WHERE day = '2024-01-01'"), first_partition
        )

    def test_dml_reads_its_columns_and_the_modified_partitions(self):
        self.assertEqual(self.bytes_of("INSERT INTO ds.events (id) VALUES (9)"), 0)
        self.assertEqual(
            self.bytes_of("INSERT INTO ds.events (id, name) SELECT id + 100, name FROM ds.events"),
            SIZE["id"] + SIZE["name"],
        )
        # DELETE: referenced columns + every column of the partitions it modifies.
        first_partition = 8 + (2 + 5) + 8 + 8 + (3 + 4) + (8 + 3)
        self.assertEqual(
            self.bytes_of("DELETE FROM ds.events WHERE day = '2024-01-01'"), 8 + first_partition
        )
        self.assertEqual(self.bytes_of("DELETE FROM ds.events WHERE TRUE"), sum(SIZE.values()))

    def test_information_schema_reads_zero_bytes(self):
        self.assertEqual(
            self.bytes_of("SELECT table_name FROM ds.INFORMATION_SCHEMA.TABLES"), 0
        )

    # -- nothing runs ---------------------------------------------------------------------

    def test_a_dry_run_writes_nothing(self):
        before = self.events_state()
        for sql in (
            "INSERT INTO ds.events (id, day) VALUES (10, DATE '2024-02-01')",
            "UPDATE ds.events SET name = 'changed' WHERE TRUE",
            "DELETE FROM ds.events WHERE TRUE",
            "MERGE ds.events T USING ds.events S ON T.id = S.id WHEN MATCHED THEN DELETE",
            "TRUNCATE TABLE ds.events",
            "INSERT INTO ds.events (id) VALUES (11); SELECT 1",
            "CREATE TABLE ds.created_by_a_dry_run (x INT64)",
            "CREATE TABLE ds.ctas_by_a_dry_run AS SELECT * FROM ds.events",
            "DROP TABLE ds.types",
        ):
            with self.subTest(sql=sql):
                self.dry(sql)
        self.dry_job("DELETE FROM ds.events WHERE TRUE")
        self.assertEqual(self.events_state(), before)

    def test_a_dry_run_select_returns_no_rows_and_keeps_no_result(self):
        self.assertNotIn("rows", self.dry_job("SELECT id FROM ds.events", "dry_select"))
        self.assertEqual(self.emu.api("GET", "/queries/dry_select").status_code, 404)

    # -- errors as in a real run ----------------------------------------------------------

    def test_an_invalid_query_fails_as_the_real_run_does(self):
        for sql, code, reason in (
            ("SELECT nope FROM ds.events", 400, "invalidQuery"),
            ("SELECT id FROM ds.missing", 404, "notFound"),
            ("INSERT INTO ds.events (nope) VALUES (1)", 400, "invalidQuery"),
            ("INSERT INTO ds.missing (id) VALUES (1)", 404, "notFound"),
            ("UPDATE ds.events SET name = 'x' WHERE nope = 1", 400, "invalidQuery"),
        ):
            with self.subTest(sql=sql):
                real = self.emu.query(sql).json()["errors"][0]  # the run: HTTP 200 + errors
                dry = self.emu.query(sql, dryRun=True)
                self.assertEqual(dry.status_code, code, dry.text)
                error = dry.json()["error"]
                self.assertEqual(error["errors"][0]["reason"], reason)
                self.assertEqual(real["reason"], reason)
                self.assertEqual(error["errors"][0]["message"], real["message"])

    # -- the response fields --------------------------------------------------------------

    def test_jobs_query_answers_the_documented_dry_run_fields(self):
        body = self.dry("SELECT id, name FROM ds.events WHERE day = '2024-01-02'")
        self.assertEqual(body["kind"], "bigquery#queryResponse")
        self.assertIs(body["jobComplete"], True)
        self.assertIs(body["cacheHit"], False)
        self.assertEqual(body["totalBytesProcessed"], str(2 * 8 + (2 + 9) + 2 * 8))
        self.assertEqual(body["statementType"], "SELECT")
        self.assertEqual([f["name"] for f in body["schema"]["fields"]], ["id", "name"])
        self.assertEqual(body["jobReference"], {"projectId": PROJECT, "location": "US"})
        for absent in ("rows", "totalRows", "pageToken", "errors"):
            self.assertNotIn(absent, body)

    def test_jobs_insert_answers_a_done_job_with_statistics(self):
        sql = "SELECT name FROM ds.events"
        job = self.dry_job(sql, "dry_insert")
        self.assertEqual(job["status"], {"state": "DONE"})
        self.assertIs(job["configuration"]["dryRun"], True)
        stats = job["statistics"]
        total = str(SIZE["name"])
        self.assertEqual(stats["totalBytesProcessed"], total)
        self.assertEqual(stats["query"]["totalBytesProcessed"], total)
        self.assertEqual(stats["query"]["totalBytesProcessedAccuracy"], "PRECISE")
        self.assertIs(stats["query"]["cacheHit"], False)
        self.assertEqual(
            stats["query"]["referencedTables"],
            [{"projectId": PROJECT, "datasetId": "ds", "tableId": "events"}],
        )
        self.assertEqual([f["name"] for f in stats["query"]["schema"]["fields"]], ["name"])
        self.assertEqual(self.bytes_of(sql), int(total))
        again = self.emu.api("GET", "/jobs/dry_insert").json()
        self.assertEqual(again["statistics"]["query"]["totalBytesProcessed"], total)

    def test_accuracy_says_when_a_partition_filter_was_not_applied(self):
        def accuracy(sql):
            return self.dry_job(sql)["statistics"]["query"]["totalBytesProcessedAccuracy"]

        self.assertEqual(accuracy("SELECT id FROM ds.events WHERE day = '2024-01-01'"), "PRECISE")
        self.assertEqual(accuracy("SELECT id FROM ds.events"), "PRECISE")
        # Filtered outside the CTE that reads the table: every partition is counted.
        self.assertEqual(
            accuracy(
                "WITH e AS (SELECT * FROM ds.events) SELECT id FROM e WHERE day = '2024-01-01'"
            ),
            "UPPER_BOUND",
        )

    def test_real_runs_are_unchanged(self):
        body = self.emu.run("SELECT id FROM ds.events ORDER BY id")
        self.assertEqual([r["f"][0]["v"] for r in body["rows"]], ["1", "2", "3", "4"])
        self.assertEqual(body["totalBytesProcessed"], "0")


if __name__ == "__main__":
    unittest.main()
