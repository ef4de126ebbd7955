"""The ``gpu`` source: one ``nvidia_smi`` point per GPU and poll."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from collector.schema import COLLECTOR_HEALTH, NVIDIA_SMI, FieldValue, Point
from collector.sources.gpu.backend import GpuBackend, GpuSample
from collector.sources.gpu.nvml import NvmlBackend

log = logging.getLogger(__name__)

_OPTIONS = ("gpm",)


def gpu_point(host: str, sample: GpuSample, time_ns: int) -> Point:
    """The ``nvidia_smi`` point of one GPU sample, typed as Telegraf writes it.

    Telegraf's nvidia_smi input stores utilization, memory and temperature as
    integers and power as a float; keeping those types lets both write to the
    same series. ``sm_active`` and ``sm_occupancy`` (floats) and any value the
    GPU did not report are left out where unknown.
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
    for name, value in (
        ("utilization_gpu", sample.utilization_gpu),
        ("utilization_memory", sample.utilization_memory),
        ("temperature_gpu", sample.temperature_c),
    ):
        if value is not None:
            fields[name] = round(value)
    for name, value in (
        ("power_draw", sample.power_draw_w),
        ("sm_active", sample.sm_active),
        ("sm_occupancy", sample.sm_occupancy),
    ):
        if value is not None:
            fields[name] = float(value)
    return Point(NVIDIA_SMI, tags, fields, time_ns)


class GpuSource:
    """Utilization, memory, power and SM activity of every GPU the backend sees.

    ``backend`` defaults to :class:`NvmlBackend`; the simulator passes its own.
    A host without GPUs gives only the health point.
    """

    name = "gpu"

    def __init__(self, host: str, backend: GpuBackend | None = None) -> None:
        if not host:
            raise ValueError("gpu source: host must be a non-empty string")
        if backend is not None and not isinstance(backend, GpuBackend):
            raise TypeError(f"gpu source: backend {backend!r} lacks sample() and close()")
        self.host = host
        self.backend: GpuBackend = backend if backend is not None else NvmlBackend()

    @classmethod
    def from_config(cls, host: str, options: Mapping[str, Any]) -> GpuSource:
        """Build an NVML-backed source from the ``gpu:`` block of a config file."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"gpu source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        gpm = options.get("gpm", True)
        if not isinstance(gpm, bool):
            raise ValueError(f"gpu source: gpm must be true or false, got {gpm!r}")
        return cls(host, NvmlBackend(gpm=gpm))

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        up = 1
        points: list[Point] = []
        try:
            samples = await asyncio.to_thread(self.backend.sample)
            points = [gpu_point(self.host, sample, time_ns) for sample in samples]
        except Exception as err:  # a backend must not raise; report it as a failed poll
            log.warning("gpu: backend %s failed: %r", type(self.backend).__name__, err)
            up = 0
        health = Point(
            COLLECTOR_HEALTH,
            {"source": self.name, "target": self.host},
            {"up": up, "duration_seconds": time.perf_counter() - started, "points": len(points)},
            time_ns,
        )
        return [*points, health]

    async def close(self) -> None:
        await asyncio.to_thread(self.backend.close)
