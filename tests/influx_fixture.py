"""A real InfluxDB 1.x (Debian's ``influxd``) on a free loopback port, with its own config and data in a temp dir.

Used by the dashboard tests to run every panel and alert query against the
server Grafana would talk to. Skips the test when ``influxd`` is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  max-body-size = 0
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class InfluxServer:
    """One influxd process; ``write`` line protocol and ``query`` InfluxQL over its HTTP API."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = _free_port()
        config = root / "influxdb.conf"
        config.write_text(_CONFIG.format(root=root, rpc_port=_free_port(), http_port=self.http_port))
        self.log = open(root / "influxd.log", "wb")
        self.process = subprocess.Popen(["influxd", "-config", str(config)], stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.process.returncode}; see {self.root}/influxd.log")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                    if response.status == 204:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s; see {self.root}/influxd.log")

    def query(self, text: str, database: str | None = None, method: str = "POST") -> dict:
        """The JSON answer of ``/query``; raises on HTTP errors and on a statement error."""
        parameters = {"q": text, "epoch": "ms"}
        if database:
            parameters["db"] = database
        body = urllib.parse.urlencode(parameters).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"InfluxDB rejected {text!r}: {error.read().decode(errors='replace')}") from None
        for result in answer.get("results", []):
            if "error" in result:
                raise AssertionError(f"InfluxDB error for {text!r}: {result['error']}")
        return answer

    def write(self, lines: str, database: str, batch_lines: int = 50_000) -> None:
        """POST line protocol (nanosecond timestamps) to ``/write`` in batches."""
        rows = lines.splitlines()
        for first in range(0, len(rows), batch_lines):
            body = ("\n".join(rows[first:first + batch_lines]) + "\n").encode()
            request = urllib.request.Request(f"{self.url}/write?db={database}&precision=ns", data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    assert response.status == 204, response.status
            except urllib.error.HTTPError as error:
                raise AssertionError(f"InfluxDB /write failed: {error.read().decode(errors='replace')}") from None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def influx_server(tmp_path_factory):
    if shutil.which("influxd") is None:
        pytest.fail("influxd is not installed (Debian package influxdb)")
    server = InfluxServer(tmp_path_factory.mktemp("influxdb"))
    try:
        yield server
    finally:
        server.close()
