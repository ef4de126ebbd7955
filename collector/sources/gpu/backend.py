"""The seam between the GPU source and whatever reads the GPUs.

:class:`NvmlBackend` reads real GPUs through NVML; the fabric simulator
implements :class:`GpuBackend` for simulated ones. A backend only samples; the
source turns samples into ``nvidia_smi`` points, so both paths give the same
points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class GpuSample:
    """One GPU at one moment, in nvidia-smi's units.

    ``utilization_gpu``: % of the last sample period in which any kernel ran
    (can read 100 while a job only spins in a collective). ``utilization_memory``:
    % of time device memory was read or written. ``sm_active``: % of SMs busy,
    averaged over the time since the previous sample (NVML GPM on Hopper and
    newer, DCGM field 1002); ``sm_occupancy``: resident warps as % of the
    maximum (DCGM 1003). Memory in MiB, power in W, temperature in degrees C,
    ``pstate`` like ``"P0"``, ``compute_mode`` as nvidia-smi spells it
    (``"Default"``, ``"Exclusive_Process"``, ``"Prohibited"``). ``None`` where the
    GPU does not report the value (utilization under MIG, power on some boards,
    SM metrics without GPM). ``processes``: ``(pid, used_memory_mib)`` of each
    compute process, memory ``None`` where the driver hides it.
    """

    index: int
    uuid: str
    name: str
    utilization_gpu: float | None
    utilization_memory: float | None
    sm_active: float | None
    sm_occupancy: float | None
    memory_used_mib: float
    memory_total_mib: float
    power_draw_w: float | None
    temperature_c: float | None
    pstate: str
    compute_mode: str
    processes: list[tuple[int, float | None]] = field(default_factory=list)


@runtime_checkable
class GpuBackend(Protocol):
    """Reads every GPU of one host.

    ``sample()`` returns one :class:`GpuSample` per GPU that could be read, in
    index order, and an empty list on a host without GPUs. It blocks (the source
    runs it in a worker thread) and must not raise for a GPU that is missing or
    lost: leave that GPU out. ``close()`` releases the library; ``sample()`` is
    not called after it.
    """

    def sample(self) -> list[GpuSample]: ...

    def close(self) -> None: ...
