"""A :class:`GpuBackend` over NVML (the ``nvidia-ml-py`` package, ``import pynvml``).

NVML is initialised once, on the first sample. A host without the library or
the driver has no GPUs to watch: that is logged once at debug level and every
sample is empty. SM activity and occupancy come from GPM (GPU Performance
Monitoring, Hopper and newer): NVML computes them from two GPM samples, so the
backend keeps the previous sample of each GPU (and of each MIG GPU instance)
and the first poll has none.

XID errors arrive as NVML events, not as a value to read: the backend
registers every GPU for XID events on one event set at start and drains it
without waiting at every poll, counting the events per GPU.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import pynvml

from collector.sources.gpu.backend import GpuSample, MigSample

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

_ALL_LINKS = 0xFFFFFFFF
"""The scope id that makes NVML sum an NVLink throughput field over all links."""

NVLINK_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("nvlink_tx_kib", pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, _ALL_LINKS),
    ("nvlink_rx_kib", pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, _ALL_LINKS),
)
PCIE_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("pcie_tx_bytes", pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0),
    ("pcie_rx_bytes", pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0),
)
"""GpuSample attribute, NVML field id and scope of the counters read in one
``nvmlDeviceGetFieldValues`` call. A GPU without NVLink, or a driver too old
for the PCIe byte counters, answers those fields with an error of their own.
The PCIe fields are read only when asked for (``pcie=True``): on an H200 each
cost about 150 us of CPU per poll, against 9 us for an NVLink field."""

_MAX_EVENTS_PER_POLL = 10_000
"""Bound on the events drained in one poll, so that an event storm cannot stall it."""

_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}
"""Which member of the ``c_nvmlValue_t`` union holds a field value of each type."""

COMPUTE_MODES = {
    pynvml.NVML_COMPUTEMODE_DEFAULT: "Default",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_THREAD: "Exclusive_Thread",
    pynvml.NVML_COMPUTEMODE_PROHIBITED: "Prohibited",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: "Exclusive_Process",
}
"""NVML compute modes as nvidia-smi (and so Telegraf's ``compute_mode`` tag) spells them."""


class GpuLost(Exception):
    """A GPU stopped answering (fell off the bus, needs a reset)."""


def handle_address(handle: Any) -> int | None:
    """The address inside an NVML device handle: equal for equal devices.

    Event data carries a fresh handle object, so devices are matched by address.
    """
    return ctypes.cast(handle, ctypes.c_void_p).value


@dataclass(slots=True)
class _GpmPair:
    """Two GPM sample buffers used in turn, for one GPU or one MIG GPU instance."""

    buffers: list[Any]
    current: int = 0
    primed: bool = False
    """Whether the buffer that is not current holds a sample from the previous poll."""


@dataclass(slots=True)
class _Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    gpm: _GpmPair | None = None
    """None where GPM is unsupported or turned off."""
    mig_gpm: dict[int, _GpmPair] = field(default_factory=dict)
    """GPM buffers per GPU instance id while MIG mode is on."""
    xid_events: bool = False
    """Whether this GPU is registered for XID events."""
    xid_errors: int = 0
    xid_last: int | None = None


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


def _mig_profile(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3 MIG 1g.10gb"`` -> ``"1g.10gb"``; ``""`` if not in that form."""
    _, marker, profile = name.rpartition(" MIG ")
    return profile if marker else ""


def _processes(raw: list[Any] | None) -> list[tuple[int, float | None]]:
    return [
        (process.pid, process.usedGpuMemory / _MIB if process.usedGpuMemory is not None else None)
        for process in raw or ()
    ]


class NvmlBackend:
    """Samples every GPU NVML sees.

    ``gpm=False`` skips SM activity and occupancy: turn GPM off where another
    profiler (DCGM's profiling module, Nsight) owns the GPU's performance
    counters. ``xid=False`` skips the XID event registration. ``pcie=True``
    adds the PCIe byte counters, which the detector does not use and which cost
    more driver time per poll than every other value together.
    """

    def __init__(self, gpm: bool = True, xid: bool = True, pcie: bool = False) -> None:
        self.gpm = gpm
        self.xid = xid
        self.pcie = pcie
        self._gpus: list[_Gpu] | None = None
        self._by_address: dict[int | None, _Gpu] = {}
        self._event_set: Any = None
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
            if self.gpm and self._gpm_supported(gpu):
                gpu.gpm = _GpmPair(self._gpm_buffers())
            gpus.append(gpu)
            self._by_address[handle_address(handle)] = gpu
        if self.xid and gpus:
            self._register_xid_events(gpus)
        return gpus

    @staticmethod
    def _gpm_supported(gpu: _Gpu) -> bool:
        try:
            return bool(pynvml.nvmlGpmQueryDeviceSupport(gpu.handle).isSupportedDevice)
        except pynvml.NVMLError as err:
            log.debug("gpu: no GPM on GPU %d (%s); no SM activity from it", gpu.index, err)
            return False

    @staticmethod
    def _gpm_buffers() -> list[Any]:
        return [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]

    @staticmethod
    def _free_gpm(pair: _GpmPair, owner: str) -> None:
        for buffer in pair.buffers:
            try:
                pynvml.nvmlGpmSampleFree(buffer)
            except pynvml.NVMLError as err:
                log.debug("gpu: freeing a GPM sample of %s failed: %s", owner, err)

    def _register_xid_events(self, gpus: list[_Gpu]) -> None:
        """One event set for all GPUs; a GPU that cannot deliver XID events is left without."""
        try:
            self._event_set = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError as err:
            log.debug("gpu: no NVML event set (%s); no XID error counts", err)
            return
        for gpu in gpus:
            try:
                supported = pynvml.nvmlDeviceGetSupportedEventTypes(gpu.handle)
                if supported & pynvml.nvmlEventTypeXidCriticalError:
                    pynvml.nvmlDeviceRegisterEvents(gpu.handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set)
                    gpu.xid_events = True
            except pynvml.NVMLError as err:
                log.debug("gpu: GPU %d cannot report XID events (%s)", gpu.index, err)
            if not gpu.xid_events:
                log.debug("gpu: GPU %d has no XID events; no xid_errors field for it", gpu.index)

    def _drain_xid_events(self) -> None:
        """Count the XID events that arrived since the last poll, without waiting for more."""
        if self._event_set is None:
            return
        for _ in range(_MAX_EVENTS_PER_POLL):
            try:
                event = pynvml.nvmlEventSetWait_v2(self._event_set, 0)
            except pynvml.NVMLError as err:
                if err.value != pynvml.NVML_ERROR_TIMEOUT:  # TIMEOUT: nothing (more) pending
                    log.debug("gpu: reading NVML events failed: %s", err)
                return
            gpu = self._by_address.get(handle_address(event.device))
            if gpu is not None and event.eventType & pynvml.nvmlEventTypeXidCriticalError:
                gpu.xid_errors += 1
                gpu.xid_last = int(event.eventData)
                log.info("gpu: GPU %d (%s) reported XID %d", gpu.index, gpu.uuid, event.eventData)

    @staticmethod
    def _sm_metrics(pair: _GpmPair | None, take: Callable[[Any], Any]) -> tuple[float | None, float | None]:
        """SM activity and occupancy (%) since the previous poll; ``take(buffer)`` fills a GPM sample."""
        if pair is None:
            return None, None
        current = pair.buffers[pair.current]
        previous = pair.buffers[1 - pair.current]
        try:
            take(current)
        except pynvml.NVMLError as err:
            pair.primed = False
            if err.value in _LOST:
                raise GpuLost(str(err)) from err
            return None, None
        primed, pair.primed = pair.primed, True
        pair.current = 1 - pair.current
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

    def _counters(self, handle: Any) -> dict[str, int | None]:
        """The NVLink (and PCIe) byte counters, ``None`` for each one the GPU does not have or was not asked for."""
        counters: dict[str, int | None] = {name: None for name, _, _ in NVLINK_FIELDS + PCIE_FIELDS}
        fields = NVLINK_FIELDS + PCIE_FIELDS if self.pcie else NVLINK_FIELDS
        values = _optional(pynvml.nvmlDeviceGetFieldValues, handle, [(fid, scope) for _, fid, scope in fields])
        for (name, _, _), value in zip(fields, values or ()):
            member = _VALUE_MEMBERS.get(value.valueType)
            if value.nvmlReturn == pynvml.NVML_SUCCESS and member is not None:
                counters[name] = int(getattr(value.value, member))
        return counters

    def _mig_samples(self, gpu: _Gpu) -> list[MigSample]:
        """One sample per MIG device while MIG mode is on, looked up afresh every poll."""
        mode = _optional(pynvml.nvmlDeviceGetMigMode, gpu.handle)
        if mode is None or mode[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
            for instance, pair in gpu.mig_gpm.items():
                self._free_gpm(pair, f"GPU {gpu.index} instance {instance}")
            gpu.mig_gpm.clear()
            return []
        samples = []
        sm_by_instance: dict[int, tuple[float | None, float | None]] = {}
        for slot in range(_optional(pynvml.nvmlDeviceGetMaxMigDeviceCount, gpu.handle) or 0):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
                instance = pynvml.nvmlDeviceGetGpuInstanceId(mig)
                compute_instance = pynvml.nvmlDeviceGetComputeInstanceId(mig)
                uuid = pynvml.nvmlDeviceGetUUID(mig)
                name = pynvml.nvmlDeviceGetName(mig)
                memory = pynvml.nvmlDeviceGetMemoryInfo(mig)
            except pynvml.NVMLError as err:
                if err.value in _LOST:
                    raise GpuLost(f"MIG device {slot}: {err}") from err
                continue  # an empty slot (NOT_FOUND), or an instance destroyed meanwhile
            if instance not in sm_by_instance:
                pair = gpu.mig_gpm.get(instance)
                if pair is None and gpu.gpm is not None:
                    pair = gpu.mig_gpm[instance] = _GpmPair(self._gpm_buffers())
                sm_by_instance[instance] = self._sm_metrics(
                    pair, lambda buffer: pynvml.nvmlGpmMigSampleGet(gpu.handle, instance, buffer)
                )
            sm_active, sm_occupancy = sm_by_instance[instance]
            samples.append(
                MigSample(
                    gpu_instance_id=instance,
                    compute_instance_id=compute_instance,
                    uuid=uuid,
                    profile=_mig_profile(name),
                    memory_used_mib=memory.used / _MIB,
                    memory_total_mib=memory.total / _MIB,
                    sm_active=sm_active,
                    sm_occupancy=sm_occupancy,
                    processes=_processes(_optional(pynvml.nvmlDeviceGetComputeRunningProcesses, mig)),
                )
            )
        for instance in set(gpu.mig_gpm) - set(sm_by_instance):
            self._free_gpm(gpu.mig_gpm.pop(instance), f"GPU {gpu.index} instance {instance}")
        return samples

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
        mig = self._mig_samples(gpu)
        # Under MIG the processes are read per instance; the whole-GPU list would repeat them.
        processes = [] if mig else _processes(_optional(pynvml.nvmlDeviceGetComputeRunningProcesses, handle))
        sm_active, sm_occupancy = self._sm_metrics(gpu.gpm, lambda buffer: pynvml.nvmlGpmSampleGet(handle, buffer))
        counters = self._counters(handle)
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
            processes=processes,
            clocks_sm_mhz=_optional(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
            clocks_memory_mhz=_optional(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM),
            xid_errors=gpu.xid_errors if gpu.xid_events else None,
            xid_last=gpu.xid_last,
            mig=mig,
            **counters,
        )

    def sample(self) -> list[GpuSample]:
        if self._gpus is None:
            self._gpus = self._start()
        self._drain_xid_events()
        samples = []
        for gpu in self._gpus:
            try:
                samples.append(self._sample_gpu(gpu))
            except GpuLost as err:
                # No SM average across the outage.
                for pair in (gpu.gpm, *gpu.mig_gpm.values()):
                    if pair is not None:
                        pair.primed = False
                if gpu.index not in self._lost:
                    log.warning("gpu: GPU %d (%s) cannot be read: %s", gpu.index, gpu.uuid, err)
                    self._lost.add(gpu.index)
                continue
            self._lost.discard(gpu.index)
        return samples

    def close(self) -> None:
        for gpu in self._gpus or ():
            if gpu.gpm is not None:
                self._free_gpm(gpu.gpm, f"GPU {gpu.index}")
            for instance, pair in gpu.mig_gpm.items():
                self._free_gpm(pair, f"GPU {gpu.index} instance {instance}")
        self._gpus = []
        self._by_address.clear()
        if self._event_set is not None:
            try:
                pynvml.nvmlEventSetFree(self._event_set)
            except pynvml.NVMLError as err:
                log.debug("gpu: freeing the NVML event set failed: %s", err)
            self._event_set = None
        if self._initialised:
            pynvml.nvmlShutdown()
            self._initialised = False
