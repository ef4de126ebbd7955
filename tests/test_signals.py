"""Signals: the first SIGTERM drains under load and loses nothing, a second forces the exit (also
while a publishing agent flushes its spool to a dead or silent broker), SIGHUP reloads; and a
reload adds and removes SNMP targets between polls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from collector.service import ShutdownSignals, snmp_source_set
from service_fixtures import wait_for
from tests.snmp_fixtures import switch_board  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]

SERVICE = textwrap.dedent('''
    import asyncio, json, sys
    from collector.bus import InProcessBus
    from collector.schema import Point
    from collector.service import configure_logging, run_service

    out_path, mode = sys.argv[1], sys.argv[2]
    configure_logging("INFO")

    async def main(signals):
        reloads = []
        signals.on_reload = lambda: reloads.append(1) or print("reloaded", flush=True)
        bus = InProcessBus(maxsize=4)

        async def consume(subscription):
            stored = 0
            with open(out_path, "w") as out:
                async for delivery in subscription:
                    if mode == "stuck" and signals.stop.is_set():
                        await asyncio.sleep(3600)  # a store that never answers again
                    await asyncio.sleep(0.002)  # a store that takes its time
                    out.write("".join(f"{p.fields['seq']}\\n" for p in delivery.points))
                    stored += len(delivery.points)
                    await delivery.ack()
            return stored

        consumer = asyncio.create_task(consume(bus.subscribe()))
        print("ready", flush=True)
        if mode == "deaf":
            while True:  # swallows cancellation: only the backstop can end it
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    print("ignoring cancellation", flush=True)
        published = 0
        while not signals.stop.is_set():
            await bus.publish([Point("m", {"host": "a"}, {"seq": published + i}, published + i) for i in range(100)])
            published += 100
        await bus.close()
        stored = await consumer
        print(json.dumps({"published": published, "stored": stored, "reloads": len(reloads)}), flush=True)
        return 0

    sys.exit(run_service(main, "loadtest", "draining the bus", force_exit_after_s=1.0))
''')


def start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    out = tmp_path / "stored.txt"
    process = subprocess.Popen([sys.executable, str(script), str(out), mode], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "ready"
    return process, out


def test_first_sigterm_drains_under_load_and_loses_nothing(tmp_path):
    process, out = start(tmp_path, "normal")
    try:
        time.sleep(0.5)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert "reloaded" in stdout and summary["reloads"] == 1
    assert summary["published"] >= 1000  # it was under load
    stored = [int(line) for line in out.read_text().split()]
    assert stored == list(range(summary["published"])) and summary["stored"] == summary["published"]
    assert "loadtest: SIGTERM: draining the bus (again to stop now)" in stderr
    assert "loadtest: SIGHUP: reloading the configuration" in stderr


def test_a_second_signal_forces_the_exit_while_draining_hangs(tmp_path):
    process, _ = start(tmp_path, "stuck")
    try:
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # still draining (stuck)
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert time.monotonic() - began < 3
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "loadtest: second SIGINT: stopping now" in stderr


def test_the_backstop_exits_even_when_cancellation_is_swallowed(tmp_path):
    process, _ = start(tmp_path, "deaf")
    try:
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        assert 0.8 < time.monotonic() - began < 5
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "ignoring cancellation" in stdout


ROCE_SYSFS = REPO / "tests" / "fixtures" / "sysfs" / "roce"


def start_publishing_agent(tmp_path: Path, broker_port: int) -> tuple[subprocess.Popen, Path, Path]:
    """``strandwatch agent`` publishing to a broker on ``broker_port``, waiting up to a minute for it."""
    config = tmp_path / "agent.yaml"
    spool = tmp_path / "spool"
    config.write_text(yaml.safe_dump({
        "site": "dc1", "interval_s": 0.2, "health_address": "127.0.0.1:0",
        "mqtt": {"brokers": [f"127.0.0.1:{broker_port}"], "timeout_s": 60, "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5, "spool": {"path": str(spool)}},
        "agent": {"host": "node1", "sources": {"rdma": {"sysfs_root": str(ROCE_SYSFS)}, "ethtool": False,
                                               "gpu": False, "jobs": False}},
    }))
    log = tmp_path / "agent.log"
    process = subprocess.Popen([sys.executable, "-m", "detector.cli", "--log-level", "INFO", "agent", "--config",
                                str(config)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    return process, spool, log



def force_exit(process: subprocess.Popen, log: Path, second: signal.Signals) -> None:
    """First SIGTERM: the service is still there a second later; the second signal ends it at once with 130."""
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: "agent: SIGTERM: finishing the current poll" in log.read_text(), 10, "the first signal")
    time.sleep(1.0)
    assert process.poll() is None, log.read_text()  # still draining: the broker does not take the spool
    began = time.monotonic()
    process.send_signal(second)
    assert process.wait(10) == 130, log.read_text()
    assert time.monotonic() - began < 3
    assert f"agent: second {second.name}: stopping now" in log.read_text()


def test_a_second_signal_stops_a_publishing_agent_flushing_to_a_dead_broker(tmp_path):
    with socket.socket() as dead:  # bound, not listening: connections are refused
        dead.bind(("127.0.0.1", 0))
        process, spool, log = start_publishing_agent(tmp_path, dead.getsockname()[1])
        try:
            wait_for(lambda: len(list(spool.glob("*.msg"))) >= 3, 30, "polls spooled while no broker answers")
            force_exit(process, log, signal.SIGTERM)
        finally:
            process.kill()
    assert "messages wait in the spool" in log.read_text()
    # Nothing accepted is lost: every poll is still on disk for the next start to send.
    assert len(list(spool.glob("*.msg"))) >= 3


def test_a_second_signal_stops_a_publishing_agent_whose_broker_never_answers(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        process, _, log = start_publishing_agent(tmp_path, silent.getsockname()[1])
        try:
            wait_for(lambda: "serving /healthz" in log.read_text(), 30, "the agent to start")
            time.sleep(0.5)  # connecting: waiting up to timeout_s (60 s) for a CONNACK that never comes
            assert process.poll() is None, log.read_text()
            force_exit(process, log, signal.SIGINT)
        finally:
            process.kill()


def write_snmp_config(path: Path, agents, names: list[str]) -> None:
    targets = [{"name": name, "host": agents.endpoints[name][0], "port": agents.endpoints[name][1],
                "timeout": 1.0, "retries": 0} for name in names]
    path.write_text(yaml.safe_dump({"interval": 1, "targets": targets}))


async def test_sighup_adds_and_removes_snmp_targets_between_polls(tmp_path, switch_board):  # noqa: F811
    _, agents = switch_board
    config = tmp_path / "snmp.yaml"
    write_snmp_config(config, agents, ["leaf01"])
    sources = snmp_source_set(config)
    signals = ShutdownSignals("collect", on_reload=sources.request).install()

    async def targets_polled() -> set[str]:
        await sources.apply_pending()
        points = [p for s in sources.sources for p in await s.collect(time.time_ns())]
        return {p.tags["agent_host"] for p in points if p.measurement == "interface"}

    try:
        assert await targets_polled() == {"leaf01"}
        first = sources.sources[0]
        write_snmp_config(config, agents, ["leaf02"])
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)  # the loop runs the handler
        assert sources.pending and signals.reloads == 1
        assert await targets_polled() == {"leaf02"}
        assert sources.sources[0] is not first

        config.write_text("targets: [{name: broken}]\n")  # a bad file keeps what runs
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        assert await targets_polled() == {"leaf02"}

        write_snmp_config(config, agents, ["leaf01", "leaf02"])
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        assert await targets_polled() == {"leaf01", "leaf02"}
        assert sources.generation == 2
    finally:
        signals.uninstall()
        await sources.close()
