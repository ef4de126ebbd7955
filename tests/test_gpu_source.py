"""The gpu source and its NVML backend; NVML itself is replaced at the pynvml boundary only."""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pynvml
import pytest
import yaml

from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, NVIDIA_SMI
from collector.sources.base import Source
from collector.sources.gpu import GpuBackend, GpuSample, GpuSource, NvmlBackend

GOLDEN = Path(__file__).parent / "golden" / "node"
SAMPLE_CONFIG = Path(__file__).parents[1] / "collector" / "sources" / "gpu" / "sample.yaml"
T = 1_767_225_600_000_000_000
MIB = 1 << 20


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/node/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()


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


class FakeNvml:
    """Stands in for libnvidia-ml behind pynvml's functions, with a clock the test advances."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.now = 0.0
        self.init_error: int | None = None
        self.initialised = 0
        self.shutdowns = 0
        self.gpm_snapshots: dict[int, tuple[int, float, float, float]] = {}
        self.freed: list[int] = []
        self.calls: list[str] = []

    def advance(self, seconds: float) -> None:
        for gpu in self.gpus:
            gpu.sm_active_integral += gpu.sm_active_fraction * seconds
            gpu.sm_occupancy_integral += gpu.sm_occupancy_fraction * seconds
        self.now += seconds

    def _gpu(self, handle: int) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def init():
            if self.init_error is not None:
                raise pynvml.NVMLError(self.init_error)
            self.initialised += 1

        def shutdown():
            self.shutdowns += 1

        def utilization(handle):
            gpu = self._gpu(handle)
            if gpu.utilization is None:  # MIG mode: not supported per device
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization[0], memory=gpu.utilization[1])

        def memory(handle):
            gpu = self._gpu(handle)
            return pynvml.c_nvmlMemory_t(
                total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used
            )

        def power(handle):
            gpu = self._gpu(handle)
            if gpu.power_mw is None:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return gpu.power_mw

        def processes(handle):
            gpu = self._gpu(handle)
            found = []
            for pid, used in gpu.processes:
                process = pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_v3_t(pid=pid))
                process.usedGpuMemory = used  # pynvml turns NVML's "not available" into None
                found.append(process)
            return found

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
                handle, self.now, gpu.sm_active_integral, gpu.sm_occupancy_integral
            )
            return sample

        def gpm_metrics_get(request):
            assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
            handle1, t1, active1, occupancy1 = self.gpm_snapshots[ctypes.addressof(request.sample1.contents)]
            handle2, t2, active2, occupancy2 = self.gpm_snapshots[ctypes.addressof(request.sample2.contents)]
            assert handle1 == handle2 and t2 > t1
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
            "nvmlDeviceGetHandleByIndex": lambda index: index,
            "nvmlDeviceGetUUID": lambda handle: self._gpu(handle).uuid,
            "nvmlDeviceGetName": lambda handle: self._gpu(handle).name,
            "nvmlDeviceGetUtilizationRates": utilization,
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetPowerUsage": power,
            "nvmlDeviceGetTemperature": lambda handle, sensor: self._gpu(handle).temperature,
            "nvmlDeviceGetPerformanceState": lambda handle: self._gpu(handle).pstate,
            "nvmlDeviceGetComputeMode": lambda handle: self._gpu(handle).compute_mode,
            "nvmlDeviceGetComputeRunningProcesses": processes,
            "nvmlGpmQueryDeviceSupport": gpm_support,
            "nvmlGpmSampleAlloc": gpm_alloc,
            "nvmlGpmSampleFree": gpm_free,
            "nvmlGpmSampleGet": gpm_sample_get,
            "nvmlGpmMetricsGet": gpm_metrics_get,
        }
        for name, replacement in replacements.items():
            monkeypatch.setattr(pynvml, name, replacement)


def h100(index: int, **overrides) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-5f0c3a1e-0000-4000-8000-00000000000{index}", name="NVIDIA H100 80GB HBM3", **overrides)


@pytest.fixture
def nvml(monkeypatch) -> FakeNvml:
    fake = FakeNvml([
        h100(0, sm_active_fraction=0.75, sm_occupancy_fraction=0.375),
        # Spinning in a collective: utilization.gpu says 100, the SMs are idle.
        h100(1, utilization=(100, 2), power_mw=151_002, temperature=41, sm_active_fraction=0.0625,
             sm_occupancy_fraction=0.015625, processes=[(4243, 1_200 * MIB), (4250, None)]),
    ])
    fake.install(monkeypatch)
    return fake


async def test_two_polls_give_nvidia_smi_points_with_sm_activity_from_gpm(nvml):
    source = GpuSource("gpu-node-07", NvmlBackend())
    assert isinstance(source, Source)

    first = await source.collect(T)
    assert [p.measurement for p in first] == [NVIDIA_SMI, NVIDIA_SMI, COLLECTOR_HEALTH]
    # GPM needs two samples: the first poll has no SM activity yet.
    assert "sm_active" not in first[0].fields and "sm_occupancy" not in first[0].fields
    assert first[0].fields["utilization_gpu"] == 97

    nvml.advance(10.0)
    second = await source.collect(T + 10_000_000_000)
    gpu0, gpu1, health = second
    assert gpu0.tags == {
        "host": "gpu-node-07", "index": "0", "uuid": "GPU-5f0c3a1e-0000-4000-8000-000000000000",
        "name": "NVIDIA H100 80GB HBM3", "pstate": "P0", "compute_mode": "Default",
    }
    assert gpu0.fields["sm_active"] == pytest.approx(75.0)
    assert gpu0.fields["sm_occupancy"] == pytest.approx(37.5)
    assert gpu1.fields["utilization_gpu"] == 100
    assert gpu1.fields["sm_active"] == pytest.approx(6.25)
    assert gpu0.fields["memory_used"] == 60_000 and gpu0.fields["memory_total"] == 81_559
    assert gpu0.fields["power_draw"] == pytest.approx(612.345)
    assert gpu0.fields["temperature_gpu"] == 64
    # Telegraf's nvidia_smi types: integers, except power (and the GPM floats).
    assert {name: type(value) for name, value in gpu0.fields.items()} == {
        "memory_used": int, "memory_total": int, "utilization_gpu": int, "utilization_memory": int,
        "temperature_gpu": int, "power_draw": float, "sm_active": float, "sm_occupancy": float,
    }
    assert health.tags == {"source": "gpu", "target": "gpu-node-07"}
    assert health.fields["up"] == 1 and health.fields["points"] == 2
    assert_golden("gpu_nvml.lp", encode(second[:2]))

    await source.close()
    assert nvml.shutdowns == 1
    assert len(nvml.freed) == 4  # two GPM buffers per GPU


def test_backend_samples_carry_processes_and_units(nvml):
    backend = NvmlBackend()
    gpu0, gpu1 = backend.sample()
    assert isinstance(gpu0, GpuSample) and isinstance(backend, GpuBackend)
    assert gpu0.processes == [(4242, 59_000.0)]
    assert gpu1.processes == [(4243, 1_200.0), (4250, None)]
    assert gpu1.power_draw_w == pytest.approx(151.002)
    assert (gpu1.utilization_gpu, gpu1.utilization_memory) == (100, 2)
    assert gpu0.sm_active is None  # first sample
    backend.close()


async def test_gpus_without_gpm_or_utilization_leave_those_fields_out(monkeypatch):
    fake = FakeNvml([
        FakeGpu(uuid="GPU-a100", name="NVIDIA A100-SXM4-80GB", gpm=False, power_mw=None),
        h100(1, utilization=None, pstate=pynvml.NVML_PSTATE_UNKNOWN,
             compute_mode=pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS, sm_active_fraction=0.5),
    ])
    fake.install(monkeypatch)
    source = GpuSource("node1", NvmlBackend())
    await source.collect(T)
    fake.advance(5.0)
    a100, mig, _ = await source.collect(T + 5_000_000_000)
    assert "sm_active" not in a100.fields and "power_draw" not in a100.fields
    assert a100.fields["utilization_gpu"] == 97
    assert "utilization_gpu" not in mig.fields and "utilization_memory" not in mig.fields
    assert mig.fields["sm_active"] == pytest.approx(50.0)
    assert (mig.tags["pstate"], mig.tags["compute_mode"]) == ("Unknown", "Exclusive_Process")
    assert fake.calls.count("gpm_alloc") == 2  # only for the GPU that supports GPM


async def test_gpm_can_be_turned_off(nvml):
    source = GpuSource.from_config("node1", {"gpm": False})
    await source.collect(T)
    nvml.advance(10.0)
    points = await source.collect(T + 1)
    assert all("sm_active" not in p.fields for p in points[:2])
    assert "gpm_alloc" not in nvml.calls


async def test_a_lost_gpu_is_left_out_and_reported_once(nvml, caplog):
    source = GpuSource("node1", NvmlBackend())
    await source.collect(T)
    nvml.gpus[1].lost = True
    with caplog.at_level(logging.WARNING, logger="collector.sources.gpu"):
        for step in range(1, 4):
            nvml.advance(10.0)
            points = await source.collect(T + step)
            assert [p.tags.get("index") for p in points] == ["0", None]
            assert points[-1].fields == {**points[-1].fields, "up": 1, "points": 1}
    assert len([r for r in caplog.records if "GPU 1" in r.getMessage()]) == 1
    nvml.gpus[1].lost = False
    nvml.advance(10.0)
    assert len(await source.collect(T + 9)) == 3


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
async def test_no_nvml_is_logged_once_at_debug_and_yields_only_health(monkeypatch, caplog, error):
    fake = FakeNvml([])
    fake.init_error = error
    fake.install(monkeypatch)
    source = GpuSource("cpu-node", NvmlBackend())
    with caplog.at_level(logging.DEBUG, logger="collector.sources.gpu"):
        for _ in range(3):
            points = await source.collect(T)
            assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
            assert points[0].fields["up"] == 1 and points[0].fields["points"] == 0
    records = [r for r in caplog.records if "NVML unavailable" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    await source.close()
    assert fake.shutdowns == 0


async def test_this_machine_without_libnvidia_ml_gives_only_health():
    """Real pynvml, nothing replaced: on a machine without the NVIDIA driver."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("libnvidia-ml is installed here")
    source = GpuSource("cpu-node")
    points = await source.collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
    assert points[0].fields["up"] == 1
    await source.close()


