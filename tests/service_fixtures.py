"""Real Mosquitto, InfluxDB 1.x and VictoriaMetrics on free loopback ports, for transport and store tests.

Each server gets its own configuration and data directories under the
test's tmp path, listens on 127.0.0.1 only, and is stopped at the end of the
test. ``stop()`` and ``start()`` again (same port, same data) make an outage.
Tests that need a server skip when its Debian package is not installed.
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

__all__ = ["InfluxDB1", "Mosquitto", "VictoriaMetrics", "free_port", "influxdb", "make_certs", "mosquitto",
           "victoria_metrics"]


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (error statuses included); (0, "") while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_certs(directory: Path, *clients: str) -> Path:
    """``deploy/make-certs.sh`` into ``directory``: a CA, a broker certificate for localhost, one per client.

    Returns the directory: ``ca.crt``, ``server.{crt,key}``, ``<client>.{crt,key}`` (CN = the client name).
    Called again on the same directory it adds clients signed by the same CA.
    """
    script = Path(__file__).resolve().parents[1] / "deploy" / "make-certs.sh"
    subprocess.run([str(script), "localhost", *clients], env={"CERT_DIR": str(directory), "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True, timeout=60)
    return directory


def _require(binary: str) -> str:
    path = shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None)
    if path is None:
        pytest.fail(f"{binary} is not installed (apt-get install mosquitto influxdb victoria-metrics)")
    return path


class _Server:
    """A server process with a readiness check; start/stop may repeat to simulate outages."""

    name = "server"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = directory / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        assert self.process is None, f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as an operator or systemd would."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _tcp_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=0.5) as response:
                return 200 <= response.status < 300
        except OSError:
            return False


class Mosquitto(_Server):
    """Mosquitto 2 with persistence (so queued QoS 1 messages survive a restart) and no queue limits."""

    name = "mosquitto"

    def command(self) -> list[str]:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 256\n"
            f"log_dest file {self.directory}/mosquitto-own.log\n"
        )
        return [_require("mosquitto"), "-c", str(config)]

    def ready(self) -> bool:
        return self._tcp_open()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


class InfluxDB1(_Server):
    """Debian's influxd 1.x with its own configuration file, data, WAL and meta directories."""

    name = "influxd"
    database = "strandwatch"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.rpc_port = free_port()

    def command(self) -> list[str]:
        config = self.directory / "influxdb.conf"
        config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.directory}/meta"
[data]
  dir = "{self.directory}/data"
  wal-dir = "{self.directory}/wal"
  query-log-enabled = false
[retention]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
"""
        )
        return [_require("influxd"), "run", "-config", str(config)]

    def ready(self) -> bool:
        return self._http_ok("/ping")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, statement: str, *, database: str | None = None) -> dict:
        data = urllib.parse.urlencode({"q": statement, "db": database or self.database, "epoch": "ns"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as response:
            return json.loads(response.read())

    def count(self, measurement: str, field: str, *, database: str | None = None) -> int:
        """Points of ``measurement`` with ``field`` stored, counted by InfluxDB."""
        result = self.query(f'SELECT count("{field}") FROM "{measurement}"', database=database)["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxDB: {result['error']}")
        series = result.get("series")
        return series[0]["values"][0][1] if series else 0


class VictoriaMetrics(_Server):
    """Debian's victoria-metrics single node; accepts influx line protocol on /write and /api/v2/write."""

    name = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            _require("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.directory}/data",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        return self._http_ok("/health")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, match: str = '{__name__=~".+"}') -> list[dict]:
        """Every stored series as VictoriaMetrics' JSON-lines export (metric, values, timestamps in ms)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]


@pytest.fixture
def mosquitto(tmp_path):
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influxdb(tmp_path):
    server = InfluxDB1(tmp_path / "influxdb")
    server.start(timeout=30)
    server.query(f'CREATE DATABASE "{server.database}"')
    yield server
    server.stop()


@pytest.fixture
def victoria_metrics(tmp_path):
    server = VictoriaMetrics(tmp_path / "victoria-metrics")
    server.start()
    yield server
    server.stop()
