"""The simulated cluster's wiring as index arrays, plus the Topology and SwitchSpecs it implies.

Everything the per-step model touches is an integer index into numpy arrays:

- host ``h`` (0..H-1), its leaf ``host_leaf[h]``;
- NIC ``n = h * R + r`` (rail ``r``), GPU ``g = h * G + i``;
- physical link ``k``: first the host links (link ``n`` joins NIC ``n`` to its
  leaf), then the uplinks (``uplink(leaf, u)``: leaf port ``u`` to spine
  ``u % spines``), then one storage link per spine;
- directed link ``2 * k + d``: ``d = UP`` away from the hosts (NIC to leaf,
  leaf to spine, spine to storage), ``d = DOWN`` toward them. ``null_dl`` pads
  paths and has infinite capacity;
- switch port ``q``: its switch and position on the CounterBoard, its link, and
  which directed link it transmits (``port_tx_dl``) and receives (``port_rx_dl``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.simulator.config import SimConfig
from detector.simulator.snmp_agent import PortSpec, SwitchSpec
from detector.topology import Host, Nic, Switch, Topology, Uplink

UP = 0
DOWN = 1

HOST_LINK, UPLINK, STORAGE_LINK = 0, 1, 2

IF_INDEX_OFFSET = 3
"""ifIndex of a switch's first front-panel port: 1 and 2 go to lo and the management port, as on Cumulus."""


def nic_device(rail: int) -> str:
    return f"mlx5_{rail}"


def nic_netdev(rail: int) -> str:
    return f"ens{rail + 1}np0"


@dataclass(frozen=True, slots=True)
class PortIndex:
    """Where one switch port sits: board position, its link, what it sends and receives."""

    switch: int
    position: int
    link: int
    tx_dl: int
    rx_dl: int


