"""GPU utilization, SM activity, errors and processes (``nvidia_smi`` measurements).

Public API: :class:`GpuSource` (the source) and the functions that make its
points (:func:`gpu_point`, :func:`mig_point`, :func:`process_point`); the
backend seam :class:`GpuBackend` / :class:`GpuSample` / :class:`MigSample` that a
simulator implements; :class:`NvmlBackend`, the backend over NVML for real
GPUs; :class:`GpuProcess` and :class:`ProcessTable`, through which the jobs
source learns which process runs on which GPU.
"""

from __future__ import annotations

from collector.sources.gpu.backend import GpuBackend, GpuSample, MigSample
from collector.sources.gpu.nvml import COMPUTE_MODES, NvmlBackend
from collector.sources.gpu.processes import GpuProcess, ProcessTable
from collector.sources.gpu.source import (
    NVIDIA_SMI_MIG,
    NVIDIA_SMI_PROCESS,
    GpuSource,
    gpu_point,
    gpu_processes,
    mig_point,
    process_point,
)

__all__ = [
    "COMPUTE_MODES",
    "NVIDIA_SMI_MIG",
    "NVIDIA_SMI_PROCESS",
    "GpuBackend",
    "GpuProcess",
    "GpuSample",
    "GpuSource",
    "MigSample",
    "NvmlBackend",
    "ProcessTable",
    "gpu_point",
    "gpu_processes",
    "mig_point",
    "process_point",
]
