"""GPU utilization and SM activity (``nvidia_smi`` measurement).

Public API: :class:`GpuSource` (the source), the backend seam
:class:`GpuBackend` / :class:`GpuSample` that a simulator implements, and
:class:`NvmlBackend`, the backend over NVML for real GPUs.
"""

from __future__ import annotations

from collector.sources.gpu.backend import GpuBackend, GpuSample
from collector.sources.gpu.nvml import COMPUTE_MODES, NvmlBackend
from collector.sources.gpu.source import GpuSource, gpu_point

__all__ = ["COMPUTE_MODES", "GpuBackend", "GpuSample", "GpuSource", "NvmlBackend", "gpu_point"]