async def test_a_simulated_backend_plugs_into_the_seam():
    class SimulatedGpus:
        closed = False

        def sample(self) -> list[GpuSample]:
            return [GpuSample(
                index=3, uuid="GPU-sim-3", name="Simulated H100", utilization_gpu=99.6, utilization_memory=10.2,
                sm_active=12.5, sm_occupancy=None, memory_used_mib=1024.4, memory_total_mib=81559.0,
                power_draw_w=300.0, temperature_c=55.0, pstate="P0", compute_mode="Default",
            )]

        def close(self) -> None:
            self.closed = True

    backend = SimulatedGpus()
    source = GpuSource("sim-node-1", backend)
    point, _ = await source.collect(T)
    assert point.fields == {
        "memory_used": 1024, "memory_total": 81559, "utilization_gpu": 100, "utilization_memory": 10,
        "temperature_gpu": 55, "power_draw": 300.0, "sm_active": 12.5,
    }
    await source.close()
    assert backend.closed


async def test_a_failing_backend_marks_the_poll_down():
    class Broken:
        def sample(self):
            raise RuntimeError("simulator bug")

        def close(self):
            pass

    points = await GpuSource("node1", Broken()).collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
    assert points[0].fields["up"] == 0


def test_sample_config_builds_a_source_and_bad_options_are_named():
    options = yaml.safe_load(SAMPLE_CONFIG.read_text())["gpu"]
    source = GpuSource.from_config("node1", options)
    assert isinstance(source.backend, NvmlBackend) and source.backend.gpm is True
    with pytest.raises(ValueError, match="unknown option.*dcgm"):
        GpuSource.from_config("node1", {"dcgm": True})
    with pytest.raises(ValueError, match="gpm must be true or false"):
        GpuSource.from_config("node1", {"gpm": "yes"})
    with pytest.raises(TypeError, match="lacks sample"):
        GpuSource("node1", object())
