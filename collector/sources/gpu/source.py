"""The ``gpu`` source: per poll one ``nvidia_smi`` point per GPU, one
``nvidia_smi_mig`` point per MIG instance and one ``nvidia_smi_process`` point
per compute process."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from collector.schema import NVIDIA_SMI, FieldValue, Point, health_point
from collector.sources.gpu.backend import GpuBackend, GpuSample, MigSample
from collector.sources.gpu.nvml import NvmlBackend
from collector.sources.gpu.processes import GpuProcess, ProcessTable

log = logging.getLogger(__name__)

NVIDIA_SMI_MIG = "nvidia_smi_mig"
"""One MIG instance: kept apart from ``nvidia_smi`` so that a GPU's series stays one GPU."""

NVIDIA_SMI_PROCESS = "nvidia_smi_process"
"""One compute process on one GPU: who holds the GPU when no scheduler says."""

_OPTIONS = {"gpm": True, "xid": True, "pcie": False}
"""The options of a ``gpu:`` block and their defaults."""


def _put(fields: dict[str, FieldValue], name: str, value: float | None, kind: type) -> None:
    if value is not None:
        fields[name] = round(value) if kind is int else float(value)


def gpu_point(host: str, sample: GpuSample, time_ns: int) -> Point:
    """The ``nvidia_smi`` point of one GPU sample, typed as Telegraf writes it.

    Telegraf's nvidia_smi input stores utilization, memory, temperature and
    clocks as integers and power as a float; keeping those types lets both
    write to the same series. ``sm_active`` and ``sm_occupancy`` (floats), the
    XID and byte counters (integers) and any value the GPU did not report are
    left out where unknown.
    """
    tags = {
        "host": host,
        "index": str(sample.index),
        "uuid": sample.uuid,
        "name": sample.name,
        "pstate": sample.pstate,
        "compute_mode": sample.compute_mode,
    }
    fields: dict[str, FieldValue] = {
        "memory_used": round(sample.memory_used_mib),
        "memory_total": round(sample.memory_total_mib),
    }
    for name, value, kind in (
        ("utilization_gpu", sample.utilization_gpu, int),
        ("utilization_memory", sample.utilization_memory, int),
        ("temperature_gpu", sample.temperature_c, int),
        ("power_draw", sample.power_draw_w, float),
        ("sm_active", sample.sm_active, float),
        ("sm_occupancy", sample.sm_occupancy, float),
        ("clocks_current_sm", sample.clocks_sm_mhz, int),
        ("clocks_current_memory", sample.clocks_memory_mhz, int),
        ("xid_errors", sample.xid_errors, int),
        ("xid_last", sample.xid_last, int),
        ("nvlink_tx_kib", sample.nvlink_tx_kib, int),
        ("nvlink_rx_kib", sample.nvlink_rx_kib, int),
        ("pcie_tx_bytes", sample.pcie_tx_bytes, int),
        ("pcie_rx_bytes", sample.pcie_rx_bytes, int),
    ):
        _put(fields, name, value, kind)
    return Point(NVIDIA_SMI, tags, fields, time_ns)


def mig_point(host: str, gpu: GpuSample, mig: MigSample, time_ns: int) -> Point:
    """The ``nvidia_smi_mig`` point of one MIG instance of ``gpu``.

    Tags: those of the GPU that identify it (host, index, uuid, name), plus
    ``gpu_instance_id``, ``compute_instance_id`` and ``profile``. Fields:
    memory_used/memory_total (MiB), sm_active/sm_occupancy (%) where GPM gives
    them, and ``mig_uuid``, the instance's own UUID (what CUDA_VISIBLE_DEVICES names).
    """
    tags = {
        "host": host,
        "index": str(gpu.index),
        "uuid": gpu.uuid,
        "name": gpu.name,
        "gpu_instance_id": str(mig.gpu_instance_id),
        "compute_instance_id": str(mig.compute_instance_id),
    }
    if mig.profile:
        tags["profile"] = mig.profile
    fields: dict[str, FieldValue] = {
        "memory_used": round(mig.memory_used_mib),
        "memory_total": round(mig.memory_total_mib),
        "mig_uuid": mig.uuid,
    }
    _put(fields, "sm_active", mig.sm_active, float)
    _put(fields, "sm_occupancy", mig.sm_occupancy, float)
    return Point(NVIDIA_SMI_MIG, tags, fields, time_ns)


