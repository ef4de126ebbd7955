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
class MigSample:
    """One MIG device (a compute instance inside a GPU instance) of a GPU in MIG mode.

    ``gpu_instance_id`` and ``compute_instance_id`` as NVML and ``nvidia-smi``
    number them; ``uuid`` is the instance's own ``MIG-...`` UUID; ``profile`` the
    slice, like ``"1g.10gb"`` (``""`` if unknown). Memory is the GPU instance's,
    in MiB. ``sm_active``/``sm_occupancy`` (%) come from GPM per GPU instance,
    since NVML's utilization rates do not exist under MIG. ``processes`` as in
    :class:`GpuSample`.
    """

    gpu_instance_id: int
    compute_instance_id: int
    uuid: str
    profile: str
    memory_used_mib: float
    memory_total_mib: float
    sm_active: float | None = None
    sm_occupancy: float | None = None
    processes: list[tuple[int, float | None]] = field(default_factory=list)


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
    compute process, memory ``None`` where the driver hides it; on a GPU in MIG
    mode they are listed per instance in ``mig`` instead.

    The rest is optional for a backend (``None`` where unknown): current SM and
    memory clocks in MHz; ``xid_errors``, the XID error events counted since the
    backend started (a counter that restarts with the agent), and ``xid_last``,
    the number of the latest one; NVLink data counters summed over all links in
    KiB and PCIe counters in bytes, raw and monotonic since the driver loaded;
    ``mig``: one :class:`MigSample` per MIG instance when MIG mode is on.
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
    clocks_sm_mhz: float | None = None
    clocks_memory_mhz: float | None = None
    xid_errors: int | None = None
    xid_last: int | None = None
    nvlink_tx_kib: int | None = None
    nvlink_rx_kib: int | None = None
    pcie_tx_bytes: int | None = None
    pcie_rx_bytes: int | None = None
    mig: list[MigSample] = field(default_factory=list)


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
