"""The simulated hosts' devices as strandwatch's real sources read them.

- :class:`SysfsWriter` keeps a ``/sys/class/infiniband`` tree per host up to date,
  so :class:`collector.sources.rdma.RdmaSource` reads it like a real host's;
- :class:`SimulatedGpuBackend` is a :class:`collector.sources.gpu.GpuBackend`;
- :class:`SimulatedEthtoolBackend` is a :class:`collector.sources.ethtool.EthtoolBackend`.

All read the model's current state: arrays that the model replaces (never edits)
each step, so a reader in another thread sees one step or the next, not a mix
within one counter.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from collector.sources.gpu import GpuSample
from collector.sources.rdma import INFINIBAND_CLASS, PortReading
from detector.simulator.cluster import nic_device, nic_netdev
from detector.simulator.model import ETHTOOL_STATS, HW_COUNTERS, SYSFS_COUNTERS, gpu_uuid

if TYPE_CHECKING:
    from detector.simulator.simulation import Simulation

PORT = "1"
STATE = "4: ACTIVE"
PHYS_STATE = "5: LinkUp"
LINK_LAYER = "Ethernet"
DRIVER = "mlx5_core"
HCA_TYPE = "MT4129"
"""ConnectX-7."""
FW_VERSION = "28.39.1002"
BOARD_ID = "MT_0000000838"
_RATE_NAMES = {100: "4X EDR", 200: "4X HDR", 400: "4X NDR", 800: "4X XDR"}
_TEMP_DIR = ".strandwatch-sim-tmp"
"""Beside ``class/`` under the sysfs root: same file system, never listed by the RDMA source."""


def rate_text(gbps: float) -> str:
    """``ports/1/rate`` as the kernel writes it: ``400 Gb/sec (4X NDR)``."""
    name = _RATE_NAMES.get(int(gbps))
    return f"{int(gbps)} Gb/sec ({name})" if name else f"{int(gbps)} Gb/sec"


def node_guid(host: str, device: str) -> str:
    digest = hashlib.sha256(f"{host}/{device}".encode()).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


def nic_counters(sim: Simulation, nic: int) -> dict[str, int]:
    """The counters the RDMA source reads for one NIC, in its order (counters/ then hw_counters/)."""
    state = sim.model.nic
    return {name: int(state[name][nic]) for name in _COUNTER_ORDER}


_COUNTER_ORDER = tuple(sorted(SYSFS_COUNTERS)) + tuple(sorted(set(HW_COUNTERS) - set(SYSFS_COUNTERS)))


def port_reading(sim: Simulation, host: int, rail: int) -> PortReading:
    """What :func:`collector.sources.rdma.read_device` returns for this NIC's port."""
    c = sim.cluster
    nic = c.nic(host, rail)
    return PortReading(
        device=nic_device(rail), port=PORT, link_layer=LINK_LAYER, netdev=nic_netdev(rail),
        state_id=4, state="ACTIVE", phys_state_id=5, phys_state="LinkUp",
        rate_gbps=float(int(c.link_gbps[nic])), counters=nic_counters(sim, nic),
    )


