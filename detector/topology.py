"""The cluster's wiring: which NIC serves which GPUs and plugs into which switch port.

The detector needs it to turn a job's GPUs into the links its traffic crosses. The
file format is the offline detect contract's (see ``docs/topology.md``)::

    hosts:
      node01:
        gpu_model: H100
        nics:
          mlx5_0: {switch: leaf01, port: swp1, netdev: eth0, gpus: [0, 1]}
    switches:
      leaf01:
        agent_host: 10.0.0.11          # optional: the SNMP agent_host tag, default the key
        uplinks: [swp51, {port: swp52, peer: spine01, peer_port: swp1}]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml


class TopologyError(ValueError):
    """The topology file is unreadable or inconsistent; the message names the key."""


@dataclass(frozen=True, slots=True)
class Nic:
    host: str
    device: str
    switch: str
    port: str
    netdev: str | None
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Uplink:
    port: str
    peer: str | None = None
    peer_port: str | None = None


@dataclass(slots=True)
class Host:
    name: str
    gpu_model: str
    nics: dict[str, Nic]


@dataclass(slots=True)
class Switch:
    name: str
    agent_host: str
    uplinks: list[Uplink] = field(default_factory=list)


@dataclass(slots=True)
class Topology:
    hosts: dict[str, Host]
    switches: dict[str, Switch]

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise TopologyError(f"{path}: cannot read topology: {error}") from error
        return cls.from_dict(document, source=str(path))

    @classmethod
    def from_dict(cls, document: Any, *, source: str = "<topology>") -> Topology:
        if not isinstance(document, dict):
            raise TopologyError(f"{source}: expected a mapping with 'hosts' and 'switches'")
        switches: dict[str, Switch] = {}
        for name, spec in (_mapping(document.get("switches") or {}, f"{source}: switches")).items():
            spec = spec or {}
            _mapping(spec, f"{source}: switches.{name}")
            uplinks = [
                _uplink(item, f"{source}: switches.{name}.uplinks[{index}]")
                for index, item in enumerate(spec.get("uplinks") or [])
            ]
            switches[str(name)] = Switch(str(name), str(spec.get("agent_host", name)), uplinks)
        for switch in list(switches.values()):
            for uplink in switch.uplinks:
                if uplink.peer is not None and uplink.peer not in switches:
                    switches[uplink.peer] = Switch(uplink.peer, uplink.peer)
        hosts: dict[str, Host] = {}
        for host_name, spec in _mapping(document.get("hosts"), f"{source}: hosts").items():
            host_name = str(host_name)
            where = f"{source}: hosts.{host_name}"
            _mapping(spec, where)
            nics = {}
            for device, nic in _mapping(spec.get("nics") or {}, f"{where}.nics").items():
                nic_where = f"{where}.nics.{device}"
                _mapping(nic, nic_where)
                for key in ("switch", "port"):
                    if key not in nic:
                        raise TopologyError(f"{nic_where}: missing key '{key}'")
                if str(nic["switch"]) not in switches:
                    switches[str(nic["switch"])] = Switch(str(nic["switch"]), str(nic["switch"]))
                gpus = nic.get("gpus") or []
                if not isinstance(gpus, list) or not all(isinstance(g, int) for g in gpus):
                    raise TopologyError(f"{nic_where}.gpus: expected a list of GPU indices")
                nics[str(device)] = Nic(
                    host_name, str(device), str(nic["switch"]), str(nic["port"]),
                    None if nic.get("netdev") is None else str(nic["netdev"]), tuple(gpus),
                )
            hosts[host_name] = Host(host_name, str(spec.get("gpu_model", "default")), nics)
        return cls(hosts, switches)

    def to_dict(self) -> dict[str, Any]:
        def uplink(item: Uplink) -> Any:
            if item.peer is None:
                return item.port
            return {"port": item.port, "peer": item.peer, "peer_port": item.peer_port}

        return {
            "hosts": {
                host.name: {
                    "gpu_model": host.gpu_model,
                    "nics": {
                        nic.device: {
                            "switch": nic.switch, "port": nic.port,
                            **({"netdev": nic.netdev} if nic.netdev else {}),
                            "gpus": list(nic.gpus),
                        }
                        for nic in host.nics.values()
                    },
                }
                for host in self.hosts.values()
            },
            "switches": {
                switch.name: {
                    **({"agent_host": switch.agent_host} if switch.agent_host != switch.name else {}),
                    "uplinks": [uplink(item) for item in switch.uplinks],
                }
                for switch in self.switches.values()
            },
        }

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))

    def link_id(self, switch: str, port: str) -> str:
        """The name a link goes by in results: ``<agent_host>:<ifName>``."""
        return f"{self.switches[switch].agent_host}:{port}"

    def nic_of_gpu(self, host: str, gpu: int) -> Nic | None:
        for nic in self.hosts[host].nics.values():
            if gpu in nic.gpus:
                return nic
        return None

    def nic_links(self) -> dict[tuple[str, str], str]:
        """(host, RDMA device) -> the link id of the switch port the NIC plugs into."""
        return {
            (nic.host, nic.device): self.link_id(nic.switch, nic.port)
            for host in self.hosts.values()
            for nic in host.nics.values()
        }

    def path_links(self, gpus: Iterable[tuple[str, int]]) -> set[str]:
        """Links that traffic among these GPUs crosses.

        Always the leaf ports of their NICs; when the GPUs sit behind more than one
        switch, also those switches' uplinks and the peer ports facing them.
        """
        links: set[str] = set()
        leaves: set[str] = set()
        for host, gpu in gpus:
            if host not in self.hosts:
                continue
            nic = self.nic_of_gpu(host, gpu)
            if nic is None:
                continue
            links.add(self.link_id(nic.switch, nic.port))
            leaves.add(nic.switch)
        if len(leaves) > 1:
            for leaf in leaves:
                for uplink in self.switches[leaf].uplinks:
                    links.add(self.link_id(leaf, uplink.port))
                    if uplink.peer is not None and uplink.peer_port is not None:
                        links.add(self.link_id(uplink.peer, uplink.peer_port))
        return links

    def switch_of_link(self) -> dict[str, str]:
        """Link id -> switch name, for totals per switch."""
        result = {}
        for switch in self.switches.values():
            for uplink in switch.uplinks:
                result[self.link_id(switch.name, uplink.port)] = switch.name
                if uplink.peer is not None and uplink.peer_port is not None:
                    result[self.link_id(uplink.peer, uplink.peer_port)] = uplink.peer
        for link in self.nic_links().values():
            agent_host = link.rsplit(":", 1)[0]
            result[link] = next(s.name for s in self.switches.values() if s.agent_host == agent_host)
        return result


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise TopologyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _uplink(item: Any, where: str) -> Uplink:
    if isinstance(item, str):
        return Uplink(item)
    if isinstance(item, dict) and "port" in item:
        peer = item.get("peer")
        peer_port = item.get("peer_port")
        return Uplink(str(item["port"]), None if peer is None else str(peer), None if peer_port is None else str(peer_port))
    raise TopologyError(f"{where}: expected a port name or {{port, peer, peer_port}}")
