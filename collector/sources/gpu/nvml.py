"""A :class:`GpuBackend` over NVML (the ``nvidia-ml-py`` package, ``import pynvml``).

NVML is initialised once, on the first sample. A host without the library or
the driver has no GPUs to watch: that is logged once at debug level and every
sample is empty. SM activity and occupancy come from GPM (GPU Performance
Monitoring, Hopper and newer): NVML computes them from two GPM samples, so the
backend keeps the previous sample of each GPU and the first poll has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import pynvml

from collector.sources.gpu.backend import GpuSample

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_NO_NVML = frozenset(
    {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_NO_PERMISSION,
    }
)
"""nvmlInit errors that mean "no usable GPU here" rather than a fault."""

_LOST = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_UNINITIALIZED})
"""Errors after which nothing more can be read from a GPU this poll."""

_MIB = 1 << 20

COMPUTE_MODES = {
    pynvml.NVML_COMPUTEMODE_DEFAULT: "Default",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_THREAD: "Exclusive_Thread",
    pynvml.NVML_COMPUTEMODE_PROHIBITED: "Prohibited",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: "Exclusive_Process",
}
"""NVML compute modes as nvidia-smi (and so Telegraf's ``compute_mode`` tag) spells them."""


class GpuLost(Exception):
    """A GPU stopped answering (fell off the bus, needs a reset)."""


@dataclass(slots=True)
class _Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    gpm_samples: list[Any] = field(default_factory=list)
    """Two GPM sample buffers used in turn; empty where GPM is unsupported or off."""
    gpm_current: int = 0
    gpm_primed: bool = False
    """Whether the buffer that is not current holds a sample from the previous poll."""


def _optional(read: Callable[..., _T], *args: Any) -> _T | None:
    """``read(*args)``, or ``None`` where this GPU does not report the value."""
    try:
        return read(*args)
    except pynvml.NVMLError as err:
        if err.value in _LOST:
            raise GpuLost(str(err)) from err
        return None
    except pynvml.NVMLLibraryMismatchError:
        # A driver older than the bindings lacks the versioned call behind this one.
        return None


class NvmlBackend:
    """Samples every GPU NVML sees; ``gpm=False`` skips SM activity and occupancy.

    Turn GPM off where another profiler (DCGM's profiling module, Nsight) owns
    the GPU's performance counters.
    """

    def __init__(self, gpm: bool = True) -> None:
        self.gpm = gpm
        self._gpus: list[_Gpu] | None = None
        self._initialised = False
        self._lost: set[int] = set()

    def _start(self) -> list[_Gpu]:
        """Initialise NVML and enumerate the GPUs; an empty list where there are none."""
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            if err.value in _NO_NVML:
                log.debug("gpu: NVML unavailable (%s); no GPUs to sample", err)
            else:
                log.warning("gpu: nvmlInit failed: %s; GPU sampling disabled", err)
            return []
        self._initialised = True
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as err:
            log.warning("gpu: NVML cannot count the GPUs: %s; GPU sampling disabled", err)
            return []
        if count == 0:
            log.debug("gpu: NVML sees no GPUs")
        gpus = []
        for index in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                gpu = _Gpu(index, handle, pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle))
            except pynvml.NVMLError as err:
                log.warning("gpu: GPU %d cannot be opened: %s; left out", index, err)
                continue
            if self.gpm:
                gpu.gpm_samples = self._gpm_buffers(gpu)
            gpus.append(gpu)
        return gpus

    @staticmethod
    def _gpm_buffers(gpu: _Gpu) -> list[Any]:
        """Two GPM sample buffers, or none where the GPU (or driver) has no GPM."""
        try:
            if not pynvml.nvmlGpmQueryDeviceSupport(gpu.handle).isSupportedDevice:
                return []
            return [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]
        except pynvml.NVMLError as err:
            log.debug("gpu: no GPM on GPU %d (%s); no SM activity from it", gpu.index, err)
            return []

    def _sm_metrics(self, gpu: _Gpu) -> tuple[float | None, float | None]:
        """SM activity and occupancy (%) since the previous poll, through GPM."""
        if not gpu.gpm_samples:
            return None, None
        current = gpu.gpm_samples[gpu.gpm_current]
        previous = gpu.gpm_samples[1 - gpu.gpm_current]
        try:
            pynvml.nvmlGpmSampleGet(gpu.handle, current)
        except pynvml.NVMLError as err:
            gpu.gpm_primed = False
            if err.value in _LOST:
                raise GpuLost(str(err)) from err
            return None, None
        primed, gpu.gpm_primed = gpu.gpm_primed, True
        gpu.gpm_current = 1 - gpu.gpm_current
        if not primed:
            return None, None
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 2
        request.sample1 = previous
        request.sample2 = current
        request.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
        request.metrics[1].metricId = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
        try:
            pynvml.nvmlGpmMetricsGet(request)
        except pynvml.NVMLError:
            return None, None
        values = [
            metric.value if metric.nvmlReturn == pynvml.NVML_SUCCESS else None
            for metric in request.metrics[:2]
        ]
        return values[0], values[1]

    def _sample_gpu(self, gpu: _Gpu) -> GpuSample:
        handle = gpu.handle
        utilization = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except pynvml.NVMLError as err:
            raise GpuLost(f"memory info: {err}") from err
        power_mw = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
        pstate = _optional(pynvml.nvmlDeviceGetPerformanceState, handle)
        compute_mode = _optional(pynvml.nvmlDeviceGetComputeMode, handle)
        processes = _optional(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        sm_active, sm_occupancy = self._sm_metrics(gpu)
        return GpuSample(
            index=gpu.index,
            uuid=gpu.uuid,
            name=gpu.name,
            utilization_gpu=utilization.gpu if utilization is not None else None,
            utilization_memory=utilization.memory if utilization is not None else None,
            sm_active=sm_active,
            sm_occupancy=sm_occupancy,
            memory_used_mib=memory.used / _MIB,
            memory_total_mib=memory.total / _MIB,
            power_draw_w=power_mw / 1000 if power_mw is not None else None,
            temperature_c=_optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
            pstate=f"P{pstate}" if pstate is not None and pstate != pynvml.NVML_PSTATE_UNKNOWN else "Unknown",
            compute_mode=COMPUTE_MODES.get(compute_mode, "Unknown") if compute_mode is not None else "Unknown",
            processes=[
                (process.pid, process.usedGpuMemory / _MIB if process.usedGpuMemory is not None else None)
                for process in processes
            ],
        )

    def sample(self) -> list[GpuSample]:
        if self._gpus is None:
            self._gpus = self._start()
        samples = []
        for gpu in self._gpus:
            try:
                samples.append(self._sample_gpu(gpu))
            except GpuLost as err:
                gpu.gpm_primed = False  # no SM average across the outage
                if gpu.index not in self._lost:
                    log.warning("gpu: GPU %d (%s) cannot be read: %s", gpu.index, gpu.uuid, err)
                    self._lost.add(gpu.index)
                continue
            self._lost.discard(gpu.index)
        return samples

    def close(self) -> None:
        for gpu in self._gpus or ():
            for gpm_sample in gpu.gpm_samples:
                try:
                    pynvml.nvmlGpmSampleFree(gpm_sample)
                except pynvml.NVMLError as err:
                    log.debug("gpu: freeing a GPM sample of GPU %d failed: %s", gpu.index, err)
        self._gpus = []
        if self._initialised:
            pynvml.nvmlShutdown()
            self._initialised = False
