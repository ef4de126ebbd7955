"""``strandwatch collect snmp`` and ``strandwatch topology discover``, through their argparse entry points."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from collector.lineprotocol import parse
from collector.schema import COLLECTOR_HEALTH, INTERFACE
from collector.sources.snmp import cli
from detector.topology import Topology
from snmp_fixtures import (
    REPOSITORY,
    RelayProxy,
    free_udp_port,
    own_snmpsim,  # noqa: F401  (pytest fixture)
    switch_board,  # noqa: F401  (pytest fixture)
)


def collect(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_collect_snmp_arguments(parser)
    return cli.run_collect_snmp(parser.parse_args(list(argv)))


def write_config(path: Path, targets: list[dict], **section) -> Path:
    path.write_text(yaml.safe_dump({**section, "targets": targets}))
    return path


def test_once_prints_one_poll_as_line_protocol(own_snmpsim, tmp_path, capsys, monkeypatch):
    host, port = own_snmpsim.endpoint
    config = write_config(tmp_path / "snmp.yaml", [
        {"name": "onyx01", "host": host, "port": port, "community": "onyx-leaf"},
        {"name": "qfx01", "host": host, "port": port, "community_env": "SW_CLI_COMMUNITY"},
    ])
    monkeypatch.setenv("SW_CLI_COMMUNITY", "juniper-qfx")
    assert collect("--config", str(config), "--once", "--output", "-") == 0
    points = parse(capsys.readouterr().out)
    assert {(p.measurement, p.tags.get("agent_host") or p.tags["target"]) for p in points} == {
        (INTERFACE, "onyx01"), (INTERFACE, "qfx01"), (COLLECTOR_HEALTH, "onyx01"), (COLLECTOR_HEALTH, "qfx01"),
    }


def test_once_appends_to_a_file_and_fails_when_nobody_answers(tmp_path, capsys):
    dead = write_config(tmp_path / "dead.yaml", [
        {"name": "dead01", "host": "127.0.0.1", "port": free_udp_port(), "timeout": 0.1, "retries": 0,
         "deadline": 0.3},
    ])
    output = tmp_path / "out.lp"
    output.write_text("# earlier lines stay\n")
    assert collect("--config", str(dead), "--once", "--output", str(output)) == 1
    lines = output.read_text().splitlines()
    assert lines[0] == "# earlier lines stay" and lines[1].startswith("strandwatch_source,source=snmp,target=dead01 up=0i")


def test_bad_configuration_exits_2_with_the_reason(tmp_path, capsys):
    bad = write_config(tmp_path / "bad.yaml", [{"name": "a", "host": "h", "port": 70000}])
    assert collect("--config", str(bad), "--once") == 2
    assert "bad.yaml: targets[0] (a).port: must be an integer 1-65535" in capsys.readouterr().err


def daemon(config: Path) -> subprocess.Popen[str]:
    code = (
        "import argparse, sys\n"
        "from collector.sources.snmp import cli\n"
        "parser = argparse.ArgumentParser()\n"
        "cli.add_collect_snmp_arguments(parser)\n"
        f"sys.exit(cli.run_collect_snmp(parser.parse_args(['--config', {str(config)!r}])))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )


def health_lines(process: subprocess.Popen[str], count: int) -> list[str]:
    """Read the daemon's stdout until ``count`` health lines went by."""
    lines = []
    while sum(line.startswith("strandwatch_source") for line in lines) < count:
        line = process.stdout.readline()
        assert line, f"the daemon ended early: {process.stderr.read()}"
        lines.append(line)
    return lines


def test_daemon_polls_every_interval_and_finishes_the_poll_in_progress_on_a_signal(switch_board, tmp_path):
    _, agents = switch_board
    with RelayProxy(agents.endpoints["leaf01"], delay=0.3) as slow:
        config = write_config(tmp_path / "snmp.yaml", [
            {"name": "leaf01", "host": slow.endpoint[0], "port": slow.endpoint[1], "max_repetitions": 2},
        ], interval=0.2)
        process = daemon(config)
        try:
            health_lines(process, 2)
            time.sleep(0.2)  # inside a poll: each takes a few slow round trips
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 0
    # The poll the signal interrupted was finished and written, health line last.
    assert rest.splitlines()[-1].startswith("strandwatch_source,source=snmp,target=leaf01 up=1i")


def test_a_second_signal_stops_at_once(switch_board, tmp_path):
    _, agents = switch_board
    with RelayProxy(agents.endpoints["leaf01"], delay=2.0) as stuck:
        config = write_config(tmp_path / "snmp.yaml", [
            {"name": "leaf01", "host": stuck.endpoint[0], "port": stuck.endpoint[1], "timeout": 5, "deadline": 30},
        ])
        process = daemon(config)
        try:
            time.sleep(1.5)  # started, and waiting on the first answer
            process.send_signal(signal.SIGINT)
            time.sleep(0.1)
            stopped = time.monotonic()
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 130 and time.monotonic() - stopped < 1.5


def test_topology_discover_writes_a_topology_file(own_snmpsim, tmp_path):
    host, port = own_snmpsim.endpoint
    config = write_config(tmp_path / "snmp.yaml", [
        {"name": "leaf01", "host": host, "port": port, "community": "arista-leaf-0"},
        {"name": "spine01", "host": host, "port": port, "community": "cumulus-spine"},
    ])
    output = tmp_path / "topology.yaml"
    parser = argparse.ArgumentParser()
    cli.add_topology_discover_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--output", str(output), "--switch-pattern", "superspine*"])
    assert cli.run_topology_discover(args) == 0
    assert output.read_text().startswith("# Discovered from the LLDP tables of 2 of 2 switches")
    topology = Topology.load(output)
    assert topology.link_id("leaf01", "Ethernet49/1") == "leaf01:Ethernet49/1"
    assert [u.peer_port for u in topology.switches["leaf01"].uplinks] == ["swp1"]
    assert set(topology.hosts) == {"node01", "node02.cluster.local"}
