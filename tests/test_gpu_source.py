"""The gpu source and its NVML backend; NVML itself is replaced at the pynvml boundary only."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from pathlib import Path

import pynvml
import pytest
import yaml

from fake_nvml import MIB, FakeGpu, FakeMig, FakeNvml, h100

from golden_files import assert_golden
from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, NVIDIA_SMI
from collector.sources.base import Source
from collector.sources.gpu import (
    NVIDIA_SMI_MIG,
    NVIDIA_SMI_PROCESS,
    GpuBackend,
    GpuProcess,
    GpuSample,
    GpuSource,
    MigSample,
    NvmlBackend,
    ProcessTable,
)

SAMPLE_CONFIG = Path(__file__).parents[1] / "collector" / "sources" / "gpu" / "sample.yaml"
T = 1_767_225_600_000_000_000


@pytest.fixture
def nvml(monkeypatch) -> FakeNvml:
    fake = FakeNvml([
        h100(0, sm_active_fraction=0.75, sm_occupancy_fraction=0.375),
        # Spinning in a collective: utilization.gpu says 100, the SMs are idle.
        h100(1, utilization=(100, 2), power_mw=151_002, temperature=41, sm_active_fraction=0.0625,
             sm_occupancy_fraction=0.015625, processes=[(4243, 1_200 * MIB), (4250, None)]),
    ])
    fake.install(monkeypatch.setattr)
    return fake


async def test_two_polls_give_nvidia_smi_points_with_sm_activity_from_gpm(nvml):
    source = GpuSource("gpu-node-07", NvmlBackend())
    assert isinstance(source, Source)

    first = await source.collect(T)
    assert [p.measurement for p in first] == [NVIDIA_SMI, NVIDIA_SMI, *[NVIDIA_SMI_PROCESS] * 3, COLLECTOR_HEALTH]
    # GPM needs two samples: the first poll has no SM activity yet.
    assert "sm_active" not in first[0].fields and "sm_occupancy" not in first[0].fields
    assert first[0].fields["utilization_gpu"] == 97

    nvml.advance(10.0)
    second = await source.collect(T + 10_000_000_000)
    gpu0, gpu1, *processes, health = second
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
    assert (gpu0.fields["clocks_current_sm"], gpu0.fields["clocks_current_memory"]) == (1980, 2619)
    # NVLink data counters, summed over all links, raw KiB: they moved 10 s x 1 GB/s.
    assert gpu0.fields["nvlink_tx_kib"] - first[0].fields["nvlink_tx_kib"] == 10_000_000
    assert gpu0.fields["xid_errors"] == 0 and "xid_last" not in gpu0.fields
    assert "pcie_tx_bytes" not in gpu0.fields  # a driver without the PCIe byte fields
    # Telegraf's nvidia_smi types: integers, except power (and the GPM floats).
    assert {name: type(value) for name, value in gpu0.fields.items()} == {
        "memory_used": int, "memory_total": int, "utilization_gpu": int, "utilization_memory": int,
        "temperature_gpu": int, "power_draw": float, "sm_active": float, "sm_occupancy": float,
        "clocks_current_sm": int, "clocks_current_memory": int, "xid_errors": int,
        "nvlink_tx_kib": int, "nvlink_rx_kib": int,
    }
    assert [(p.tags["index"], p.tags["pid"], p.fields) for p in processes] == [
        ("0", "4242", {"running": 1, "used_memory": 59_000}),
        ("1", "4243", {"running": 1, "used_memory": 1_200}),
        ("1", "4250", {"running": 1}),  # the driver hid its memory
    ]
    assert processes[0].tags == {
        "host": "gpu-node-07", "index": "0", "uuid": "GPU-5f0c3a1e-0000-4000-8000-000000000000", "pid": "4242",
    }
    assert health.tags == {"source": "gpu", "target": "gpu-node-07"}
    assert health.fields["up"] == 1 and health.fields["points"] == 5
    assert_golden("gpu_nvml.lp", encode(second[:-1]))

    await source.close()
    assert nvml.shutdowns == 1
    assert len(nvml.freed) == 4  # two GPM buffers per GPU
    assert nvml.event_sets_freed == 1


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
    fake.install(monkeypatch.setattr)
    source = GpuSource("node1", NvmlBackend())
    await source.collect(T)
    fake.advance(5.0)
    a100, mig, *_ = await source.collect(T + 5_000_000_000)
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
    assert GpuSource.from_config("node1", {"xid": False}).backend.xid is False


async def test_a_lost_gpu_is_left_out_and_reported_once(nvml, caplog):
    source = GpuSource("node1", NvmlBackend())
    await source.collect(T)
    nvml.gpus[1].lost = True
    with caplog.at_level(logging.WARNING, logger="collector.sources.gpu"):
        for step in range(1, 4):
            nvml.advance(10.0)
            points = await source.collect(T + step)
            assert [(p.measurement, p.tags.get("index")) for p in points] == [
                (NVIDIA_SMI, "0"), (NVIDIA_SMI_PROCESS, "0"), (COLLECTOR_HEALTH, None),
            ]
            assert points[-1].fields == {**points[-1].fields, "up": 1, "points": 2}
    assert len([r for r in caplog.records if "GPU 1" in r.getMessage()]) == 1
    nvml.gpus[1].lost = False
    nvml.advance(10.0)
    assert len(await source.collect(T + 9)) == 6


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
async def test_no_nvml_is_logged_once_at_debug_and_yields_only_health(monkeypatch, caplog, error):
    fake = FakeNvml([])
    fake.init_error = error
    fake.install(monkeypatch.setattr)
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
    assert source.backend.pcie is False
    with pytest.raises(ValueError, match="unknown option.*dcgm"):
        GpuSource.from_config("node1", {"dcgm": True})
    with pytest.raises(ValueError, match="gpm must be true or false"):
        GpuSource.from_config("node1", {"gpm": "yes"})
    with pytest.raises(TypeError, match="lacks sample"):
        GpuSource("node1", object())


async def test_xid_events_are_counted_per_gpu_without_waiting(nvml, caplog):
    source = GpuSource("node1", NvmlBackend())
    first = await source.collect(T)
    assert [first[0].fields["xid_errors"], first[1].fields["xid_errors"]] == [0, 0]
    assert sorted(nvml.registered) == [0, 1]

    nvml.xid(1, 79)  # fallen off the bus
    nvml.xid(1, 48)  # double-bit ECC
    nvml.xid(0, 13)
    nvml.advance(1.0)
    with caplog.at_level(logging.INFO, logger="collector.sources.gpu"):
        second = await source.collect(T + 1)
    gpu0, gpu1 = second[:2]
    assert (gpu0.fields["xid_errors"], gpu0.fields["xid_last"]) == (1, 13)
    assert (gpu1.fields["xid_errors"], gpu1.fields["xid_last"]) == (2, 48)
    assert sum("XID" in r.getMessage() for r in caplog.records) == 3
    assert not nvml.pending_events

    nvml.advance(1.0)
    third = await source.collect(T + 2)  # the counter holds; no new events
    assert third[1].fields["xid_errors"] == 2
    await source.close()


async def test_gpus_without_xid_events_nvlink_or_clocks_leave_those_fields_out(monkeypatch):
    fake = FakeNvml([
        FakeGpu(uuid="GPU-l40s", name="NVIDIA L40S", xid_events=False, nvlink_kib=None, clocks=None,
                mig_mode=None, pcie_bytes=[7_000_000, 9_000_000]),
    ])
    fake.install(monkeypatch.setattr)
    point, *_ = await GpuSource("node1", NvmlBackend(pcie=True)).collect(T)
    for name in ("xid_errors", "xid_last", "nvlink_tx_kib", "nvlink_rx_kib", "clocks_current_sm"):
        assert name not in point.fields
    assert (point.fields["pcie_tx_bytes"], point.fields["pcie_rx_bytes"]) == (7_000_000, 9_000_000)
    assert fake.registered == []


async def test_64_bit_counters_stay_exact_up_to_2_to_the_64(monkeypatch):
    wrapped = (1 << 64) - 1024
    fake = FakeNvml([h100(0, nvlink_kib=[wrapped, 5], pcie_bytes=[(1 << 63) + 1, 1 << 40])])
    fake.install(monkeypatch.setattr)
    point = (await GpuSource("node1", NvmlBackend(pcie=True)).collect(T))[0]
    assert point.fields["nvlink_tx_kib"] == wrapped and point.fields["pcie_tx_bytes"] == (1 << 63) + 1
    line = encode([point])
    assert f"nvlink_tx_kib={wrapped}u" in line and f"pcie_rx_bytes={1 << 40}i" in line


async def test_pcie_byte_counters_are_read_only_when_asked_for(monkeypatch):
    fake = FakeNvml([h100(0, pcie_bytes=[7_000_000, 9_000_000])])
    fake.install(monkeypatch.setattr)
    asked: list[list[tuple[int, int]]] = []
    field_values = pynvml.nvmlDeviceGetFieldValues
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues",
                        lambda handle, fields: asked.append(list(fields)) or field_values(handle, fields))
    default = (await GpuSource.from_config("node1", {}).collect(T))[0]
    assert "pcie_tx_bytes" not in default.fields and default.fields["nvlink_tx_kib"] == 1_000_000
    assert {field for field, _ in asked[-1]} == {pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
                                                 pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX}
    asked_for = (await GpuSource.from_config("node1", {"pcie": True}).collect(T))[0]
    assert (asked_for.fields["pcie_tx_bytes"], asked_for.fields["pcie_rx_bytes"]) == (7_000_000, 9_000_000)
    assert len(asked[-1]) == 4
    with pytest.raises(ValueError, match="pcie must be true or false"):
        GpuSource.from_config("node1", {"pcie": "on"})


def mig_gpu(index: int) -> FakeGpu:
    """An H100 split into a 3g.40gb and two 1g.10gb instances; instance 9 has two compute instances."""
    migs = {
        0: FakeMig(1, 0, "MIG-aaaaaaaa-0001", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", memory_used=30_000 * MIB,
                   memory_total=40_192 * MIB, processes=[(5001, 29_000 * MIB)], sm_active_fraction=0.5,
                   sm_occupancy_fraction=0.25),
        2: FakeMig(9, 0, "MIG-aaaaaaaa-0009", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", processes=[(5002, None)],
                   sm_active_fraction=0.125),
        3: FakeMig(9, 1, "MIG-aaaaaaaa-0091", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
    }
    return h100(index, utilization=None, mig_mode=True, migs=migs, processes=[(9999, None)])


async def test_mig_instances_are_reported_each_on_their_own_with_gpm_per_instance(monkeypatch):
    fake = FakeNvml([h100(0, sm_active_fraction=0.5), mig_gpu(1)])
    fake.install(monkeypatch.setattr)
    table = ProcessTable()
    source = GpuSource("gpu-node-08", NvmlBackend(), table)
    await source.collect(T)
    fake.advance(10.0)
    points = await source.collect(T + 10_000_000_000)
    by_measurement: dict[str, list] = {}
    for point in points:
        by_measurement.setdefault(point.measurement, []).append(point)

    parent = by_measurement[NVIDIA_SMI][1]
    assert "utilization_gpu" not in parent.fields  # N/A under MIG
    migs = by_measurement[NVIDIA_SMI_MIG]
    assert [(p.tags["gpu_instance_id"], p.tags["compute_instance_id"], p.tags["profile"]) for p in migs] == [
        ("1", "0", "3g.40gb"), ("9", "0", "1g.10gb"), ("9", "1", "1g.10gb"),
    ]
    big, small, small_ci = migs
    assert big.tags["index"] == "1" and big.tags["uuid"] == parent.tags["uuid"]
    assert big.fields["mig_uuid"] == "MIG-aaaaaaaa-0001"
    assert (big.fields["memory_used"], big.fields["memory_total"]) == (30_000, 40_192)
    assert big.fields["sm_active"] == pytest.approx(50.0) and big.fields["sm_occupancy"] == pytest.approx(25.0)
    # GPM is per GPU instance: both compute instances of instance 9 report its value.
    assert small.fields["sm_active"] == pytest.approx(12.5) == small_ci.fields["sm_active"]
    # Processes come per instance, the whole-GPU list (which repeats them) is not read.
    processes = by_measurement[NVIDIA_SMI_PROCESS]
    assert [(p.tags["index"], p.tags.get("gpu_instance_id"), p.tags["pid"]) for p in processes] == [
        ("0", None, "4242"), ("1", "1", "5001"), ("1", "9", "5002"),
    ]
    assert await table.wait_for(T + 10_000_000_000, 0.1) == [
        GpuProcess(0, "GPU-5f0c3a1e-0000-4000-8000-000000000000", 4242, 59_000.0),
        GpuProcess(1, "GPU-5f0c3a1e-0000-4000-8000-000000000001", 5001, 29_000.0, 1),
        GpuProcess(1, "GPU-5f0c3a1e-0000-4000-8000-000000000001", 5002, None, 9),
    ]
    assert_golden("gpu_mig.lp", encode(migs))
    assert fake.calls.count("gpm_alloc") == 2 * 4  # two buffers for each whole GPU and GPU instance

    # An instance is destroyed: its GPM buffers are given back.
    del fake.gpus[1].migs[0]
    fake.advance(10.0)
    points = await source.collect(T + 20_000_000_000)
    assert [p.tags["gpu_instance_id"] for p in points if p.measurement == NVIDIA_SMI_MIG] == ["9", "9"]
    assert len(fake.freed) == 2
    await source.close()
    assert len(fake.freed) == 2 * 4


def test_mig_backend_sample_and_mig_turned_off(monkeypatch):
    fake = FakeNvml([mig_gpu(0)])
    fake.install(monkeypatch.setattr)
    backend = NvmlBackend(gpm=False)
    (sample,) = backend.sample()
    assert sample.processes == []
    assert [m for m in sample.mig][0] == MigSample(
        gpu_instance_id=1, compute_instance_id=0, uuid="MIG-aaaaaaaa-0001", profile="3g.40gb",
        memory_used_mib=30_000.0, memory_total_mib=40_192.0, processes=[(5001, 29_000.0)],
    )
    fake.gpus[0].mig_mode = False
    fake.gpus[0].utilization = (10, 1)
    (sample,) = backend.sample()
    assert sample.mig == [] and sample.processes == [(9999, None)] and sample.utilization_gpu == 10
    backend.close()


async def test_a_failed_poll_releases_waiters_of_the_process_table():
    class Broken:
        def sample(self):
            raise RuntimeError("simulator bug")

        def close(self):
            pass

    table = ProcessTable()
    table.update(T - 1, [GpuProcess(0, "GPU-x", 1)])
    source = GpuSource("node1", Broken(), table)
    await source.collect(T)
    # The poll of T failed: waiters for T get the list they had, at once.
    assert await table.wait_for(T, timeout_s=5) == [GpuProcess(0, "GPU-x", 1)]
    # Nobody updates T + 1: the wait gives up after its timeout.
    assert await table.wait_for(T + 1, timeout_s=0.01) == [GpuProcess(0, "GPU-x", 1)]


def test_the_process_table_serves_one_event_loop_after_another():
    table = ProcessTable()
    table.update(T, [GpuProcess(0, "GPU-x", 1)])
    for step in (1, 2):
        async def poll() -> list[GpuProcess]:
            waiting = asyncio.create_task(table.wait_for(T + step, timeout_s=5))
            await asyncio.sleep(0)
            table.update(T + step, [GpuProcess(0, "GPU-x", step)])
            return await waiting

        assert asyncio.run(poll()) == [GpuProcess(0, "GPU-x", step)]
