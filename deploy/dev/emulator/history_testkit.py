"""A patched emulator for tests (test_history*.py): started by deploy/dev/bqemu.py on free ports
with a temporary --persistent data dir, stopped by its PID; and a small REST client."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

PROJECT = "local-project"
BQEMU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bqemu.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """One emulator process; restart() keeps its data dir (and port)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bqemu-history-")
        self.port, self.grpc_port = free_port(), free_port()
        self.process = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self):
        env = dict(os.environ, BQEMU_ENABLE_FORMAT_EXTENSIONS="false",
                   BQEMU_GCS_LOCAL_ROOT=os.path.join(self.dir, "gcs"))
        os.makedirs(env["BQEMU_GCS_LOCAL_ROOT"], exist_ok=True)
        self.log = open(os.path.join(self.dir, "emulator.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, BQEMU, "start", "--rest-host", "127.0.0.1", "--rest-port", str(self.port),
             "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--project", PROJECT,
             "--persistent", "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited: see {self.dir}/emulator.log")
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("emulator did not become healthy")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.log.close()

    def restart(self):
        self.stop()
        return self.start()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


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
