"""The distributed path end to end: ``collect snmp`` polls simulated switches and publishes to a real
Mosquitto, ``ingest`` stores into the embedded store; both stopped with SIGTERM; every point once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest
import yaml

from collector.schema import Point
from collector.store import EmbeddedStore
from collector.transport import decode
from detector.simulator import SimConfig, Simulation
from detector.simulator.snmp_agent import SimulatedSwitchAgents
from service_fixtures import free_port, http_get, mosquitto, wait_for  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[1]


def strandwatch(*argv: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "--log-level", "INFO", *argv],
        cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def polls_ok(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('strandwatch_polls_total{source="snmp"') and 'result="ok"' in line)


async def test_collect_snmp_publishes_and_ingest_stores_every_point_once(mosquitto, tmp_path):
    health_port = free_port()
    observed: dict[str, set] = {}
    polled: list[set[str]] = []  # the targets of each published poll

    async def observe(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            envelope = decode(message.payload, where=str(message.topic))
            assert str(message.topic) == "strandwatch/v1/dc1/snmp/poller01"
            for point in envelope.parse_points():
                key = (tuple(sorted(point.tags.items())), point.time_ns)
                observed.setdefault(point.measurement, set()).add(key)
            polled.append({point.tags["target"] for point in envelope.parse_points()
                           if point.measurement == "strandwatch_source"})

    with Simulation(SimConfig(seed=3, duration=timedelta(hours=1))) as simulation, \
            SimulatedSwitchAgents(simulation.board) as agents:
        broker = {"brokers": [f"127.0.0.1:{mosquitto.port}"], "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
        collect_config = tmp_path / "collect.yaml"
        targets = [{"name": name, "host": host, "port": port, "timeout": 1, "retries": 0}
                   for name, (host, port) in sorted(agents.endpoints.items())]
        collect_document = {
            "site": "dc1",
            "interval_s": 1,
            "health_address": f"127.0.0.1:{health_port}",
            "mqtt": {**broker, "host": "poller01", "spool": {"path": str(tmp_path / "collect-spool")}},
            "snmp": {"targets": targets},
        }
        collect_config.write_text(yaml.safe_dump(collect_document))
        ingest_config = tmp_path / "ingest.yaml"
        ingest_config.write_text(yaml.safe_dump({
            "site": "dc1",
            "health_address": f"127.0.0.1:{free_port()}",
            "mqtt": {**broker, "client_id": "ingest-1", "spool": {"path": str(tmp_path / "ingest-spool")}},
            "ingest": {"group": "ingest", "linger_s": 0.1},
            "store": {"path": str(tmp_path / "metrics.db"), "retention_days": 0, "rollups": []},
        }))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="observer") as observer:
            await observer.subscribe("strandwatch/v1/#", qos=1)
            watching = asyncio.create_task(observe(observer))
            ingest_log, collect_log = tmp_path / "ingest.log", tmp_path / "collect.log"
            ingest = strandwatch("ingest", "--config", str(ingest_config), log=ingest_log)
            collect = None
            try:
                await asyncio.to_thread(wait_for, lambda: "subscribed" in ingest_log.read_text(), 20, "ingest")
                collect = strandwatch("collect", "snmp", "--config", str(collect_config), log=collect_log)
                metrics_url = f"http://127.0.0.1:{health_port}/metrics"
                await asyncio.to_thread(wait_for, lambda: polls_ok(http_get(metrics_url)[1]) >= 3 * len(agents.endpoints),
                                        30, "three polls of every switch")
                status, body = http_get(f"http://127.0.0.1:{health_port}/readyz")
                assert status == 200 and "[+]broker ok" in body, body
                assert 'strandwatch_spool_depth{spool="mqtt"} 0' in http_get(metrics_url)[1]
                # SIGHUP: the first switch leaves the configuration and the polls, without a restart.
                removed = targets[0]["name"]
                collect_config.write_text(yaml.safe_dump({**collect_document, "snmp": {"targets": targets[1:]}}))
                collect.send_signal(signal.SIGHUP)
                await asyncio.to_thread(wait_for, lambda: bool(polled) and removed not in polled[-1]
                                        and len(polled[-1]) == len(targets) - 1, 20, "a poll without the removed switch")
                collect.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(collect.wait, 20) == 0, collect_log.read_text()[-3000:]
                await asyncio.sleep(1.0)  # the observer and ingest take the last poll
            finally:
                ingest.send_signal(signal.SIGTERM)
                ingest_status = await asyncio.to_thread(ingest.wait, 20)
                if collect is not None and collect.poll() is None:
                    collect.kill()
                watching.cancel()
        assert ingest_status == 0, ingest_log.read_text()[-3000:]

    assert "messages published, 0 spooled" in collect_log.read_text()
    assert set(observed) == {"interface", "strandwatch_source"}
    with EmbeddedStore(tmp_path / "metrics.db", read_only=True) as store:
        for measurement, keys in observed.items():
            frame = store.read(measurement)
            assert len(frame) == len(keys), measurement
    assert len({time_ns for _, time_ns in observed["strandwatch_source"]}) >= 3


async def test_agent_with_a_service_configuration_publishes_each_source_and_prints_with_output(mosquitto, tmp_path):
    """``strandwatch agent --config FILE``: FILE with ``agent:`` and ``mqtt:`` publishes one message per
    source per poll on the agent host's topic; ``--output -`` prints line protocol instead."""
    health_port = free_port()
    with Simulation(SimConfig(seed=3, duration=timedelta(hours=1))) as simulation:
        host = sorted(simulation.topology.hosts)[0]
        simulation.write_sysfs(host, tmp_path / "sys")
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "site": "dc1",
        "interval_s": 1,
        "health_address": f"127.0.0.1:{health_port}",
        "mqtt": {"brokers": [f"127.0.0.1:{mosquitto.port}"], "spool": {"path": str(tmp_path / "spool")}},
        "agent": {"host": host, "sources": {"rdma": {"sysfs_root": str(tmp_path / "sys")}, "ethtool": False,
                                            "gpu": False, "jobs": False}},
    }))
    printed = subprocess.run([sys.executable, "-m", "detector.cli", "agent", "--config", str(config), "--once"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert printed.returncode == 0, printed.stderr
    assert "infiniband,device=" in printed.stdout and f"host={host}" in printed.stdout

    topics: list[str] = []
    points: list[Point] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="observer") as observer:
        await observer.subscribe("strandwatch/v1/#", qos=1)

        async def observe() -> None:
            async for message in observer.messages:
                topics.append(str(message.topic))
                points.extend(decode(message.payload).parse_points())

        watching = asyncio.create_task(observe())
        log = tmp_path / "agent.log"
        agent = strandwatch("agent", "--config", str(config), log=log)
        try:
            await asyncio.to_thread(wait_for, lambda: len(topics) >= 2, 30, "two polls published")
            status, body = http_get(f"http://127.0.0.1:{health_port}/readyz")
            assert status == 200 and "[+]broker ok" in body, body
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 20) == 0, log.read_text()[-3000:]
            await asyncio.sleep(0.3)
        finally:
            if agent.poll() is None:
                agent.kill()
            watching.cancel()
    assert set(topics) == {f"strandwatch/v1/dc1/rdma/{host}"}
    assert {point.measurement for point in points} == {"infiniband", "strandwatch_source"}
    health = [point for point in points if point.measurement == "strandwatch_source"]
    assert len(health) == len(topics), "one message per source per poll, its health point inside"
