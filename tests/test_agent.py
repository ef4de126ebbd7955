"""The node agent: configuration, --once output, the polling loop, devices that come and go, signals."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from fake_nvml import MIB, FakeNvml, h100

from golden_files import assert_golden
from collector.agent import (
    Agent,
    AgentConfig,
    AgentConfigError,
    add_agent_arguments,
    build_sources,
    load_config,
    parse_config,
    run_agent,
    run_agent_command,
    run_agent_once,
)
from collector.bus import InProcessBus
from collector.lineprotocol import parse
from collector.schema import COLLECTOR_HEALTH, INFINIBAND, JOB_GPU, NVIDIA_SMI, Point

REPO = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
ROCE_SYSFS = FIXTURES / "sysfs" / "roce"
SAMPLE_CONFIG = REPO / "collector" / "agent.sample.yaml"
T = 1_767_225_600_000_000_000


def normalized(line_protocol: str) -> str:
    """Durations and timestamps vary from run to run; everything else must not."""
    text = re.sub(r"duration_seconds=[0-9.e-]+", "duration_seconds=0.0", line_protocol)
    return re.sub(r" \d+\n", f" {T}\n", text)


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def command_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def nvml(monkeypatch) -> FakeNvml:
    fake = FakeNvml([
        h100(0, sm_active_fraction=0.75),
        h100(1, utilization=(100, 2), processes=[(4243, 1_200 * MIB), (4250, None)]),
    ])
    fake.install(monkeypatch.setattr)
    return fake


@pytest.fixture
def no_nvml(monkeypatch) -> FakeNvml:
    """A host whose NVML library is missing (the same as this machine, but certain everywhere)."""
    import pynvml

    fake = FakeNvml([])
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    fake.install(monkeypatch.setattr)
    return fake


def node_config(root: Path, **overrides) -> dict:
    """A GPU node: the RoCE sysfs fixture, the fake GPUs, Slurm jobs from the fixture /proc and a jobs file."""
    data = {
        "host": "gpu-node-07",
        "interval_s": 10,
        "sources": {
            "rdma": {"sysfs_root": str(root)},
            "ethtool": {"interfaces": ["lo"]},  # statistics-less here: only its health point
            "gpu": {"gpm": True},
            "jobs": {"proc_root": str(FIXTURES / "jobs" / "proc"), "file": str(FIXTURES / "jobs" / "jobs.csv")},
        },
    }
    data.update(overrides)
    return data


# --- configuration ----------------------------------------------------------------

def test_sample_config_and_defaults_build_sources():
    config = load_config(SAMPLE_CONFIG)
    assert config.interval_s == 10 and config.output == "-"
    assert [source.name for source in build_sources(config)] == ["rdma", "ethtool", "gpu", "jobs"]
    defaults = parse_config(None)
    assert defaults.host and set(defaults.sources) == {"rdma", "ethtool", "gpu", "jobs"}
    assert parse_config({"sources": {"gpu": False, "dcgm": True}}).sources.keys() == {"rdma", "ethtool", "dcgm", "jobs"}


def test_without_the_gpu_source_slurm_mapping_is_off_unless_asked_for(tmp_path):
    config = parse_config({"sources": {"gpu": {"enabled": False}}})
    assert [source.name for source in build_sources(config)] == ["rdma", "ethtool"]
    jobs_file = str(FIXTURES / "jobs" / "jobs.csv")
    config = parse_config({"sources": {"gpu": False, "jobs": {"file": jobs_file}}})
    (jobs,) = [source for source in build_sources(config) if source.name == "jobs"]
    assert jobs.process_table is None and jobs.static is not None
    with pytest.raises(AgentConfigError, match=r"agent.yaml: sources.jobs: .*needs the GPU processes"):
        build_sources(load_config(write_config(tmp_path, {"sources": {"gpu": False, "jobs": {"slurm": True}}})))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"hosts": "x"}, r"unknown key\(s\) \['hosts'\]"),
        ({"interval_s": 0}, "interval_s must be a positive number"),
        ({"interval_s": "10s"}, "interval_s must be a positive number"),
        ({"host": 7}, "host must be a non-empty string"),
        ({"output": ""}, "output must be '-'"),
        ({"sources": ["rdma"]}, "sources must be a mapping"),
        ({"sources": {"snmp": {}}}, r"unknown source\(s\) \['snmp'\]"),
        ({"sources": {"rdma": "on"}}, "sources.rdma must be true, false or a mapping"),
        ({"sources": {"gpu": {"enabled": "yes"}}}, "sources.gpu.enabled must be true or false"),
        ({"sources": {"rdma": {"sysfs_path": "/sys"}}}, r"sources.rdma: rdma source: unknown option"),
        ({"sources": {"dcgm": {"url": "localhost"}}}, "sources.dcgm: dcgm source: url must be"),
        ({"sources": {"jobs": {"file": "/nonexistent/jobs.csv"}}}, "sources.jobs: /nonexistent/jobs.csv: cannot read"),
    ],
)
def test_a_bad_configuration_names_the_file_and_the_key(tmp_path, data, message):
    path = write_config(tmp_path, data)
    with pytest.raises(AgentConfigError, match=message) as caught:
        build_sources(load_config(path))
    assert str(caught.value).startswith(str(path))
    assert run_agent_command(command_args("--config", str(path), "--once")) == 2


def test_unreadable_or_invalid_config_files_are_named(tmp_path):
    with pytest.raises(AgentConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(AgentConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(AgentConfigError, match="must be a mapping"):
        load_config(bad)


# --- one sample ---------------------------------------------------------------------

def test_once_prints_one_sample_of_every_source_as_line_protocol(tmp_path, nvml, caplog):
    config_path = write_config(tmp_path, node_config(ROCE_SYSFS))
    output = tmp_path / "sample.lp"
    with caplog.at_level(logging.INFO, logger="collector.agent"):
        assert run_agent_command(command_args("--config", str(config_path), "--once", "--output", str(output))) == 0
    text = output.read_text()
    points = parse(text)
    measurements = [p.measurement for p in points]
    assert measurements.count(INFINIBAND) == 4 and measurements.count(NVIDIA_SMI) == 2
    assert measurements.count(COLLECTOR_HEALTH) == 4
    assert {(p.tags["index"], p.tags["job"], p.fields["source"]) for p in points if p.measurement == JOB_GPU} == {
        ("0", "81234", "slurm"), ("1", "81235", "slurm"), ("1", "81236", "slurm"),
    }  # at the time of the poll the file's eval-nightly job has not started yet (or already ended)
    assert len({p.time_ns for p in points}) == 1
    assert_golden("agent_once.lp", normalized(text))
    messages = [r.getMessage() for r in caplog.records]
    assert "agent: gpu-node-07 polls rdma, ethtool, gpu, jobs every 10 s" in messages
    assert nvml.shutdowns == 1  # the sources were closed


def test_run_agent_once_stamps_the_given_time_and_the_jobs_file_counts_then(nvml):
    config = parse_config(node_config(ROCE_SYSFS))
    points = run_agent_once(config, time_ns=T + 10_000_000_000)
    assert {p.time_ns for p in points} == {T + 10_000_000_000}
    jobs = {(p.tags["index"], p.tags["job"]) for p in points if p.measurement == JOB_GPU}
    assert {("6", "eval-nightly"), ("7", "eval-nightly"), ("0", "81234")} <= jobs


def test_a_host_without_devices_says_so_once_and_keeps_going(tmp_path, no_nvml, caplog):
    root = str(tmp_path)
    config = parse_config({
        "host": "cpu-node", "interval_s": 0.05,
        "sources": {"rdma": {"sysfs_root": root}, "ethtool": {"sysfs_root": root}},
    })

    async def three_polls() -> list[list[Point]]:
        agent = Agent(config)
        batches = [await agent.poll(T + step) for step in range(3)]
        await agent.close()
        return batches

    with caplog.at_level(logging.DEBUG):
        batches = asyncio.run(three_polls())
    # rdma, ethtool, gpu and jobs (no GPU processes, so no jobs) each give only their health point.
    assert all([p.measurement for batch in poll for p in batch] == [COLLECTOR_HEALTH] * 4 for poll in batches)
    said = [r for r in caplog.records if r.name == "collector.agent" and "keeps polling" in r.getMessage()]
    assert sorted(r.getMessage().split(" source")[0] for r in said) == ["agent: ethtool", "agent: gpu", "agent: rdma"]
    assert all(r.levelno == logging.INFO for r in said)
    assert sum("does not exist" in r.getMessage() for r in caplog.records) == 1
    assert sum("NVML unavailable" in r.getMessage() for r in caplog.records) == 1


# --- the loop -------------------------------------------------------------------------

async def collect_polls(
    bus: InProcessBus, sources: int, polls: int, stop: asyncio.Event, between=None
) -> list[list[Point]]:
    """Gather what the agent publishes, one list per poll; calls ``between(n)`` after poll n; stops after ``polls``."""
    subscription = bus.subscribe()
    collected: list[list[Point]] = []
    current: list[Point] = []
    async for delivery in subscription:
        current.extend(delivery.points)
        await delivery.ack()
        if sum(p.measurement == COLLECTOR_HEALTH for p in current) == sources:
            collected.append(current)
            current = []
            if between is not None:
                between(len(collected))
            if len(collected) == polls:
                stop.set()
    return collected


async def test_the_loop_polls_on_aligned_ticks_while_devices_come_go_and_counters_move(tmp_path, nvml, caplog):
    root = tmp_path / "sys"
    shutil.copytree(ROCE_SYSFS, root, symlinks=True)
    port = (root / "class" / "infiniband" / "mlx5_0").resolve() / "ports" / "1"
    near_wrap = (1 << 64) - 5_000
    (port / "counters" / "port_xmit_data_64").write_text(f"{near_wrap}\n")

    config = parse_config(node_config(root, interval_s=0.1))
    bus = InProcessBus()
    stop = asyncio.Event()

    def between(poll: int) -> None:
        nvml.advance(0.1)
        (port / "counters" / "port_xmit_data_64").write_text(f"{near_wrap + 1000 * poll}\n")
        if poll == 2:
            shutil.rmtree((root / "class" / "infiniband" / "mlx5_1").resolve())  # hot-unplugged
            nvml.gpus[1].lost = True  # fell off the bus

    collector = asyncio.create_task(collect_polls(bus, sources=4, polls=5, stop=stop, between=between))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        polls = await asyncio.wait_for(run_agent(config, bus, stop, handle_signals=False), 10)
    await bus.close()
    collected = await collector
    assert polls == 5 and len(collected) == 5

    stamps = [poll[0].time_ns for poll in collected]
    assert all(len({p.time_ns for p in poll}) == 1 for poll in collected)
    assert all(stamp % 100_000_000 == 0 for stamp in stamps)  # whole multiples of the interval
    assert all(b - a == 100_000_000 for a, b in zip(stamps, stamps[1:]))  # no tick lost, none drifted

    def devices(poll):
        return sorted(p.tags["device"] for p in poll if p.measurement == INFINIBAND)

    def gpus(poll):
        return [p.tags["index"] for p in poll if p.measurement == NVIDIA_SMI]

    assert devices(collected[1]) == ["mlx4_0", "mlx4_0", "mlx5_0", "mlx5_1"]
    assert devices(collected[2]) == ["mlx4_0", "mlx4_0", "mlx5_0"]
    assert gpus(collected[1]) == ["0", "1"] and gpus(collected[4]) == ["0"]
    # GPM has its second sample from the second poll on.
    assert "sm_active" in next(p for p in collected[1] if p.measurement == NVIDIA_SMI).fields
    xmit = [next(p for p in poll if p.tags.get("device") == "mlx5_0").fields["port_xmit_data"] for poll in collected]
    assert xmit == [near_wrap + 1000 * n for n in range(5)]  # 64-bit counters, read exactly
    healths = [p for poll in collected for p in poll if p.measurement == COLLECTOR_HEALTH]
    assert all(p.fields["up"] == 1 for p in healths)
    assert [r.getMessage() for r in caplog.records if "GPU 1" in r.getMessage()] == [
        "gpu: GPU 1 (GPU-5f0c3a1e-0000-4000-8000-000000000001) cannot be read: GPU is lost"
    ]
    assert nvml.shutdowns == 1  # closed once stopped


class SlowSource:
    """A source whose polls take longer than the agent's interval."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.closed = False

    async def collect(self, time_ns: int) -> list[Point]:
        await asyncio.sleep(self.seconds)
        return [Point(COLLECTOR_HEALTH, {"source": "slow", "target": "x"}, {"up": 1, "points": 0}, time_ns)]

    async def close(self) -> None:
        self.closed = True


