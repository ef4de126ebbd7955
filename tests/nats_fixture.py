"""A 3-node NATS cluster on loopback with MQTT and clustered JetStream, for the distributed-broker test.

Each node (Debian's ``nats-server``) has its own ``server_name``, client,
cluster, monitoring and MQTT ports and JetStream store directory under the
test's tmp path; the nodes route to each other. NATS serves MQTT 3.1.1 and
keeps QoS 1 messages and sessions in JetStream, replicated across the nodes,
so a node can die without losing what it acknowledged.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from service_fixtures import free_port

__all__ = ["NatsCluster", "NatsNode"]


class NatsNode:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.client_port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = directory / "nats.log"

    def write_config(self, routes: list[int]) -> Path:
        config = self.directory / "nats.conf"
        route_list = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes)
        config.write_text(
            f"""server_name: {self.name}
listen: "127.0.0.1:{self.client_port}"
http: "127.0.0.1:{self.http_port}"
jetstream {{ store_dir: "{self.directory / 'jetstream'}" }}
cluster {{
  name: strandwatch-test
  listen: "127.0.0.1:{self.cluster_port}"
  routes: [{route_list}]
}}
mqtt {{
  listen: "127.0.0.1:{self.mqtt_port}"
  # Left alone, the node that creates the MQTT streams sizes them by the peers it knows then
  # (2 while the third is still joining): an R2 stream loses its quorum with either node.
  stream_replicas: 3
  consumer_replicas: 3
}}
"""
        )
        return config

    def start(self, binary: str, routes: list[int]) -> None:
        config = self.write_config(routes)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)

    def healthy(self) -> bool:
        """JetStream up, the cluster's meta leader known (NATS's /healthz) and routes to both peers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=0.5) as response:
                if response.status != 200:
                    return False
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/routez", timeout=0.5) as response:
                if json.loads(response.read())["num_routes"] < 2:
                    return False
            with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the node dies without a goodbye to its clients or peers."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class NatsCluster:
    def __init__(self, directory: Path, size: int = 3) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            pytest.fail("nats-server is not installed (apt-get install nats-server)")
        self.binary = binary
        self.nodes = [NatsNode(f"n{index + 1}", directory / f"n{index + 1}") for index in range(size)]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start(self.binary, [other.cluster_port for other in self.nodes if other is not node])
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats {node.name} exited: {node.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster did not become healthy: "
                                   + " | ".join(node.log_path.read_text()[-800:] for node in self.nodes))
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    cluster = NatsCluster(tmp_path / "nats")
    cluster.start()
    yield cluster
    cluster.stop()
