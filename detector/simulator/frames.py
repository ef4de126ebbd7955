"""The simulation's telemetry as wide frames, straight from the model's arrays.

:meth:`Simulation.points` builds every sample through the sources' own point
functions: right for tests and the demo, far too slow for a week of a large
cluster (a million Point objects per simulated minute at 1,024 GPUs).
:func:`simulated_frames` gives the same data in the shape
``collector.frames.points_to_frames`` gives it (``time``, tag columns, one
float64 or str column per field, rows sorted by tags then time) without
building points, for the detector's benchmarks.

It cannot drift from :meth:`Simulation.points`: the layout (tags, field names,
series order, every per-series constant such as ``ifAlias`` or
``memory_total``) is taken from ``points_to_frames(sim.points())`` at the first
interval of each call, and that interval's values from the arrays are checked
against it; a field the arrays do not give is a per-series constant, which
``tests/test_simulator_frames.py`` checks over a scenario with every event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection

import numpy as np
import pandas as pd

from collector.frames import points_to_frames
from collector.schema import ETHTOOL, INFINIBAND, INTERFACE, NVIDIA_SMI
from collector.sources.snmp import ifmib
from detector.simulator.cluster import nic_device, nic_netdev
from detector.simulator.model import SWITCH_COLUMNS

if TYPE_CHECKING:
    from detector.simulator.simulation import Simulation

FRAME_MEASUREMENTS = (INTERFACE, INFINIBAND, ETHTOOL, NVIDIA_SMI)
"""What :func:`simulated_frames` gives: the data contract's measurements (not ``nvidia_smi_process``)."""

_COUNTER32 = frozenset({"ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"})
_MASK32 = np.uint64(0xFFFFFFFF)
_GPU_FIELDS: dict[str, tuple[str, bool]] = {
    # nvidia_smi field: (GpuGauges attribute, rounded to an integer as gpu_point does)
    "utilization_gpu": ("utilization_gpu", True),
    "utilization_memory": ("utilization_memory", True),
    "temperature_gpu": ("temperature_c", True),
    "power_draw": ("power_w", False),
    "sm_active": ("sm_active", False),
    "sm_occupancy": ("sm_occupancy", False),
    "clocks_current_sm": ("clocks_sm_mhz", True),
    "memory_used": ("memory_used_mib", True),
}


class FramesDriftError(RuntimeError):
    """The array path disagrees with :meth:`Simulation.points`; the message names the field."""


def simulated_frames(
    sim: Simulation, steps: int, measurements: Collection[str] = FRAME_MEASUREMENTS,
) -> dict[str, pd.DataFrame]:
    """Advance ``sim`` by ``steps`` intervals; the frames of the samples read after each one.

    Equal to ``points_to_frames`` of the points :meth:`Simulation.points` gives
    after each of those steps, restricted to ``measurements``.
    """
    if steps < 1:
        raise ValueError(f"simulated_frames: steps must be >= 1, got {steps}")
    unknown = set(measurements) - set(FRAME_MEASUREMENTS)
    if unknown:
        raise ValueError(f"simulated_frames: unknown measurements {sorted(unknown)}; known: {FRAME_MEASUREMENTS}")
    readers = {m: _READERS[m] for m in FRAME_MEASUREMENTS if m in measurements}
    times = np.empty(steps, dtype=np.int64)
    times[0] = sim.step()
    templates = {m: frame for m, frame in points_to_frames(sim.points(times[0])).items() if m in readers}
    layouts = {m: _Layout(sim, m, templates[m], readers[m], steps) for m in templates}
    for layout in layouts.values():
        layout.record(0)
        layout.check_first()
    for step in range(1, steps):
        times[step] = sim.step()
        for layout in layouts.values():
            layout.record(step)
    return {m: layout.frame(times) for m, layout in layouts.items()}