class Cluster:
    """Static wiring of one simulated cluster (see the module docstring for the indices)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        H, R, G = config.hosts, config.nics_per_host, config.gpus_per_host
        L, S, U = config.leaves, config.spines, config.uplinks_per_leaf
        self.n_hosts, self.rails, self.gpus_per_host = H, R, G
        self.n_leaves, self.n_spines, self.uplinks_per_leaf = L, S, U
        self.n_nics = H * R
        self.n_gpus = H * G
        self.host_names = [f"node{h + 1:0{max(2, len(str(H)))}d}" for h in range(H)]
        self.leaf_names = [f"leaf{l + 1:02d}" for l in range(L)]
        self.spine_names = [f"spine{s + 1:02d}" for s in range(S)]
        self.host_leaf = np.array([h * L // H for h in range(H)], dtype=np.int64)
        self.nic_host = np.repeat(np.arange(H), R)
        self.nic_rail = np.tile(np.arange(R), H)
        self.gpu_host = np.repeat(np.arange(H), G)
        self.gpu_local = np.tile(np.arange(G), H)
        self.gpu_rail = self.gpu_local * R // G
        self.gpu_nic = self.gpu_host * R + self.gpu_rail

        self.first_uplink = H * R
        self.first_storage = self.first_uplink + L * U
        self.n_links = self.first_storage + S
        self.link_kind = np.zeros(self.n_links, dtype=np.int8)
        self.link_kind[self.first_uplink:self.first_storage] = UPLINK
        self.link_kind[self.first_storage:] = STORAGE_LINK
        gbps = np.empty(self.n_links)
        gbps[: self.first_uplink] = config.host_link_gbps
        gbps[self.first_uplink:self.first_storage] = config.uplink_gbps
        gbps[self.first_storage:] = config.storage_link_gbps
        self.link_gbps = gbps
        self.n_dl = 2 * self.n_links
        self.null_dl = self.n_dl
        capacity = np.repeat(gbps * 1e9 / 8, 2)
        self.dl_capacity = np.append(capacity, np.inf)
        """Bytes per second of each directed link, plus the null link."""

        self._build_switches()
        self.topology = self._build_topology()

    # Index helpers -----------------------------------------------------------------
    def nic(self, host: int, rail: int) -> int:
        return host * self.rails + rail

    def uplink(self, leaf: int, u: int) -> int:
        return self.first_uplink + leaf * self.uplinks_per_leaf + u

    def storage_link(self, spine: int) -> int:
        return self.first_storage + spine

    def uplink_spine(self, u: int) -> int:
        return u % self.n_spines

    @staticmethod
    def dl(link: int | np.ndarray, direction: int) -> int | np.ndarray:
        return 2 * link + direction

    def hosts_of_leaf(self, leaf: int) -> list[int]:
        return [h for h in range(self.n_hosts) if self.host_leaf[h] == leaf]

    # Switches ------------------------------------------------------------------
    def _build_switches(self) -> None:
        """SwitchSpecs (leaves, then spines) and the port index arrays behind them.

        A leaf's ports are its host ports (host by host, rail by rail), then its
        uplinks; a spine's are its leaf-facing ports (leaf by leaf), then storage.
        Ports are named swp1, swp2, ... in that order.
        """
        self.link_port_names: list[list[tuple[str, str]]] = [[] for _ in range(self.n_links)]
        """For each link, the (switch, ifName) of each switch port on it: leaf side first."""
        # Per switch: (link, tx_dl, rx_dl) of each port in order.
        layout: list[list[tuple[int, int, int]]] = []
        spine_layout: list[list[tuple[int, int, int]]] = [[] for _ in range(self.n_spines)]
        for leaf in range(self.n_leaves):
            entries = []
            for host in self.hosts_of_leaf(leaf):
                for rail in range(self.rails):
                    link = self.nic(host, rail)
                    entries.append((link, self.dl(link, DOWN), self.dl(link, UP)))
            for u in range(self.uplinks_per_leaf):
                link = self.uplink(leaf, u)
                entries.append((link, self.dl(link, UP), self.dl(link, DOWN)))
                spine_layout[self.uplink_spine(u)].append((link, self.dl(link, DOWN), self.dl(link, UP)))
            layout.append(entries)
        for spine in range(self.n_spines):
            link = self.storage_link(spine)
            layout.append(spine_layout[spine] + [(link, self.dl(link, UP), self.dl(link, DOWN))])
        for switch, entries in enumerate(layout):
            for position, (link, _, _) in enumerate(entries):
                self.link_port_names[link].append((self.switch_names[switch], f"swp{position + 1}"))

        specs, ports = [], []
        for switch, entries in enumerate(layout):
            port_specs = []
            for position, (link, tx_dl, rx_dl) in enumerate(entries):
                ports.append(PortIndex(switch, position, link, tx_dl, rx_dl))
                port_specs.append(PortSpec(position + IF_INDEX_OFFSET, f"swp{position + 1}",
                                           self._alias(link, self.switch_names[switch]),
                                           int(self.link_gbps[link]) * 1000))
            specs.append(SwitchSpec(self.switch_names[switch], port_specs))
        self.switch_specs = specs
        self.ports = ports
        self.port_switch = np.array([p.switch for p in ports], dtype=np.int64)
        self.port_position = np.array([p.position for p in ports], dtype=np.int64)
        self.port_link = np.array([p.link for p in ports], dtype=np.int64)
        self.port_tx_dl = np.array([p.tx_dl for p in ports], dtype=np.int64)
        self.port_rx_dl = np.array([p.rx_dl for p in ports], dtype=np.int64)

    @property
    def switch_names(self) -> list[str]:
        return self.leaf_names + self.spine_names

    def _alias(self, link: int, switch: str) -> str:
        """ifAlias: what is at the other end of the port."""
        kind = self.link_kind[link]
        if kind == HOST_LINK:
            return f"{self.host_names[int(self.nic_host[link])]}:{nic_device(int(self.nic_rail[link]))}"
        if kind == STORAGE_LINK:
            return "storage"
        (leaf, leaf_port), (spine, spine_port) = self.link_port_names[link]
        return f"{spine}:{spine_port}" if switch == leaf else f"{leaf}:{leaf_port}"

    # Link ids -----------------------------------------------------------------
    def link_ids(self, link: int) -> tuple[str, ...]:
        """Result names of a physical link: its leaf port for a host link, both ends of an uplink."""
        return tuple(f"{switch}:{port}" for switch, port in self.link_port_names[link])

    # Topology ------------------------------------------------------------------
    def _build_topology(self) -> Topology:
        hosts = {}
        for h, host_name in enumerate(self.host_names):
            leaf = int(self.host_leaf[h])
            nics = {}
            for rail in range(self.rails):
                gpus = tuple(int(i) for i in range(self.gpus_per_host) if i * self.rails // self.gpus_per_host == rail)
                _, port = self.link_port_names[self.nic(h, rail)][0]
                nics[nic_device(rail)] = Nic(host_name, nic_device(rail), self.leaf_names[leaf], port,
                                             nic_netdev(rail), gpus)
            hosts[host_name] = Host(host_name, self.config.gpu_model, nics)
        switches = {}
        for leaf, leaf_name in enumerate(self.leaf_names):
            uplinks = []
            for u in range(self.uplinks_per_leaf):
                (_, port), (spine, spine_port) = self.link_port_names[self.uplink(leaf, u)]
                uplinks.append(Uplink(port, spine, spine_port))
            switches[leaf_name] = Switch(leaf_name, leaf_name, uplinks)
        for spine_name in self.spine_names:
            switches[spine_name] = Switch(spine_name, spine_name, [])
        return Topology(hosts, switches)
