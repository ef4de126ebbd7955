"""The ingest service against a real Mosquitto and the embedded store: ack after write, kill -9, bad messages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from collector.bus import InProcessBus
from collector.ingest import IngestService
from collector.schema import Point
from collector.store import AsyncEmbeddedStore, EmbeddedStore
from collector.transport import MqttPublisher, MqttSettings, MqttSubscription, encode_envelope
from service_fixtures import mosquitto, wait_for  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)

T0 = 1_700_000_000_000_000_000
REPO = Path(__file__).resolve().parent.parent


def poll(step: int, ports: int = 20, host: str = "gpu01") -> list[Point]:
    return [
        Point("infiniband", {"host": host, "device": "mlx5_0", "port": str(port)},
              {"port_xmit_data": step * 1000 + port}, T0 + step * 10_000_000_000)
        for port in range(ports)
    ]


def stored(path: Path) -> int:
    """Samples of the published points: the ingest loop's own health points are not counted."""
    with EmbeddedStore(path, read_only=True) as store:
        return store._reader().execute(
            "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id "
            "WHERE series.measurement != 'strandwatch_ingest'").fetchone()[0]


def settings(broker, tmp_path, **overrides) -> MqttSettings:
    values = dict(brokers=[broker.address], site="dc1", host="gpu01", spool_dir=tmp_path / "spool",
                  reconnect_min_s=0.1, reconnect_max_s=0.5)
    values.update(overrides)
    return MqttSettings(**values)


def write_config(tmp_path: Path, broker, *, linger_s: float) -> Path:
    config = tmp_path / "strandwatch.yaml"
    config.write_text(
        f"""site: dc1
mqtt:
  brokers: ["127.0.0.1:{broker.port}"]
  client_id: ingest-killed
  reconnect_min_s: 0.1
  reconnect_max_s: 0.5
  spool: {{path: {tmp_path / "ingest-spool"}}}
ingest:
  group: ingest
  batch_messages: 10000
  batch_points: 1000000
  linger_s: {linger_s}
store:
  backend: embedded
  path: {tmp_path / "metrics.db"}
  retention_days: 0
"""
    )
    return config


def start_ingest(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "--log-level", "DEBUG", "ingest", "--config", str(config)],
        cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def test_kill_9_between_receipt_and_write_loses_nothing(mosquitto, tmp_path):
    """The ingest process holds messages unacknowledged (long linger) and is killed with SIGKILL.

    Its persistent session keeps them at the broker; the restarted process
    (same client id) gets them again, and the store holds each point once.
    """
    config = write_config(tmp_path, mosquitto, linger_s=1.5)
    log = tmp_path / "ingest.log"
    ingest = start_ingest(config, log)
    await asyncio.to_thread(wait_for, lambda: "subscribed" in log.read_text(), 20, "the ingest subscription")
    steps, ports = 400, 20
    async with MqttPublisher(settings(mosquitto, tmp_path)) as publisher:
        for step in range(200):
            await publisher.publish(poll(step, ports))
        # First batch (200 messages) lands; the next 100 are received but held by the linger.
        await asyncio.to_thread(wait_for, lambda: (tmp_path / "metrics.db").exists() and stored(tmp_path / "metrics.db")
                                >= 200 * ports, 20, "the first batch")
        for step in range(200, 300):
            await publisher.publish(poll(step, ports))
        await asyncio.sleep(0.5)
        ingest.send_signal(signal.SIGKILL)
        ingest.wait()
        held = stored(tmp_path / "metrics.db")
        assert held < 300 * ports, "the kill came after the write; the test proves nothing"
        # Published while no ingest process runs: queued for the session.
        for step in range(300, steps):
            await publisher.publish(poll(step, ports))
    ingest = start_ingest(config, log)
    try:
        await asyncio.to_thread(wait_for, lambda: stored(tmp_path / "metrics.db") >= steps * ports, 30, "every point")
        await asyncio.sleep(0.5)
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(20)
    assert stored(tmp_path / "metrics.db") == steps * ports
    with EmbeddedStore(tmp_path / "metrics.db", read_only=True) as store:
        frame = store.read("infiniband")
    assert len(frame) == steps * ports
    assert sorted(set(frame.port_xmit_data)) == sorted(step * 1000 + port for step in range(steps) for port in range(ports))


