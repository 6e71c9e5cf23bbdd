"""A small REST client for test_history.py, over the private emulator of faults_emulator.py."""

import json

import requests

from emulator.faults_emulator import PROJECT, Emulator  # noqa: F401 (re-exported)


class QueryError(Exception):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    def __init__(self, base):
        self.base = base
        self.http = requests.Session()

    def url(self, path):
        return f"{self.base}/bigquery/v2/projects/{PROJECT}{path}"

    def query(self, sql):
        """Rows of a query (jobs.query) as tuples of strings; QueryError on an error."""
        r = self.http.post(self.url("/queries"), json={"query": sql, "useLegacySql": False})
        body = r.json()
        errors = body.get("errors") or ([body["error"]] if "error" in body else [])
        if r.status_code != 200 or errors:
            raise QueryError(r.status_code, " ".join(e.get("message", "") for e in errors) or json.dumps(body))
        return [tuple(c.get("v") for c in row["f"]) for row in body.get("rows", [])]

    def dataset(self, name):
        r = self.http.post(self.url("/datasets"), json={"datasetReference": {"projectId": PROJECT, "datasetId": name}})
        assert r.status_code in (200, 409), r.text

    def table(self, dataset, table, fields, **extra):
        body = {"tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": table},
                "schema": {"fields": [{"name": n, "type": t} for n, t in fields]}, **extra}
        r = self.http.post(self.url(f"/datasets/{dataset}/tables"), json=body)
        assert r.status_code == 200, r.text

    def insert_all(self, dataset, table, rows):
        r = self.http.post(self.url(f"/datasets/{dataset}/tables/{table}/insertAll"),
                           json={"rows": [{"json": row} for row in rows]})
        assert r.status_code == 200 and not r.json().get("insertErrors"), r.text

    def get(self, dataset, table):
        r = self.http.get(self.url(f"/datasets/{dataset}/tables/{table}"))
        assert r.status_code == 200, r.text
        return r.json()

    def delete(self, dataset, table):
        return self.http.delete(self.url(f"/datasets/{dataset}/tables/{table}"))

    def job(self, configuration):
        r = self.http.post(self.url("/jobs"), json={"configuration": configuration})
        assert r.status_code == 200, r.text
        return r.json()

    def control(self, name, body=None):
        r = self.http.post(f"{self.base}/_emulator/{name}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def partitions(self, dataset, table):
        """{partition_id: (total_rows, last_modified µs)} as partition-sync reads them."""
        rows = self.query(
            "SELECT partition_id, total_rows, UNIX_MICROS(last_modified_time) "
            f"FROM `{PROJECT}.{dataset}.INFORMATION_SCHEMA.PARTITIONS` WHERE table_name = '{table}'"
        )
        return {pid: (int(n), int(t)) for pid, n, t in rows}

    def modified(self, dataset, table):
        """(lastModifiedTime ms, numRows) of tables.get, as stream-sync reads them."""
        body = self.get(dataset, table)
        return int(body["lastModifiedTime"]), int(body["numRows"])

    def now_micros(self):
        return int(self.query("SELECT UNIX_MICROS(CURRENT_TIMESTAMP())")[0][0])