def gpu_processes(sample: GpuSample) -> list[GpuProcess]:
    """The compute processes of one GPU sample, those of its MIG instances included."""
    processes = [GpuProcess(sample.index, sample.uuid, pid, memory) for pid, memory in sample.processes]
    for mig in sample.mig:
        processes.extend(
            GpuProcess(sample.index, sample.uuid, pid, memory, mig.gpu_instance_id) for pid, memory in mig.processes
        )
    return processes


def process_point(host: str, process: GpuProcess, time_ns: int) -> Point:
    """The ``nvidia_smi_process`` point of one process: tags host, index, uuid, pid
    (and gpu_instance_id under MIG); fields ``running`` (always 1, to count with)
    and ``used_memory`` (MiB) where the driver tells it."""
    tags = {"host": host, "index": str(process.index), "uuid": process.uuid, "pid": str(process.pid)}
    if process.gpu_instance_id is not None:
        tags["gpu_instance_id"] = str(process.gpu_instance_id)
    fields: dict[str, FieldValue] = {"running": 1}
    _put(fields, "used_memory", process.used_memory_mib, int)
    return Point(NVIDIA_SMI_PROCESS, tags, fields, time_ns)


class GpuSource:
    """Utilization, memory, power, clocks, SM activity, XID errors, NVLink and
    PCIe counters of every GPU the backend sees, its MIG instances and its
    compute processes.

    ``backend`` defaults to :class:`NvmlBackend`; the simulator passes its own.
    ``process_table``, when given, receives this poll's processes for the jobs
    source. A host without GPUs gives only the health point.
    """

    name = "gpu"

    def __init__(
        self, host: str, backend: GpuBackend | None = None, process_table: ProcessTable | None = None
    ) -> None:
        if not host:
            raise ValueError("gpu source: host must be a non-empty string")
        if backend is not None and not isinstance(backend, GpuBackend):
            raise TypeError(f"gpu source: backend {backend!r} lacks sample() and close()")
        self.host = host
        self.backend: GpuBackend = backend if backend is not None else NvmlBackend()
        self.process_table = process_table

    @classmethod
    def from_config(
        cls, host: str, options: Mapping[str, Any], process_table: ProcessTable | None = None
    ) -> GpuSource:
        """Build an NVML-backed source from the ``gpu:`` block of a config file."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"gpu source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        flags = {}
        for option, default in _OPTIONS.items():
            value = options.get(option, default)
            if not isinstance(value, bool):
                raise ValueError(f"gpu source: {option} must be true or false, got {value!r}")
            flags[option] = value
        return cls(host, NvmlBackend(**flags), process_table)

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        up = 1
        points: list[Point] = []
        processes: list[GpuProcess] | None = None
        try:
            samples = await asyncio.to_thread(self.backend.sample)
            processes = []
            for sample in samples:
                points.append(gpu_point(self.host, sample, time_ns))
                points.extend(mig_point(self.host, sample, mig, time_ns) for mig in sample.mig)
                processes.extend(gpu_processes(sample))
            points.extend(process_point(self.host, process, time_ns) for process in processes)
        except Exception as err:  # a backend must not raise; report it as a failed poll
            log.warning("gpu: backend %s failed: %r", type(self.backend).__name__, err)
            up = 0
            points = []
        if self.process_table is not None:
            self.process_table.update(time_ns, processes)
        health = health_point(self.name, self.host, time_ns, up=up, duration_s=time.perf_counter() - started,
                              points=len(points))
        return [*points, health]

    async def close(self) -> None:
        await asyncio.to_thread(self.backend.close)
