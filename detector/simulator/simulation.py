"""The simulator's public face: step a scenario, read it as points or through device faces."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Collection

import numpy as np
import pandas as pd

from collector.schema import INTERFACE, FieldValue, Point
from collector.sources.ethtool import EthtoolSource
from collector.sources.gpu import GpuSample, gpu_point, gpu_processes, mig_point, process_point
from collector.sources.rdma import port_point
from collector.sources.snmp import ifmib
from detector.jobs import Allocation, dump_jobs
from detector.simulator.cluster import Cluster
from detector.simulator.config import SimConfig
from detector.simulator.devices import SimulatedEthtoolBackend, SimulatedGpuBackend, SysfsWriter, port_reading
from detector.simulator.frames import FRAME_MEASUREMENTS, simulated_frames
from detector.simulator.model import SWITCH_COLUMNS, FabricModel
from detector.simulator.schedule import plan
from detector.simulator.snmp_agent import CounterBoard
from detector.simulator.truth import GroundTruth
from detector.topology import Topology

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COUNTER32 = frozenset({"ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"})
_COLUMN = {name: index for index, name in enumerate(SWITCH_COLUMNS)}


def _time_ns(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


class Simulation:
    """One seeded scenario of the simulated cluster, advanced one interval per :meth:`step`.

    ``topology`` and ``allocations`` describe the cluster and its jobs as the
    detector's input files would; ``ground_truth`` grows with every step.
    Device faces: :attr:`board` (the switches' SNMP counters, created on first
    use in shared memory for :class:`SimulatedSwitchAgents`), :meth:`write_sysfs`,
    :meth:`gpu_backend` and :meth:`ethtool_backend`; :meth:`points` gives the same
    data directly as the sources' points. Close it (or use ``with``) to free
    the board's shared memory.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config = config or SimConfig()
        plan_seed, noise_seed, offset_seed = _seeds(config.seed)
        self.cluster = Cluster(config)
        self.topology: Topology = self.cluster.topology
        scenario = plan(self.cluster, config, plan_seed)
        self.jobs = scenario.jobs
        self.events = scenario.events
        self.model = FabricModel(self.cluster, config, scenario, noise_seed, offset_seed)
        self.ground_truth = GroundTruth(config, self.cluster, self.jobs, self.events, self.model.truth)
        self.allocations = self._allocations()
        self._step = 0
        self._start_ns = _time_ns(config.start)
        self._interval_ns = round(config.interval_s * 1e9)
        self._board: CounterBoard | None = None
        self._sysfs: dict[tuple[str, str], SysfsWriter] = {}
        self._ethtool_sources: dict[str, EthtoolSource] = {}

    def _allocations(self) -> list[Allocation]:
        dt = timedelta(seconds=self.config.interval_s)
        start = self.config.start
        return [
            Allocation(job.name, self.cluster.host_names[host], job.gpus, start + job.start_step * dt,
                       None if job.end_step is None else start + job.end_step * dt)
            for job in self.jobs for host in sorted(job.hosts)
        ]

    # Time ------------------------------------------------------------------------
    @property
    def steps_done(self) -> int:
        return self._step

    @property
    def finished(self) -> bool:
        return self._step >= self.config.steps

    @property
    def time_ns(self) -> int:
        """The simulated clock: the end of the last interval simulated (the start before any)."""
        return self._start_ns + self._step * self._interval_ns

    def step(self) -> int:
        """Simulate the next interval; returns the time (ns) at its end, when collectors read."""
        if self.finished:
            raise RuntimeError(f"the scenario has run all its {self.config.steps} intervals")
        self.model.advance(self._step)
        self._step += 1
        return self.time_ns

    def drop_ground_truth(self) -> None:
        """Forget the ground truth recorded so far: it grows with every step, and a long run that is
        never evaluated (the scale benchmark's week) need not hold it."""
        self.model.truth.clear()

    # Device faces ------------------------------------------------------------------
    @property
    def board(self) -> CounterBoard:
        """The switches' counters in shared memory, kept current by every later step."""
        if self._board is None:
            board = CounterBoard(self.cluster.switch_specs)
            model = self.model
            board.counters[:] = model.switch_counters
            board.uptime_ticks[:] = model.uptime_ticks
            board.oper_status[:] = model.oper_status
            model.switch_counters, model.uptime_ticks, model.oper_status = (
                board.counters, board.uptime_ticks, board.oper_status)
            self._board = board
        return self._board

    def write_sysfs(self, host: str, root: str | Path) -> None:
        """Write (or bring up to date) ``<root>/class/infiniband`` of ``host``."""
        key = (host, str(root))
        writer = self._sysfs.get(key)
        if writer is None:
            writer = self._sysfs[key] = SysfsWriter(self, host, root)
        writer.write()

    def gpu_backend(self, host: str) -> SimulatedGpuBackend:
        return SimulatedGpuBackend(self, host)

    def ethtool_backend(self, host: str) -> SimulatedEthtoolBackend:
        return SimulatedEthtoolBackend(self, host)

    # Points --------------------------------------------------------------------------
    def frames(self, steps: int, measurements: Collection[str] = FRAME_MEASUREMENTS) -> dict[str, pd.DataFrame]:
        """Advance ``steps`` intervals; the wide frames of what the sources read after each one.

        The same as ``collector.frames.points_to_frames`` of :meth:`points` after
        every step (for ``interface``, ``infiniband``, ``ethtool`` and
        ``nvidia_smi``), built from the model's arrays without making points:
        a week of 1,024 GPUs at 10 s in minutes. See :mod:`detector.simulator.frames`.
        """
        return simulated_frames(self, steps, measurements)

    def points(self, time_ns: int | None = None) -> list[Point]:
        """Everything strandwatch's sources would read from the devices now, as their points.

        ``interface`` points as the SNMP source makes them (Counter32 columns and
        sysUpTime modulo 2^32), ``infiniband``, ``ethtool`` (the source's default
        counter filter), ``nvidia_smi`` and ``nvidia_smi_process`` through the
        sources' own point builders.
        Health points (``strandwatch_source``) are left out: they time real polls.
        """
        stamp = self.time_ns if time_ns is None else time_ns
        points = self._interface_points(stamp)
        c = self.cluster
        for h, host in enumerate(c.host_names):
            for rail in range(c.rails):
                points.append(port_point(host, port_reading(self, h, rail), stamp))
        for host in c.host_names:
            source = self._ethtool_sources.get(host)
            if source is None:
                source = self._ethtool_sources[host] = EthtoolSource(host, self.ethtool_backend(host))
            points.extend(source.read(stamp))
        for host in c.host_names:
            points.extend(_gpu_points(host, self.gpu_backend(host).sample(), stamp))
        return points

    def _interface_points(self, stamp: int) -> list[Point]:
        model = self.model
        counters = model.switch_counters.tolist()
        oper = model.oper_status.tolist()
        uptime = [int(value) & 0xFFFFFFFF for value in model.uptime_ticks.tolist()]
        points = []
        for s, spec in enumerate(self.cluster.switch_specs):
            for p, port in enumerate(spec.ports):
                values = counters[s][p]
                fields: dict[str, FieldValue] = {"ifAlias": port.if_alias, "ifHighSpeed": port.speed_mbps}
                for column in ifmib.DYNAMIC_COLUMNS:
                    if column == "ifOperStatus":
                        fields[column] = oper[s][p]
                    else:
                        value = values[_COLUMN[column]]
                        fields[column] = value & 0xFFFFFFFF if column in _COUNTER32 else value
                fields["sysUpTime"] = uptime[s]
                tags = {"agent_host": spec.name, "ifName": port.if_name, "ifIndex": str(port.if_index)}
                points.append(Point(INTERFACE, tags, fields, stamp))
        return points

    # Export and cleanup -------------------------------------------------------------
    def export(self, directory: str | Path) -> dict[str, Path]:
        """Write ground_truth.json, ground_truth.csv, topology.yaml and jobs.csv into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "ground_truth": directory / "ground_truth.json",
            "intervals": directory / "ground_truth.csv",
            "topology": directory / "topology.yaml",
            "jobs": directory / "jobs.csv",
        }
        self.ground_truth.write_json(paths["ground_truth"])
        self.ground_truth.write_csv(paths["intervals"])
        self.topology.dump(paths["topology"])
        dump_jobs(self.allocations, paths["jobs"])
        return paths

    def close(self) -> None:
        """Free the board's shared memory (if one was made); the simulation keeps its last state."""
        if self._board is not None:
            model = self.model
            model.switch_counters = model.switch_counters.copy()
            model.uptime_ticks = model.uptime_ticks.copy()
            model.oper_status = model.oper_status.copy()
            board, self._board = self._board, None
            board.close()
            board.unlink()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _gpu_points(host: str, samples: list[GpuSample], stamp: int) -> list[Point]:
    """The points :meth:`GpuSource.collect` makes of these samples, in its order."""
    points = []
    for sample in samples:
        points.append(gpu_point(host, sample, stamp))
        points.extend(mig_point(host, sample, mig, stamp) for mig in sample.mig)
    points.extend(process_point(host, process, stamp) for sample in samples for process in gpu_processes(sample))
    return points


def _seeds(seed: int) -> list[np.random.Generator]:
    """Independent generators for the plan, the per-step noise and the initial counter values."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3)]


def simulate(config: SimConfig | None = None) -> tuple[list[Point], Simulation]:
    """Run a whole scenario without sockets: the points at the start and after every interval."""
    sim = Simulation(config)
    points = sim.points()
    while not sim.finished:
        sim.step()
        points.extend(sim.points())
    return points, sim
