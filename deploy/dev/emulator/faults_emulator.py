"""A private emulator for a test module: deploy/dev/bqemu.py (every patch installed) on free
ports with a temporary data dir, started as `make services` starts the shared one, stopped by
its PID; restart() keeps its ports and data. Used by test_faults.py, test_dryrun.py and
test_history.py (setUpClass / tearDownClass).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

BQEMU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bqemu.py")
PROJECT = "local-project"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bqemu-test-")
        self.process = None
        self.url = None
        self.ports = None
        self.log_path = os.path.join(self.dir, "emulator.log")

    def start(self, timeout=30.0):
        for _ in range(3):  # a free port can be taken between probing and binding
            self.ports = (_free_port(), _free_port())
            if self._spawn(timeout):
                return self
        raise RuntimeError("the emulator did not start:\n" + self._log_tail())

    def restart(self, timeout=30.0):
        """Stops the emulator and starts it again on the same ports and data dir."""
        self._kill()
        if self._spawn(timeout):
            return self
        raise RuntimeError("the emulator did not restart:\n" + self._log_tail())

    def _spawn(self, timeout):
        """Starts bqemu.py on self.ports; True once healthy, else stopped again and False."""
        rest, grpc = self.ports
        data = os.path.join(self.dir, "data")
        gcs = os.path.join(self.dir, "gcs")
        os.makedirs(data, exist_ok=True)
        os.makedirs(gcs, exist_ok=True)
        env = dict(os.environ, BQEMU_ENABLE_FORMAT_EXTENSIONS="false", BQEMU_GCS_LOCAL_ROOT=gcs)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, BQEMU, "start", "--rest-host", "127.0.0.1",
                 "--rest-port", str(rest), "--grpc-host", "127.0.0.1",
                 "--grpc-port", str(grpc), "--project", PROJECT, "--persistent",
                 "--data-dir", data],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{rest}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self._kill()
        return False

    def _log_tail(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()[-3000:]

    def _kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stop(self):
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- REST helpers --------------------------------------------------------------------

    def api(self, method, path, body=None, **kwargs):
        """A BigQuery REST call, `path` relative to /bigquery/v2/projects/<project>."""
        url = f"{self.url}/bigquery/v2/projects/{PROJECT}{path}"
        return requests.request(method, url, json=body, timeout=30, **kwargs)

    def query(self, sql, **fields):
        return self.api("POST", "/queries", {"query": sql, "useLegacySql": False, **fields})

    def run(self, sql):
        """Runs `sql` for real; fails on any error."""
        response = self.query(sql)
        response.raise_for_status()
        document = response.json()
        if document.get("errors"):
            raise AssertionError(f"{sql}: {document['errors']}")
        return document
