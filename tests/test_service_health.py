"""The health server over real HTTP on loopback: liveness, readiness with failing checks, /metrics."""

from __future__ import annotations

import asyncio
import socket

import pytest

from collector.schema import COLLECTOR_HEALTH, Point
from collector.service import HealthServer, Registry, ServiceMetrics, directory_writable_check, tcp_check
from collector.service.metrics import MAX_SERIES_PER_METRIC, MetricError
from collector.sources.dcgm.prometheus import parse_text

pytestmark = pytest.mark.timeout(30)


async def http_get(port: int, path: str, method: str = "GET", raw: bytes | None = None) -> tuple[int, dict, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw if raw is not None else f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    if raw is not None:
        writer.write_eof()  # a client that sends a truncated request and stops
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body.decode()


def closed_port() -> int:
    """A loopback port nothing listens on: a broker or database that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_healthz_answers_and_binds_loopback_by_default():
    async with HealthServer(port=0) as server:
        assert server.host == "127.0.0.1"
        status, headers, body = await http_get(server.port, "/healthz")
        assert (status, body) == (200, "ok\n")
        assert headers["Connection"] == "close"
        assert (await http_get(server.port, "/nope"))[0] == 404
        assert (await http_get(server.port, "/healthz", method="POST"))[0] == 405
        status, _, body = await http_get(server.port, "/healthz", method="HEAD")
        assert (status, body) == (200, "")


async def test_readyz_reports_a_dead_broker_and_a_dead_database(tmp_path):
    broker = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    broker_port = broker.sockets[0].getsockname()[1]
    async with HealthServer(port=0) as server:
        server.add_check("broker", tcp_check("127.0.0.1", broker_port))
        server.add_check("database", directory_writable_check(tmp_path))
        status, _, body = await http_get(server.port, "/readyz")
        assert status == 200, body
        assert "[+]broker ok" in body and "[+]database ok" in body

        broker.close()
        await broker.wait_closed()
        dead_db = closed_port()
        server.add_check("database", tcp_check("127.0.0.1", dead_db))
        status, _, body = await http_get(server.port, "/readyz")
        assert status == 503
        assert f"[-]broker failed: ConnectionError: 127.0.0.1:{broker_port}" in body
        assert f"[-]database failed: ConnectionError: 127.0.0.1:{dead_db}" in body
        assert body.endswith("readyz check failed\n")
        # liveness does not depend on the dependencies
        assert (await http_get(server.port, "/healthz"))[0] == 200


async def test_a_hanging_or_raising_check_fails_readiness_without_hanging_it():
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    def raises() -> bool:
        raise RuntimeError("spool directory is gone")

    async with HealthServer(port=0, check_timeout_s=0.2) as server:
        server.add_check("hangs", hangs)
        server.add_check("raises", raises)
        server.add_check("flag", lambda: False)
        status, _, body = await asyncio.wait_for(http_get(server.port, "/readyz"), 5)
        assert status == 503
        assert "[-]hangs failed: no answer within 0.2 s" in body
        assert "[-]raises failed: RuntimeError: spool directory is gone" in body
        assert "[-]flag failed: check returned false" in body


async def test_unwritable_directory_fails_the_database_check(tmp_path):
    gone = tmp_path / "removed"
    async with HealthServer(port=0) as server:
        server.add_check("database", directory_writable_check(gone))
        status, _, body = await http_get(server.port, "/readyz")
    assert status == 503 and "[-]database failed: FileNotFoundError" in body


async def test_untrusted_requests_are_bounded():
    async with HealthServer(port=0) as server:
        huge = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await http_get(server.port, "", raw=huge))[0] == 431
        assert (await http_get(server.port, "", raw=b"garbage\r\n\r\n"))[0] == 400
        assert (await http_get(server.port, "", raw=b"GET /healthz"))[0] == 400  # closed before the head ended


async def test_metrics_parse_as_prometheus_text_and_carry_the_service_metrics():
    metrics = ServiceMetrics()
    batch = [
        Point("interface", {"agent_host": "leaf01", "ifName": "swp1"}, {"ifHCInOctets": 1}, 1),
        Point(COLLECTOR_HEALTH, {"source": "snmp", "target": "leaf01"},
              {"up": 1, "duration_seconds": 0.012, "points": 1}, 1),
        Point(COLLECTOR_HEALTH, {"source": "snmp", "target": 'odd"name\\with\nnewline'},
              {"up": 0, "duration_seconds": 2.0, "points": 0, "skipped": 0}, 1),
        Point(COLLECTOR_HEALTH, {"source": "snmp", "target": "leaf03"},
              {"up": 0, "duration_seconds": 0.0, "points": 0, "skipped": 1}, 1),
    ]
    metrics.observe_batch(batch)
    metrics.points_out.inc(3, stage="stored")
    metrics.queue_depth.set_function(lambda: 7, queue="bus")
    metrics.spool_depth.set(2, spool="mqtt")
    metrics.detector_lag.set(31.5)
    metrics.dropped.inc(reason="oversized")
    async with HealthServer(metrics.registry, port=0) as server:
        status, headers, body = await http_get(server.port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    scrape = parse_text(body, "/metrics")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in scrape.samples}
    assert values[("strandwatch_poll_up", (("source", "snmp"), ("target", "leaf01")))] == 1
    assert values[("strandwatch_poll_up", (("source", "snmp"), ("target", 'odd"name\\with\nnewline')))] == 0
    assert values[("strandwatch_polls_total", (("result", "skipped"), ("source", "snmp"), ("target", "leaf03")))] == 1
    assert values[("strandwatch_poll_duration_seconds_bucket",
                   (("le", "0.025"), ("source", "snmp"), ("target", "leaf01")))] == 1
    assert values[("strandwatch_poll_duration_seconds_bucket",
                   (("le", "0.01"), ("source", "snmp"), ("target", "leaf01")))] == 0
    assert values[("strandwatch_poll_duration_seconds_bucket",
                   (("le", "+Inf"), ("source", "snmp"), ("target", "leaf01")))] == 1
    assert values[("strandwatch_points_in_total", (("stage", "collected"),))] == 4
    assert values[("strandwatch_points_out_total", (("stage", "stored"),))] == 3
    assert values[("strandwatch_queue_depth", (("queue", "bus"),))] == 7
    assert values[("strandwatch_spool_depth", (("spool", "mqtt"),))] == 2
    assert values[("strandwatch_detector_lag_seconds", ())] == 31.5
    assert values[("strandwatch_dropped_messages_total", (("reason", "oversized"),))] == 1
    assert values[("process_resident_memory_bytes", ())] > 1e6
    assert scrape.types["strandwatch_poll_duration_seconds"] == "histogram"
    assert scrape.types["strandwatch_points_in_total"] == "counter"


def test_metric_misuse_is_refused_and_label_sets_are_bounded():
    registry = Registry()
    counter = registry.counter("c_total", "a counter", ("target",))
    with pytest.raises(MetricError, match="labels"):
        counter.inc(wrong="x")
    with pytest.raises(MetricError, match="negative"):
        counter.inc(-1, target="a")
    with pytest.raises(MetricError, match="registered twice"):
        registry.counter("c_total", "again")
    with pytest.raises(MetricError, match="not a valid"):
        registry.gauge("bad-name", "x")
    for n in range(MAX_SERIES_PER_METRIC + 5):
        counter.inc(target=f"host{n}")
    assert counter.dropped_series == 5
    counter.remove(target="host0")
    assert counter.value(target="host0") == 0