async def test_malformed_oversized_and_wrong_version_messages_are_counted_and_dropped(mosquitto, tmp_path, caplog):
    store = EmbeddedStore(tmp_path / "metrics.db", retention=None)
    subscription = MqttSubscription(settings(mosquitto, tmp_path, client_id="ingest-1", max_message_bytes=64 * 1024),
                                    ["$share/ingest/strandwatch/v1/#"])
    await subscription.start()
    await subscription.wait_connected()
    service = IngestService(subscription, AsyncEmbeddedStore(store), linger_s=0.05)
    consuming = asyncio.create_task(service.run())

    good = encode_envelope(poll(0), site="dc1", host="gpu01", source="rdma", seq=1)
    wrong_version = json.loads(good)
    wrong_version["v"] = 99
    bad_points = json.loads(good)
    bad_points["points"] = "infiniband,host=gpu01 port_xmit_data=notanumber 1\n"
    bad = {
        "not_json": [b"\xff\xfe garbage", b"{"],
        "oversized": [b"{" + b" " * (70 * 1024) + b"}"],
        "wrong_version": [json.dumps(wrong_version).encode()] * 3,
        "bad_points": [json.dumps(bad_points).encode()],
        "missing_key": [b"{}"],
    }
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as raw:
        for step in range(30):
            payload = encode_envelope(poll(step), site="dc1", host="gpu01", source="rdma", seq=step + 1)
            await raw.publish("strandwatch/v1/dc1/rdma/gpu01", payload, qos=1)
            for payloads in bad.values():
                if step < len(payloads):
                    await raw.publish("strandwatch/v1/dc1/rdma/gpu01", payloads[step], qos=1)
    for _ in range(200):
        if service.stats.points >= 30 * 20 and sum(service.stats.rejected.values()) >= 8:
            break
        await asyncio.sleep(0.05)
    await subscription.close()
    await consuming
    assert service.stats.rejected == {kind: len(payloads) for kind, payloads in bad.items()}
    assert service.stats.points == 30 * 20
    assert len(store.read("infiniband")) == 30 * 20
    warnings = [record.getMessage() for record in caplog.records if "dropped a malformed message" in record.getMessage()]
    assert len(warnings) == len(bad), "each kind is logged once"
    assert any("envelope version 99" in message for message in warnings)
    store.close()

    # The broker forgot the dropped messages: a new session of the same client id gets nothing back.
    again = MqttSubscription(settings(mosquitto, tmp_path, client_id="ingest-1"), ["$share/ingest/strandwatch/v1/#"])
    await again.start()
    await again.wait_connected()
    await asyncio.sleep(0.5)
    assert again.received == 0
    await again.close()


class _RefusingStore:
    """The embedded store, except that it refuses points of one host as invalid (like a schema conflict)."""

    def __init__(self, store: AsyncEmbeddedStore, refused_host: str) -> None:
        self.store = store
        self.refused_host = refused_host
        self.calls = 0

    async def write(self, points):
        self.calls += 1
        points = list(points)
        if any(point.tags.get("host") == self.refused_host for point in points):
            raise ValueError(f"field type conflict for host {self.refused_host}")
        return await self.store.write(points)


async def test_a_message_the_store_refuses_is_dropped_not_retried_forever(mosquitto, tmp_path):
    store = EmbeddedStore(tmp_path / "metrics.db", retention=None)
    subscription = MqttSubscription(settings(mosquitto, tmp_path, client_id="ingest-2"), ["strandwatch/v1/#"])
    await subscription.start()
    await subscription.wait_connected()
    refusing = _RefusingStore(AsyncEmbeddedStore(store), "gpu66")
    service = IngestService(subscription, refusing, linger_s=0.2)
    consuming = asyncio.create_task(service.run())
    async with MqttPublisher(settings(mosquitto, tmp_path)) as publisher:
        for step in range(10):
            await publisher.publish(poll(step, host="gpu66" if step == 4 else "gpu01"))
    for _ in range(100):
        if service.stats.messages == 10:
            break
        await asyncio.sleep(0.05)
    await subscription.close()
    await consuming
    assert service.stats.store_rejected == 1
    assert len(store.read("infiniband")) == 9 * 20
    store.close()


async def test_ingest_reports_its_own_progress(tmp_path: Path) -> None:
    """Every report interval the loop stores a strandwatch_ingest point: what the health dashboard reads."""
    bus = InProcessBus()
    store = EmbeddedStore(tmp_path / "metrics.db")
    service = IngestService(bus.subscribe(), AsyncEmbeddedStore(store), linger_s=0, report_every_s=0, host="ingest-1")
    consuming = asyncio.create_task(service.run())
    for step in range(3):
        await bus.publish(poll(step, ports=4))
    await bus.close()
    await consuming
    reports = store.read("strandwatch_ingest")
    store.close()
    assert set(reports["host"]) == {"ingest-1"} and set(reports["component"]) == {"ingester"}
    assert reports["points_written"].sum() == 12
    assert (reports["spool_depth"] == 0).all() and (reports["lag_seconds"] >= 0).all()