async def test_a_poll_that_overruns_skips_ticks_and_stays_aligned(caplog):
    config = AgentConfig(host="x", interval_s=0.1, sources={})
    source = SlowSource(0.15)
    bus = InProcessBus()
    stop = asyncio.Event()
    collector = asyncio.create_task(collect_polls(bus, sources=1, polls=3, stop=stop))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="collector.agent"):
        await asyncio.wait_for(run_agent(config, bus, stop, handle_signals=False, sources=[source]), 10)
    await bus.close()
    stamps = [poll[0].time_ns for poll in await collector]
    assert all(stamp % 100_000_000 == 0 for stamp in stamps)
    assert all(b - a == 200_000_000 for a, b in zip(stamps, stamps[1:]))  # every other tick
    assert any("skipping 1 poll" in r.getMessage() for r in caplog.records)
    assert source.closed


# --- the process: signals -----------------------------------------------------------------

AGENT = [sys.executable, "-m", "collector.agent"]


def start_agent(config: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*AGENT, "--config", str(config), "--output", str(output), "--log-level", "INFO"],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_finishes_the_poll_flushes_and_exits_cleanly(tmp_path):
    config = write_config(tmp_path, {
        "host": "node1", "interval_s": 0.2,
        "sources": {"rdma": {"sysfs_root": str(ROCE_SYSFS)}, "ethtool": False, "gpu": False},
    })
    output = tmp_path / "out.lp"
    agent = start_agent(config, output)
    try:
        wait_for(lambda: output.exists() and output.read_text().count("source=rdma") >= 2)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=20)
    finally:
        agent.kill()
    assert agent.returncode == 0, stderr
    assert "SIGTERM: finishing the current poll" in stderr
    points = parse(output.read_text())  # complete lines only
    per_poll: dict[int, list[str]] = {}
    for point in points:
        per_poll.setdefault(point.time_ns, []).append(point.measurement)
    assert all(sorted(kinds) == [INFINIBAND] * 4 + [COLLECTOR_HEALTH] for kinds in per_poll.values())


class HangingExporter:
    """A DCGM exporter that answers after ``delay_s``: a poll that cannot finish quickly."""

    def __init__(self, delay_s: float) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay_s)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_second_signal_stops_at_once_while_a_poll_hangs(tmp_path):
    exporter = HangingExporter(delay_s=30)
    config = write_config(tmp_path, {
        "host": "node1", "interval_s": 0.2,
        "sources": {"rdma": False, "ethtool": False, "gpu": False, "jobs": False,
                    "dcgm": {"url": exporter.url, "timeout_s": 60}},
    })
    agent = start_agent(config, tmp_path / "out.lp")
    try:
        time.sleep(1.0)  # the first poll is under way and hangs
        agent.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert agent.poll() is None  # still finishing the poll
        agent.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = agent.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        agent.kill()
        exporter.close()
    assert agent.returncode == 130, stderr
    assert "second SIGINT: stopping now" in stderr
