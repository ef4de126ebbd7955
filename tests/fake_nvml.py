"""A stand-in for libnvidia-ml behind pynvml's functions, for tests and the overhead benchmark.

Only the pynvml module's functions are replaced (``install``); everything above
them, the NVML backend included, runs as it would on a real host. Handles are
real ``c_nvmlDevice_t`` pointers (with made-up addresses), GPM and field-value
structures are pynvml's own, and a clock the caller advances makes GPM's SM
averages come out as the configured fractions.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml

MIB = 1 << 20


@dataclass
class FakeMig:
    """One MIG device (compute instance) of a GPU in MIG mode."""

    gpu_instance_id: int
    compute_instance_id: int
    uuid: str
    name: str
    memory_used: int = 4_000 * MIB
    memory_total: int = 9_856 * MIB
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    sm_active_fraction: float = 0.0
    sm_occupancy_fraction: float = 0.0
    sm_active_integral: float = 0.0
    sm_occupancy_integral: float = 0.0


@dataclass
class FakeGpu:
    """What the fake NVML reports for one GPU; SM counters integrate over fake time."""

    uuid: str
    name: str
    utilization: tuple[int, int] | None = (97, 41)
    memory_used: int = 60_000 * MIB
    memory_total: int = 81_559 * MIB
    power_mw: int | None = 612_345
    temperature: int = 64
    pstate: int = 0
    compute_mode: int = pynvml.NVML_COMPUTEMODE_DEFAULT
    processes: list[tuple[int, int | None]] = field(default_factory=lambda: [(4242, 59_000 * MIB)])
    gpm: bool = True
    lost: bool = False
    sm_active_fraction: float = 0.0
    sm_occupancy_fraction: float = 0.0
    sm_active_integral: float = 0.0
    sm_occupancy_integral: float = 0.0
    clocks: tuple[int, int] | None = (1980, 2619)
    """SM and memory clock (MHz); None: not supported."""
    nvlink_kib: list[int] | None = field(default_factory=lambda: [1_000_000, 2_000_000])
    """NVLink data TX/RX summed over all links (KiB); None: a GPU without NVLink."""
    pcie_bytes: list[int] | None = None
    """PCIe TX/RX bytes; None: a driver without those fields."""
    xid_events: bool = True
    mig_mode: bool | None = False
    """None: the GPU has no MIG; False: MIG off; True: on, with ``migs``."""
    migs: dict[int, FakeMig] = field(default_factory=dict)
    """MIG devices by slot (nvmlDeviceGetMigDeviceHandleByIndex's index)."""


def _not_supported() -> pynvml.NVMLError:
    return pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


class FakeNvml:
    """The fake library: GPUs, a clock the test advances, and queued XID events."""

    MAX_MIG_DEVICES = 7

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.now = 0.0
        self.init_error: int | None = None
        self.initialised = 0
        self.shutdowns = 0
        self.gpm_snapshots: dict[int, tuple[Any, float, float, float]] = {}
        self.freed: list[int] = []
        self.calls: list[str] = []
        self.pending_events: list[tuple[int, int]] = []
        self.registered: list[int] = []
        self.event_sets_freed = 0

    # --- what a test does ------------------------------------------------

    def advance(self, seconds: float) -> None:
        for gpu in self.gpus:
            gpu.sm_active_integral += gpu.sm_active_fraction * seconds
            gpu.sm_occupancy_integral += gpu.sm_occupancy_fraction * seconds
            for mig in gpu.migs.values():
                mig.sm_active_integral += mig.sm_active_fraction * seconds
                mig.sm_occupancy_integral += mig.sm_occupancy_fraction * seconds
            if gpu.nvlink_kib is not None:
                gpu.nvlink_kib = [value + int(1_000_000 * seconds) for value in gpu.nvlink_kib]
        self.now += seconds

    def xid(self, index: int, code: int) -> None:
        """The driver reports XID ``code`` on GPU ``index``."""
        self.pending_events.append((index, code))

    # --- handles -----------------------------------------------------------

    @staticmethod
    def handle(index: int, slot: int | None = None) -> Any:
        address = 0x10000 * (index + 1) + (0 if slot is None else 0x100 * (slot + 1))
        return ctypes.cast(ctypes.c_void_p(address), pynvml.c_nvmlDevice_t)

    def _resolve(self, handle: Any) -> tuple[FakeGpu, FakeMig | None]:
        address = ctypes.cast(handle, ctypes.c_void_p).value
        index, rest = divmod(address, 0x10000)
        gpu = self.gpus[index - 1]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if rest == 0:
            return gpu, None
        mig = gpu.migs.get(rest // 0x100 - 1)
        if mig is None or not gpu.mig_mode:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu, mig

    def _gpu(self, handle: Any) -> FakeGpu:
        gpu, mig = self._resolve(handle)
        if mig is not None:
            raise _not_supported()
        return gpu

    # --- the library -------------------------------------------------------

    def install(self, patch: Callable[[Any, str, Any], None]) -> None:
        """Replace pynvml's functions through ``patch(module, name, function)``
        (``monkeypatch.setattr`` in tests, ``setattr`` in the benchmark)."""

        def init():
            if self.init_error is not None:
                raise pynvml.NVMLError(self.init_error)
            self.initialised += 1

        def shutdown():
            self.shutdowns += 1

        def utilization(handle):
            gpu = self._gpu(handle)
            if gpu.utilization is None or gpu.mig_mode:  # not supported per device under MIG
                raise _not_supported()
            return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization[0], memory=gpu.utilization[1])

        def memory(handle):
            gpu, mig = self._resolve(handle)
            used, total = (mig.memory_used, mig.memory_total) if mig else (gpu.memory_used, gpu.memory_total)
            return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

        def power(handle):
            gpu = self._gpu(handle)
            if gpu.power_mw is None:
                raise _not_supported()
            return gpu.power_mw

        def processes(handle):
            gpu, mig = self._resolve(handle)
            found = []
            for pid, used in (mig or gpu).processes:
                process = pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_v3_t(pid=pid))
                process.usedGpuMemory = used  # pynvml turns NVML's "not available" into None
                found.append(process)
            return found

        def clock(handle, kind):
            gpu = self._gpu(handle)
            if gpu.clocks is None:
                raise _not_supported()
            return {pynvml.NVML_CLOCK_SM: gpu.clocks[0], pynvml.NVML_CLOCK_MEM: gpu.clocks[1]}[kind]

        def field_values(handle, field_ids):
            gpu = self._gpu(handle)
            self.calls.append("field_values")
            values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
            for value, (field_id, scope) in zip(values, field_ids):
                value.fieldId, value.scopeId = field_id, scope
                source = {
                    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: (gpu.nvlink_kib, 0),
                    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: (gpu.nvlink_kib, 1),
                    pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: (gpu.pcie_bytes, 0),
                    pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: (gpu.pcie_bytes, 1),
                }.get(field_id)
                if field_id in (
                    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX
                ):
                    assert scope == 0xFFFFFFFF, "NVLink throughput must be summed over all links"
                if source is None or source[0] is None:
                    value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                    continue
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                value.value.ullVal = source[0][source[1]]
            return values

        def supported_events(handle):
            gpu = self._gpu(handle)
            return pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypePState if gpu.xid_events else 0

        def register_events(handle, types, event_set):
            assert types == pynvml.nvmlEventTypeXidCriticalError and event_set == "event-set"
            self.registered.append(self.gpus.index(self._gpu(handle)))

        def event_wait(event_set, timeout_ms):
            assert event_set == "event-set" and timeout_ms == 0, "a poll must never wait for events"
            if not self.pending_events:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
            index, code = self.pending_events.pop(0)
            return pynvml.c_nvmlEventData_t(
                device=self.handle(index), eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=code,
                gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF,
            )

        def event_set_free(event_set):
            self.event_sets_freed += 1

        def mig_mode(handle):
            gpu = self._gpu(handle)
            if gpu.mig_mode is None:
                raise _not_supported()
            mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig_mode else pynvml.NVML_DEVICE_MIG_DISABLE
            return [mode, mode]

        def max_mig(handle):
            gpu = self._gpu(handle)
            if gpu.mig_mode is None:
                raise _not_supported()
            return self.MAX_MIG_DEVICES

        def mig_handle(handle, slot):
            gpu = self._gpu(handle)
            if not gpu.mig_mode or slot not in gpu.migs:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return self.handle(self.gpus.index(gpu), slot)

        def mig_part(attribute):
            def read(handle):
                _, mig = self._resolve(handle)
                if mig is None:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
                return getattr(mig, attribute)
            return read

        def uuid(handle):
            gpu, mig = self._resolve(handle)
            return (mig or gpu).uuid

        def name(handle):
            gpu, mig = self._resolve(handle)
            return (mig or gpu).name

        def gpm_support(handle):
            support = pynvml.c_nvmlGpmSupport_t()
            support.isSupportedDevice = int(self._gpu(handle).gpm)
            return support

        def gpm_alloc():
            self.calls.append("gpm_alloc")
            return ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())

        def gpm_free(sample):
            self.freed.append(ctypes.addressof(sample.contents))

        def gpm_sample_get(handle, sample):
            gpu = self._gpu(handle)
            self.gpm_snapshots[ctypes.addressof(sample.contents)] = (
                (self.gpus.index(gpu), None), self.now, gpu.sm_active_integral, gpu.sm_occupancy_integral
            )
            return sample

        def gpm_mig_sample_get(handle, gpu_instance_id, sample):
            gpu = self._gpu(handle)
            instance = next(m for m in gpu.migs.values() if m.gpu_instance_id == gpu_instance_id)
            self.gpm_snapshots[ctypes.addressof(sample.contents)] = (
                (self.gpus.index(gpu), gpu_instance_id), self.now,
                instance.sm_active_integral, instance.sm_occupancy_integral,
            )
            return sample

        def gpm_metrics_get(request):
            assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
            owner1, t1, active1, occupancy1 = self.gpm_snapshots[ctypes.addressof(request.sample1.contents)]
            owner2, t2, active2, occupancy2 = self.gpm_snapshots[ctypes.addressof(request.sample2.contents)]
            assert owner1 == owner2 and t2 > t1
            for i in range(request.numMetrics):
                metric = request.metrics[i]
                if metric.metricId == pynvml.NVML_GPM_METRIC_SM_UTIL:
                    metric.value = 100 * (active2 - active1) / (t2 - t1)
                elif metric.metricId == pynvml.NVML_GPM_METRIC_SM_OCCUPANCY:
                    metric.value = 100 * (occupancy2 - occupancy1) / (t2 - t1)
                else:
                    metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            return request

        replacements = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": self.handle,
            "nvmlDeviceGetUUID": uuid,
            "nvmlDeviceGetName": name,
            "nvmlDeviceGetUtilizationRates": utilization,
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetPowerUsage": power,
            "nvmlDeviceGetTemperature": lambda handle, sensor: self._gpu(handle).temperature,
            "nvmlDeviceGetPerformanceState": lambda handle: self._gpu(handle).pstate,
            "nvmlDeviceGetComputeMode": lambda handle: self._gpu(handle).compute_mode,
            "nvmlDeviceGetComputeRunningProcesses": processes,
            "nvmlDeviceGetClockInfo": clock,
            "nvmlDeviceGetFieldValues": field_values,
            "nvmlEventSetCreate": lambda: "event-set",
            "nvmlDeviceGetSupportedEventTypes": supported_events,
            "nvmlDeviceRegisterEvents": register_events,
            "nvmlEventSetWait_v2": event_wait,
            "nvmlEventSetFree": event_set_free,
            "nvmlDeviceGetMigMode": mig_mode,
            "nvmlDeviceGetMaxMigDeviceCount": max_mig,
            "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
            "nvmlDeviceGetGpuInstanceId": mig_part("gpu_instance_id"),
            "nvmlDeviceGetComputeInstanceId": mig_part("compute_instance_id"),
            "nvmlGpmQueryDeviceSupport": gpm_support,
            "nvmlGpmSampleAlloc": gpm_alloc,
            "nvmlGpmSampleFree": gpm_free,
            "nvmlGpmSampleGet": gpm_sample_get,
            "nvmlGpmMigSampleGet": gpm_mig_sample_get,
            "nvmlGpmMetricsGet": gpm_metrics_get,
        }
        for name_, replacement in replacements.items():
            assert hasattr(pynvml, name_), f"pynvml has no {name_}: the fake would replace nothing"
            patch(pynvml, name_, replacement)


def h100(index: int, **overrides: Any) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-5f0c3a1e-0000-4000-8000-00000000000{index}", name="NVIDIA H100 80GB HBM3", **overrides)