class _Layout:
    """One measurement: the template frame of one instant and the dynamic fields recorded each step."""

    def __init__(self, sim: Simulation, measurement: str, template: pd.DataFrame,
                 reader: Callable[[Simulation], dict[str, np.ndarray]], steps: int) -> None:
        self.sim = sim
        self.measurement = measurement
        self.template = template.reset_index(drop=True)
        self.reader = reader
        self.series = _SERIES_INDEX[measurement](sim, self.template)
        available = reader(sim)
        self.dynamic = [c for c in self.template.columns if c in available]
        self.values = {name: np.empty((steps, len(self.series))) for name in self.dynamic}

    def record(self, step: int) -> None:
        current = self.reader(self.sim)
        for name in self.dynamic:
            self.values[name][step] = current[name][self.series]

    def check_first(self) -> None:
        for name in self.dynamic:
            expected = self.template[name].to_numpy(dtype=float)
            got = self.values[name][0]
            if not np.array_equal(expected, got, equal_nan=True):
                raise FramesDriftError(f"simulated_frames: measurement '{self.measurement}' field '{name}' "
                                       "differs from Simulation.points()")

    def frame(self, times: np.ndarray) -> pd.DataFrame:
        steps, rows = len(times), len(self.template)
        constant = [c for c in self.template.columns if c != "time" and c not in self.values]
        frame = self.template[constant].take(np.repeat(np.arange(rows), steps)).reset_index(drop=True)
        frame.insert(0, "time", pd.DatetimeIndex(np.tile(times, rows).view("datetime64[ns]")).tz_localize("UTC"))
        for name, block in self.values.items():
            frame[name] = block.T.ravel()
        return frame[list(self.template.columns)]


# The model's arrays per measurement, over the model's own series order ------------------------
def _interface_values(sim: Simulation) -> dict[str, np.ndarray]:
    model = sim.model
    counters = model.switch_counters
    flat = counters.reshape(-1, counters.shape[-1])
    values = {}
    for column, name in enumerate(SWITCH_COLUMNS):
        if name in ifmib.DYNAMIC_COLUMNS:
            raw = flat[:, column]
            values[name] = (raw & _MASK32 if name in _COUNTER32 else raw).astype(float)
    values["ifOperStatus"] = model.oper_status.ravel().astype(float)
    values["sysUpTime"] = np.repeat(model.uptime_ticks & _MASK32, counters.shape[1]).astype(float)
    return values


def _nic_values(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(array).astype(float) for name, array in state.items()}


def _gpu_values(sim: Simulation) -> dict[str, np.ndarray]:
    gauges = sim.model.gauges
    values = {}
    for field, (attribute, rounded) in _GPU_FIELDS.items():
        array = np.asarray(getattr(gauges, attribute), dtype=float)
        values[field] = np.round(array) if rounded else array
    return values


_READERS: dict[str, Callable[[Simulation], dict[str, np.ndarray]]] = {
    INTERFACE: _interface_values,
    INFINIBAND: lambda sim: _nic_values(sim.model.nic),
    ETHTOOL: lambda sim: _nic_values(sim.model.ethtool),
    NVIDIA_SMI: _gpu_values,
}


# Which model series each template row is ------------------------------------------------------
def _lookup(keys: dict[tuple[str, str], int], rows: pd.DataFrame, measurement: str) -> np.ndarray:
    try:
        return np.array([keys[key] for key in zip(*(rows[c].astype(str) for c in rows.columns))], dtype=np.int64)
    except KeyError as error:
        raise FramesDriftError(f"simulated_frames: measurement '{measurement}' has a series the model "
                               f"does not know: {error.args[0]}") from None


def _interface_series(sim: Simulation, template: pd.DataFrame) -> np.ndarray:
    specs = sim.cluster.switch_specs
    width = sim.model.switch_counters.shape[1]
    keys = {(spec.name, port.if_name): s * width + p for s, spec in enumerate(specs) for p, port in enumerate(spec.ports)}
    return _lookup(keys, template[["agent_host", "ifName"]], INTERFACE)


def _nic_keys(sim: Simulation, name: Callable[[int], str]) -> dict[tuple[str, str], int]:
    c = sim.cluster
    return {(host, name(rail)): c.nic(h, rail) for h, host in enumerate(c.host_names) for rail in range(c.rails)}


def _gpu_series(sim: Simulation, template: pd.DataFrame) -> np.ndarray:
    c = sim.cluster
    keys = {(host, str(g)): h * c.gpus_per_host + g for h, host in enumerate(c.host_names)
            for g in range(c.gpus_per_host)}
    return _lookup(keys, template[["host", "index"]], NVIDIA_SMI)


_SERIES_INDEX: dict[str, Callable[[Simulation, pd.DataFrame], np.ndarray]] = {
    INTERFACE: _interface_series,
    INFINIBAND: lambda sim, t: _lookup(_nic_keys(sim, nic_device), t[["host", "device"]], INFINIBAND),
    ETHTOOL: lambda sim, t: _lookup(_nic_keys(sim, nic_netdev), t[["host", "interface"]], ETHTOOL),
    NVIDIA_SMI: _gpu_series,
}