class SysfsWriter:
    """Writes one host's ``<root>/class/infiniband`` tree and keeps it current.

    Each file is written to a temporary file and renamed over the old one, so a
    concurrent reader sees the old number or the new one, never half of one. Only
    files whose value changed since the last write are rewritten.
    """

    def __init__(self, sim: Simulation, host: str, root: str | Path) -> None:
        if host not in sim.cluster.host_names:
            raise ValueError(f"write_sysfs: unknown host {host!r}; hosts are {sim.cluster.host_names[0]}.."
                             f"{sim.cluster.host_names[-1]}")
        self.sim = sim
        self.host = host
        self.host_index = sim.cluster.host_names.index(host)
        self.root = Path(root)
        self.class_dir = self.root / INFINIBAND_CLASS
        self._temp = str(self.root / _TEMP_DIR / f"{os.getpid()}-{id(self)}")
        self._written: dict[str, bytes] = {}
        # (counter name, NIC, file path) of every counter file, in a fixed order.
        self._files: list[tuple[str, int, str]] = []
        self._created = False

    def _put(self, path: str, data: bytes) -> None:
        if self._written.get(path) == data:
            return
        fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(self._temp, path)
        self._written[path] = data

    def _create(self) -> None:
        c = self.sim.cluster
        (self.root / _TEMP_DIR).mkdir(parents=True, exist_ok=True)
        for rail in range(c.rails):
            device = nic_device(rail)
            device_dir = self.class_dir / device
            port_dir = device_dir / "ports" / PORT
            for sub in ("counters", "hw_counters"):
                (port_dir / sub).mkdir(parents=True, exist_ok=True)
            net_dir = device_dir / "device" / "net" / nic_netdev(rail)
            net_dir.mkdir(parents=True, exist_ok=True)
            nic = c.nic(self.host_index, rail)
            for path, text in (
                (net_dir / "dev_port", "0"),
                (device_dir / "hca_type", HCA_TYPE),
                (device_dir / "fw_ver", FW_VERSION),
                (device_dir / "board_id", BOARD_ID),
                (device_dir / "node_guid", node_guid(self.host, device)),
                (port_dir / "state", STATE),
                (port_dir / "phys_state", PHYS_STATE),
                (port_dir / "link_layer", LINK_LAYER),
                (port_dir / "rate", rate_text(c.link_gbps[nic])),
            ):
                self._put(str(path), f"{text}\n".encode())
            for names, sub in ((SYSFS_COUNTERS, "counters"), (HW_COUNTERS, "hw_counters")):
                self._files.extend((name, nic, str(port_dir / sub / name)) for name in names)
        self._created = True

    def write(self) -> None:
        """Bring every counter file up to the simulation's current state."""
        if not self._created:
            self._create()
        state = self.sim.model.nic
        for name, nic, path in self._files:
            self._put(path, b"%d\n" % int(state[name][nic]))


class SimulatedGpuBackend:
    """The GPUs of one simulated host, sampled from the model's current gauges."""

    def __init__(self, sim: Simulation, host: str) -> None:
        if host not in sim.cluster.host_names:
            raise ValueError(f"gpu_backend: unknown host {host!r}")
        self.sim = sim
        self.host = host
        self.host_index = sim.cluster.host_names.index(host)

    def sample(self) -> list[GpuSample]:
        c = self.sim.cluster
        model = self.sim.config.model
        gauges = self.sim.model.gauges
        jobs = self.sim.jobs
        samples = []
        for index in range(c.gpus_per_host):
            g = self.host_index * c.gpus_per_host + index
            job = int(gauges.job[g])
            memory = float(gauges.memory_used_mib[g])
            processes = [(jobs[job].pid + index, memory)] if job >= 0 else []
            samples.append(GpuSample(
                index=index, uuid=gpu_uuid(self.host, index), name=model.name,
                utilization_gpu=float(gauges.utilization_gpu[g]),
                utilization_memory=float(gauges.utilization_memory[g]),
                sm_active=float(gauges.sm_active[g]), sm_occupancy=float(gauges.sm_occupancy[g]),
                memory_used_mib=memory, memory_total_mib=float(model.memory_total_mib),
                power_draw_w=float(gauges.power_w[g]), temperature_c=float(gauges.temperature_c[g]),
                pstate="P0", compute_mode="Default", processes=processes,
                clocks_sm_mhz=float(gauges.clocks_sm_mhz[g]), clocks_memory_mhz=float(model.memory_clock_mhz),
            ))
        return samples

    def close(self) -> None:
        """Nothing to release."""


class SimulatedEthtoolBackend:
    """``ethtool -S`` of the RoCE netdevs of one simulated host."""

    def __init__(self, sim: Simulation, host: str) -> None:
        if host not in sim.cluster.host_names:
            raise ValueError(f"ethtool_backend: unknown host {host!r}")
        self.sim = sim
        self.host = host
        self.host_index = sim.cluster.host_names.index(host)
        self._rails = {nic_netdev(rail): rail for rail in range(sim.cluster.rails)}

    def interfaces(self) -> list[str]:
        return list(self._rails)

    def _nic(self, ifname: str) -> int:
        rail = self._rails.get(ifname)
        if rail is None:
            raise OSError(errno.ENODEV, f"no interface {ifname!r} on simulated host {self.host}")
        return self.sim.cluster.nic(self.host_index, rail)

    def driver(self, ifname: str) -> str:
        self._nic(ifname)
        return DRIVER

    def stats(self, ifname: str) -> dict[str, int]:
        nic = self._nic(ifname)
        state = self.sim.model.ethtool
        return {name: int(state[name][nic]) for name in ETHTOOL_STATS}

    def close(self) -> None:
        """Nothing to release."""
