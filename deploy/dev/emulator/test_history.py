"""Checks deploy/dev/emulator/history.py against BigQuery's documented behaviour, through the REST
API of one patched emulator (deploy/dev/bqemu.py) started for this module:
last_modified_time per table and per partition, partition ids, the streaming buffer, time
travel and change history. docs/emulator.md#history lists the behaviours and their pages.
Run by `make test` (python -m unittest discover -s deploy/dev/emulator).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulator.history_testkit import Client, Emulator, QueryError  # noqa: E402

DAY = [("id", "INT64"), ("day", "DATE"), ("v", "STRING")]
DAY_PARTITIONED = {"timePartitioning": {"type": "DAY", "field": "day"}}
TEN_MINUTES_AGO = "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 601 SECOND)"


class History(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emulator = Emulator().start()
        cls.bq = Client(cls.emulator.url)
        cls.bq.dataset("h")
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.emulator.stop()

    def new_table(self, fields=DAY, **extra):
        """A fresh table name (tables are never shared between tests)."""
        type(self).n += 1
        name = f"{self._testMethodName[5:25]}_{self.n}"
        self.bq.table("h", name, fields, **extra)
        return name

    def day_table(self, rows):
        t = self.new_table(**DAY_PARTITIONED)
        self.bq.query(f"INSERT INTO h.{t} (id, day, v) VALUES {rows}")
        return t

    # -- last_modified_time per table and partition ---------------------------------------------

    def test_update_in_place_advances_only_its_partition(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b')")
        before, (table_before, rows) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.bq.query(f"UPDATE h.{t} SET v = 'a2' WHERE id = 1")
        after, (table_after, rows_after) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(after["20260101"][0], 1)  # same row count ...
        self.assertGreater(after["20260101"][1], before["20260101"][1])  # ... still modified
        self.assertEqual(after["20260102"], before["20260102"])
        self.assertGreater(table_after, table_before)
        self.assertEqual((rows, rows_after), (2, 2))

    def test_delete_and_insert_of_equal_count_advances_the_partition(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b')")
        before = self.bq.partitions("h", t)
        self.bq.query(f"DELETE FROM h.{t} WHERE id = 1")
        self.bq.query(f"INSERT INTO h.{t} (id, day, v) VALUES (3, '2026-01-01', 'c')")
        after = self.bq.partitions("h", t)
        self.assertEqual(after["20260101"][0], 1)
        self.assertGreater(after["20260101"][1], before["20260101"][1])
        self.assertEqual(after["20260102"], before["20260102"])

    def test_merge_advances_the_partitions_it_changes(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b')")
        before = self.bq.partitions("h", t)
        self.bq.query(
            f"MERGE h.{t} T USING (SELECT 2 AS id, 'b2' AS v) S ON T.id = S.id "
            "WHEN MATCHED THEN UPDATE SET v = S.v"
        )
        after = self.bq.partitions("h", t)
        self.assertEqual(after["20260101"], before["20260101"])
        self.assertGreater(after["20260102"][1], before["20260102"][1])

    def test_a_statement_that_changes_nothing_advances_nothing(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        before, table_before = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.bq.query(f"DELETE FROM h.{t} WHERE id = 99")
        self.assertEqual((self.bq.partitions("h", t), self.bq.modified("h", t)), (before, table_before))

    def test_insert_all_advances_table_and_partition(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        before, (table_before, _) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.bq.insert_all("h", t, [{"id": 2, "day": "2026-01-02", "v": "b"}])
        after, (table_after, rows) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(after["20260101"], before["20260101"])
        self.assertEqual(after["20260102"][0], 1)
        self.assertGreater(table_after, table_before)
        self.assertEqual(rows, 2)

    def test_load_job_advances_the_loaded_partition(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        before, (table_before, _) = self.bq.partitions("h", t), self.bq.modified("h", t)
        bucket = os.path.join(self.emulator.dir, "gcs", "b")
        os.makedirs(bucket, exist_ok=True)
        with open(os.path.join(bucket, f"{t}.json"), "w") as f:
            f.write('{"id": 2, "day": "2026-01-02", "v": "b"}\n{"id": 3, "day": "2026-01-02", "v": "c"}\n')
        job = self.bq.job({"load": {
            "sourceUris": [f"gs://b/{t}.json"], "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "destinationTable": {"projectId": "local-project", "datasetId": "h", "tableId": t},
            "writeDisposition": "WRITE_APPEND",
        }})
        self.assertNotIn("errorResult", job.get("status", {}), job)
        after, (table_after, rows) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(after["20260101"], before["20260101"])
        self.assertEqual(after["20260102"][0], 2)
        self.assertGreater(table_after, table_before)
        self.assertEqual(rows, 3)

    def test_query_job_with_a_destination_table_writes_it(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        before, (table_before, _) = self.bq.partitions("h", t), self.bq.modified("h", t)
        destination = {"projectId": "local-project", "datasetId": "h", "tableId": t}
        job = self.bq.job({"query": {
            "query": "SELECT 2 AS id, DATE '2026-01-02' AS day, 'b' AS v", "useLegacySql": False,
            "destinationTable": destination, "writeDisposition": "WRITE_APPEND",
        }})
        self.assertNotIn("errorResult", job.get("status", {}), job)
        after, (table_after, rows) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(after["20260101"], before["20260101"])
        self.assertEqual(after["20260102"][0], 1)
        self.assertGreater(table_after, table_before)
        self.assertEqual(rows, 2)
        self.bq.job({"query": {
            "query": "SELECT 3 AS id, DATE '2026-01-03' AS day, 'c' AS v", "useLegacySql": False,
            "destinationTable": destination, "writeDisposition": "WRITE_TRUNCATE",
        }})
        self.assertEqual(self.bq.query(f"SELECT id FROM h.{t}"), [("3",)])
        self.assertEqual(set(self.bq.partitions("h", t)), {"20260103"})
        job = self.bq.job({"query": {  # writeDisposition WRITE_EMPTY by default
            "query": "SELECT 4 AS id", "useLegacySql": False, "destinationTable": destination,
        }})
        self.assertEqual(job["status"]["errorResult"]["reason"], "duplicate")
        self.assertEqual(self.bq.query(f"SELECT id FROM h.{t}"), [("3",)])

    def test_truncate_advances_the_table_and_empties_its_partitions(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        table_before, _ = self.bq.modified("h", t)
        self.bq.query(f"TRUNCATE TABLE h.{t}")
        table_after, rows = self.bq.modified("h", t)
        self.assertGreater(table_after, table_before)
        self.assertEqual((rows, self.bq.partitions("h", t)), (0, {}))

    def test_deleting_a_partition_through_its_decorator(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b'), (3, '2026-01-02', 'c')")
        before, (table_before, _) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(self.bq.delete("h", f"{t}$20260102").status_code, 204)
        after, (table_after, rows) = self.bq.partitions("h", t), self.bq.modified("h", t)
        self.assertEqual(after, {"20260101": before["20260101"]})
        self.assertEqual(rows, 1)
        self.assertGreater(table_after, table_before)
        # A whole partition deleted by DML is gone too.
        self.bq.query(f"DELETE FROM h.{t} WHERE day = '2026-01-01'")
        self.assertEqual(self.bq.partitions("h", t), {})

    def test_partition_times_survive_a_restart(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b')")
        self.bq.query(f"UPDATE h.{t} SET v = 'b2' WHERE id = 2")
        before, table_before = self.bq.partitions("h", t), self.bq.modified("h", t)
        at = self.bq.now_micros()
        self.bq.query(f"DELETE FROM h.{t} WHERE id = 1")
        self.emulator.restart()
        after = self.bq.partitions("h", t)
        self.assertEqual(after["20260102"], before["20260102"])
        self.assertNotIn("20260101", after)
        self.assertGreater(self.bq.modified("h", t)[0], table_before[0])
        old = self.bq.query(f"SELECT id FROM h.{t} FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({at}) ORDER BY id")
        self.assertEqual(old, [("1",), ("2",)])

    # -- partition ids -----------------------------------------------------------------------

    def test_partition_ids_as_bigquery_assigns_them(self):
        t = self.day_table(
            "(1, '2026-01-01', 'a'), (2, '1959-12-31', 'b'), (3, '2160-01-01', 'c'), "
            "(4, NULL, 'd'), (5, '1960-01-01', 'e'), (6, '2159-12-31', 'f')"
        )
        counts = {pid: n for pid, (n, _) in self.bq.partitions("h", t).items()}
        self.assertEqual(
            counts,
            {"20260101": 1, "__UNPARTITIONED__": 2, "__NULL__": 1, "19600101": 1, "21591231": 1},
        )

    def test_timestamp_hour_partitions(self):
        t = self.new_table([("id", "INT64"), ("ts", "TIMESTAMP")],
                           timePartitioning={"type": "HOUR", "field": "ts"})
        self.bq.query(
            f"INSERT INTO h.{t} VALUES (1, TIMESTAMP '2026-01-01 10:30:00 UTC'), "
            "(2, TIMESTAMP '1950-01-01 00:00:00 UTC')"
        )
        self.assertEqual(set(self.bq.partitions("h", t)), {"2026010110", "__UNPARTITIONED__"})

    def test_streaming_buffer_of_an_ingestion_time_table(self):
        t = self.new_table([("id", "INT64"), ("v", "STRING")], timePartitioning={"type": "DAY"})
        self.bq.insert_all("h", t, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
        self.assertEqual({p: n for p, (n, _) in self.bq.partitions("h", t).items()}, {"__UNPARTITIONED__": 2})
        self.assertEqual(
            self.bq.query(f"SELECT id, _PARTITIONTIME, _PARTITIONDATE FROM h.{t} ORDER BY id"),
            [("1", None, None), ("2", None, None)],
        )
        buffer = self.bq.get("h", t)["streamingBuffer"]
        self.assertEqual(buffer["estimatedRows"], "2")
        self.assertIn("oldestEntryTime", buffer)
        # A DML insert (like a load) goes to the current partition directly.
        self.bq.query(f"INSERT INTO h.{t} (id, v) VALUES (3, 'c')")
        today = self.bq.query("SELECT FORMAT_DATE('%Y%m%d', CURRENT_DATE())")[0][0]
        self.assertEqual(self.bq.partitions("h", t)[today][0], 1)
        unpartitioned_before = self.bq.partitions("h", t)["__UNPARTITIONED__"]

        flushed = self.bq.control("flush", {"dataset": "h", "table": t})
        self.assertEqual(flushed["flushed"], {f"local-project.h.{t}": 2})
        after = self.bq.partitions("h", t)
        self.assertEqual(set(after), {today})
        self.assertEqual(after[today][0], 3)
        self.assertGreater(after[today][1], unpartitioned_before[1])
        self.assertNotIn("streamingBuffer", self.bq.get("h", t))
        self.assertEqual(
            self.bq.query(f"SELECT count(*) FROM h.{t} WHERE _PARTITIONDATE = CURRENT_DATE()"), [("3",)]
        )
        self.assertEqual(self.bq.control("flush")["flushed"], {})

    # -- time travel -------------------------------------------------------------------------

    def test_time_travel_reads_the_table_as_it_was(self):
        t = self.day_table("(1, '2026-01-01', 'a'), (2, '2026-01-02', 'b')")
        at = self.bq.now_micros()
        self.bq.query(f"UPDATE h.{t} SET v = 'a2' WHERE id = 1")
        self.bq.query(f"DELETE FROM h.{t} WHERE id = 2")
        self.bq.query(f"INSERT INTO h.{t} (id, day, v) VALUES (3, '2026-01-03', 'c')")
        old = f"h.{t} FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({at})"
        self.assertEqual(self.bq.query(f"SELECT id, v FROM {old} ORDER BY id"), [("1", "a"), ("2", "b")])
        self.assertEqual(self.bq.query(f"SELECT id, v FROM h.{t} ORDER BY id"), [("1", "a2"), ("3", "c")])
        # Inside joins, subqueries and aggregates, with an alias.
        self.assertEqual(
            self.bq.query(
                f"SELECT o.id, n.v FROM h.{t} AS o FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({at}) "
                f"JOIN h.{t} n ON o.id = n.id ORDER BY o.id"
            ),
            [("1", "a2")],
        )
        self.assertEqual(
            self.bq.query(f"SELECT COUNT(*), MAX(v) FROM (SELECT v FROM {old} WHERE id > 0)"), [("2", "b")]
        )
        literal = self.bq.query(f"SELECT FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S UTC', TIMESTAMP_MICROS({at}))")[0][0]
        self.assertEqual(
            self.bq.query(f"SELECT COUNT(*) FROM h.{t} FOR SYSTEM_TIME AS OF TIMESTAMP '{literal}'"), [("2",)]
        )
        now = self.bq.now_micros()
        self.assertEqual(
            self.bq.query(f"SELECT id FROM h.{t} FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({now}) ORDER BY id"),
            [("1",), ("3",)],
        )

    def test_time_travel_outside_the_window_or_before_creation_fails(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        for expr in ("TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 8 DAY)",
                     "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)"):
            with self.subTest(expr=expr), self.assertRaises(QueryError) as caught:
                self.bq.query(f"SELECT * FROM h.{t} FOR SYSTEM_TIME AS OF {expr}")
            self.assertRegex(
                caught.exception.message,
                rf"^Invalid snapshot time \d+ for table local-project:h\.{t}@\d+\. Cannot read before \d+$",
            )
        with self.assertRaises(QueryError):
            self.bq.query(f"SELECT * FROM h.{t} FOR SYSTEM_TIME AS OF TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)")

    def test_time_travel_within_the_window_of_an_older_table(self):
        t = self.day_table("(1, '2026-01-01', 'a')")
        self.bq.control("age", {"dataset": "h", "table": t, "seconds": 3 * 86400})
        self.bq.query(f"DELETE FROM h.{t} WHERE TRUE")
        two_days_ago = "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 2 DAY)"
        self.assertEqual(self.bq.query(f"SELECT id FROM h.{t} FOR SYSTEM_TIME AS OF {two_days_ago}"), [("1",)])
        self.assertEqual(self.bq.query(f"SELECT id FROM h.{t}"), [])

    # -- change history ----------------------------------------------------------------------

    def changes(self, t, start="NULL", end=TEN_MINUTES_AGO):
        return self.bq.query(
            f"SELECT id, v, _CHANGE_TYPE FROM CHANGES(TABLE h.{t}, {start}, {end}) "
            "ORDER BY _CHANGE_TIMESTAMP, _CHANGE_TYPE, id"
        )

    def test_changes_and_appends_after_insert_update_delete(self):
        t = f"changes_{self.n}"
        type(self).n += 1
        self.bq.query(f"CREATE TABLE h.{t} (id INT64, v STRING) OPTIONS (enable_change_history = TRUE)")
        self.bq.query(f"INSERT INTO h.{t} VALUES (1, 'a'), (2, 'b')")
        self.bq.query(f"UPDATE h.{t} SET v = 'B' WHERE id = 2")
        self.bq.query(f"DELETE FROM h.{t} WHERE id = 1")
        self.assertEqual(self.changes(t), [])  # all of it less than ten minutes ago
        self.bq.control("age", {"dataset": "h", "table": t, "seconds": 900})
        self.assertEqual(
            self.changes(t),
            [("1", "a", "INSERT"), ("2", "b", "INSERT"),
             ("2", "b", "DELETE"), ("2", "B", "UPDATE"),
             ("1", "a", "DELETE")],
        )
        stamps = self.bq.query(
            f"SELECT COUNT(DISTINCT _CHANGE_TIMESTAMP) FROM CHANGES(TABLE h.{t}, NULL, {TEN_MINUTES_AGO})"
        )
        self.assertEqual(stamps, [("3",)])  # the update's two rows share one timestamp
        self.assertEqual(
            self.bq.query(f"SELECT id, v, _CHANGE_TYPE FROM APPENDS(TABLE h.{t}, NULL, NULL) ORDER BY id"),
            [("1", "a", "INSERT"), ("2", "b", "INSERT")],
        )

    def test_appends_does_not_need_the_option(self):
        t = self.new_table([("id", "INT64"), ("v", "STRING")])
        self.bq.insert_all("h", t, [{"id": 1, "v": "a"}])
        self.bq.query(f"UPDATE h.{t} SET v = 'b' WHERE TRUE")
        rows = self.bq.query(f"SELECT id, v, _CHANGE_TYPE FROM APPENDS(TABLE h.{t}, NULL, NULL)")
        self.assertEqual(rows, [("1", "a", "INSERT")])
        self.assertEqual(
            self.bq.query(f"SELECT COUNT(*) FROM APPENDS(TABLE h.{t}, CURRENT_TIMESTAMP(), NULL)"), [("0",)]
        )

    def test_changes_limits(self):
        t = self.new_table([("id", "INT64"), ("v", "STRING")])
        with self.assertRaisesRegex(QueryError, "enable_change_history"):
            self.changes(t)
        self.bq.query(f"ALTER TABLE h.{t} SET OPTIONS (enable_change_history = TRUE)")
        self.bq.query(f"INSERT INTO h.{t} VALUES (1, 'a')")
        self.bq.control("age", {"dataset": "h", "table": t, "seconds": 2 * 86400})
        self.assertEqual(self.changes(t, "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 49 HOUR)",
                                      "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 47 HOUR)"),
                         [("1", "a", "INSERT")])
        with self.assertRaisesRegex(QueryError, "1 day"):
            self.changes(t, "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 3 DAY)")
        with self.assertRaisesRegex(QueryError, "10 minutes"):
            self.changes(t, "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)", "CURRENT_TIMESTAMP()")
        with self.assertRaisesRegex(QueryError, "Cannot read before"):
            self.changes(t, "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 8 DAY)",
                         "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)")
        self.bq.query(f"ALTER TABLE h.{t} SET OPTIONS (enable_change_history = FALSE)")
        with self.assertRaisesRegex(QueryError, "enable_change_history"):
            self.changes(t)


if __name__ == "__main__":
    unittest.main()
