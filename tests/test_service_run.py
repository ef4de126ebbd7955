"""``strandwatch run``: the all-in-one service polls real SNMP agents into the store, serves
its health endpoints, and on SIGTERM stores everything it polled before it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import yaml

from collector.store import EmbeddedStore
from detector.simulator import SimConfig, Simulation
from detector.simulator.snmp_agent import SimulatedSwitchAgents
from service_fixtures import free_port, http_get

ROOT = Path(__file__).resolve().parents[1]



def test_run_polls_stores_detects_and_drains_on_sigterm(tmp_path: Path) -> None:
    health_port = free_port()
    with Simulation(SimConfig(seed=1, duration=timedelta(hours=1))) as simulation, \
            SimulatedSwitchAgents(simulation.board) as agents:
        exported = simulation.export(tmp_path / "scenario")
        switches = set(agents.endpoints)
        config = {
            "site": "test",
            "interval_s": 1,
            "health_address": f"127.0.0.1:{health_port}",
            "store": {"path": str(tmp_path / "metrics.db"), "rollups": []},
            "snmp": {"targets": [{"name": name, "host": host, "port": port, "timeout": 1, "retries": 0}
                                 for name, (host, port) in agents.endpoints.items()]},
            "detector": {"topology": str(exported["topology"]), "jobs": str(exported["jobs"]),
                         "interval_s": 1, "state_path": str(tmp_path / "detector-state.json")},
        }
        config_path = tmp_path / "strandwatch.yaml"
        config_path.write_text(yaml.safe_dump(config))
        service = subprocess.Popen(
            [sys.executable, "-m", "detector.cli", "--log-level", "INFO", "run", "--config", str(config_path)],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 30
            metrics = ""
            while time.monotonic() < deadline:
                time.sleep(0.5)
                status, metrics = http_get(f"http://127.0.0.1:{health_port}/metrics")
                if 'strandwatch_polls_total{source="snmp"' in metrics and 'result="ok"' in metrics:
                    break
            assert 'strandwatch_polls_total{source="snmp"' in metrics, metrics[-2000:]
            assert http_get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
            status, body = http_get(f"http://127.0.0.1:{health_port}/readyz")
            assert status == 200, body
            state = tmp_path / "detector-state.json"
            while not state.exists() and time.monotonic() < deadline + 30:
                time.sleep(0.2)
            service.send_signal(signal.SIGTERM)
            output, _ = service.communicate(timeout=30)
        finally:
            if service.poll() is None:
                service.kill()
        assert service.returncode == 0, output[-3000:]

    published = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith('strandwatch_points_out_total{stage="published"}'))
    with EmbeddedStore(tmp_path / "metrics.db", read_only=True) as store:
        interfaces = store.read("interface")
        health = store.read("strandwatch_source")
    assert set(interfaces["agent_host"]) == switches
    assert len(interfaces) + len(health) >= published, "every point published before the scrape was stored"
    assert (health["up"] == 1).all()
    assert json.loads((tmp_path / "detector-state.json").read_text())
