"""The ethtool source: the kernel ioctl backend against `ethtool -S` on a veth pair, and the counter filter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from golden_files import assert_golden
from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, ETHTOOL
from collector.sources.base import Source
from collector.sources.ethtool import (
    DEFAULT_COUNTER_EXCLUDE,
    DEFAULT_COUNTER_INCLUDE,
    EthtoolBackend,
    EthtoolSource,
    KernelEthtoolBackend,
)

REPO = Path(__file__).parents[1]
ROCE_SYSFS = Path(__file__).parent / "fixtures" / "sysfs" / "roce"
RECORDED = Path(__file__).parent / "fixtures" / "ethtool"
SAMPLE_CONFIG = REPO / "collector" / "sources" / "ethtool" / "sample.yaml"
T = 1_767_225_600_000_000_000


def parse_ethtool_s(text: str) -> dict[str, int]:
    """The statistics of `ethtool -S` output."""
    lines = text.splitlines()
    assert lines[0] == "NIC statistics:", lines[:1]
    stats = {}
    for line in lines[1:]:
        name, _, value = line.strip().rpartition(": ")
        stats[name] = int(value)
    return stats


class RecordedEthtoolBackend:
    """Replays `ethtool -S` output saved from NICs this machine does not have (mlx5)."""

    def __init__(self, directory: Path, drivers: dict[str, str]) -> None:
        self.directory = directory
        self.drivers = drivers
        self.closed = False

    def interfaces(self) -> list[str]:
        return list(self.drivers)

    def driver(self, ifname: str) -> str:
        return self.drivers[ifname]

    def stats(self, ifname: str) -> dict[str, int]:
        return parse_ethtool_s((self.directory / f"{ifname}.txt").read_text())  # OSError when gone

    def close(self) -> None:
        self.closed = True


# --- the kernel backend, for real ---------------------------------------------

# Runs inside the namespace: reads va through the ioctl, waits for the test to
# change the channel count, reads again with the same backend (so the cached
# string table must be refreshed), then polls through the source.
CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from collector.sources.ethtool import EthtoolSource, KernelEthtoolBackend

    backend = KernelEthtoolBackend(["va", "gone0", "lo"])
    print(json.dumps({"driver": backend.driver("va"), "stats": backend.stats("va")}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"stats": backend.stats("va")}), flush=True)
    source = EthtoolSource(
        "ns-host", backend, counter_include=["peer_ifindex", "drops$"], counter_exclude=["xdp"]
    )
    points = asyncio.run(source.collect(1))
    print(json.dumps([[p.measurement, p.tags, p.fields] for p in points]), flush=True)
    asyncio.run(source.close())
""")


@pytest.fixture
def veth_namespace():
    """A network namespace holding a veth pair va/vb with four queues each; removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("ethtool"):
        pytest.fail("needs root, iproute2 and ethtool (Debian package 'ethtool')")
    name = f"strandwatch-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "va", "numtxqueues", "4", "numrxqueues", "4", "type", "veth",
             "peer", "name", "vb", "numtxqueues", "4", "numrxqueues", "4"],
            check=True,
        )
        for ifname in ("va", "vb"):
            subprocess.run(["ip", "-n", name, "link", "set", ifname, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def in_namespace(namespace: str, *command: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *command], check=True, capture_output=True, text=True
    ).stdout


def test_kernel_backend_reads_what_ethtool_prints(veth_namespace):
    child = subprocess.Popen(
        ["ip", "netns", "exec", veth_namespace, sys.executable, "-c", CHILD],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        first = json.loads(child.stdout.readline())
        assert first["stats"] == parse_ethtool_s(in_namespace(veth_namespace, "ethtool", "-S", "va"))
        assert "driver: veth" in in_namespace(veth_namespace, "ethtool", "-i", "va")
        assert first["driver"] == "veth"
        assert "rx_queue_3_drops" in first["stats"]

        in_namespace(veth_namespace, "ethtool", "-L", "va", "rx", "2", "tx", "2")
        child.stdin.write("go\n")
        child.stdin.flush()
        second = json.loads(child.stdout.readline())
        assert second["stats"] == parse_ethtool_s(in_namespace(veth_namespace, "ethtool", "-S", "va"))
        assert "rx_queue_1_drops" in second["stats"] and "rx_queue_3_drops" not in second["stats"]
        assert len(second["stats"]) < len(first["stats"])

        # gone0 does not exist and lo has no driver statistics: neither gives a point.
        points = json.loads(child.stdout.readline())
        assert [p[0] for p in points] == [ETHTOOL, COLLECTOR_HEALTH]
        measurement, tags, fields = points[0]
        assert tags == {"host": "ns-host", "interface": "va", "driver": "veth"}
        assert fields == {
            "peer_ifindex": second["stats"]["peer_ifindex"], "rx_queue_0_drops": 0, "rx_queue_1_drops": 0,
        }
        assert points[1][2]["up"] == 1 and points[1][2]["points"] == 1
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait()


def test_kernel_backend_names_rdma_netdevs_by_default():
    backend = KernelEthtoolBackend(sysfs_root=ROCE_SYSFS)
    try:
        assert backend.interfaces() == ["ens1f0np0", "ens1f1np1", "ib0", "ib1"]
        with pytest.raises(OSError):
            backend.stats("strandwatch-none")  # no such interface here
    finally:
        backend.close()
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        KernelEthtoolBackend(["a-name-longer-than-ifnamsiz"])


# --- the source's counter filter, on recorded mlx5 statistics -------------------


@pytest.fixture
def mlx5() -> RecordedEthtoolBackend:
    return RecordedEthtoolBackend(RECORDED, {"ens1f0np0": "mlx5_core"})


async def test_default_filter_keeps_pfc_ecn_and_drop_counters_of_mlx5(mlx5):
    source = EthtoolSource("gpu-node-07", mlx5)
    assert isinstance(source, Source) and isinstance(mlx5, EthtoolBackend)
    point, health = await source.collect(T)

    assert point.measurement == ETHTOOL
    assert point.tags == {"host": "gpu-node-07", "interface": "ens1f0np0", "driver": "mlx5_core"}
    fields = point.fields
    assert (fields["rx_prio3_pause"], fields["rx_prio3_pause_duration"]) == (120443, 8812330)
    assert (fields["tx_prio3_pause"], fields["tx_prio3_pause_duration"]) == (2210, 140022)
    assert fields["rx_prio3_discards"] == 311 and fields["rx_discards_phy"] == 311
    assert fields["rx_out_of_buffer"] == 1822
    assert fields["tx_pause_storm_warning_events"] == 2 and fields["tx_pause_storm_error_events"] == 0
    assert fields["rx_prio3_marked"] == 4410291
    assert fields["rx_prio7_pause"] == 0  # every priority, busy or not
    # Per-channel copies and plain traffic counters stay out.
    assert not any(name.startswith(("ch0_", "ch1_", "rx0_", "tx1_", "ptp_")) for name in fields)
    assert "rx_bytes" not in fields and "rx_prio3_bytes" not in fields and "rx_xdp_drop" not in fields
    assert len(fields) == 79
    assert health.fields["up"] == 1 and health.fields["points"] == 1
    assert_golden("ethtool_mlx5.lp", encode([point]))


async def test_custom_patterns_replace_the_defaults(mlx5):
    source = EthtoolSource("node1", mlx5, counter_include=[r"^rx_prio\d_bytes$"], counter_exclude=[r"prio[0-2]"])
    (point, _) = await source.collect(T)
    assert sorted(point.fields) == [f"rx_prio{n}_bytes" for n in range(3, 8)]
    assert source.keeps("rx_prio3_bytes") and not source.keeps("rx_prio0_bytes")


async def test_a_vanished_interface_is_skipped_and_nothing_kept_gives_no_point(tmp_path, mlx5):
    shutil.copy(RECORDED / "ens1f0np0.txt", tmp_path / "ens1f0np0.txt")
    (tmp_path / "eth9.txt").write_text("NIC statistics:\n     rx_bytes: 5\n")
    backend = RecordedEthtoolBackend(tmp_path, {"gone0": "mlx5_core", "ens1f0np0": "mlx5_core", "eth9": "virtio"})
    points = await EthtoolSource("node1", backend).collect(T)
    assert [p.tags.get("interface") for p in points] == ["ens1f0np0", None]
    assert points[-1].fields["up"] == 1


async def test_a_failing_backend_marks_the_poll_down(mlx5):
    class Broken(RecordedEthtoolBackend):
        def interfaces(self) -> list[str]:
            raise RuntimeError("simulator bug")

    points = await EthtoolSource("node1", Broken(RECORDED, {})).collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
    assert points[0].fields["up"] == 0


async def test_close_closes_the_backend(mlx5):
    source = EthtoolSource("node1", mlx5)
    await source.close()
    assert mlx5.closed


def test_sample_config_builds_a_source_and_bad_options_are_named():
    options = yaml.safe_load(SAMPLE_CONFIG.read_text())["ethtool"]
    source = EthtoolSource.from_config("node1", options)
    try:
        assert isinstance(source.backend, KernelEthtoolBackend)
        assert [p.pattern for p in source._include] == list(DEFAULT_COUNTER_INCLUDE)
        assert [p.pattern for p in source._exclude] == list(DEFAULT_COUNTER_EXCLUDE)
    finally:
        source.backend.close()
    configured = EthtoolSource.from_config("node1", {"interfaces": ["ens1f0np0"], "counter_include": ["pause"]})
    assert configured.backend.interfaces() == ["ens1f0np0"]
    configured.backend.close()
    with pytest.raises(ValueError, match="unknown option.*interface'"):
        EthtoolSource.from_config("node1", {"interface": "ens1f0np0"})
    with pytest.raises(ValueError, match="interfaces must be a list"):
        EthtoolSource.from_config("node1", {"interfaces": "ens1f0np0"})
    with pytest.raises(ValueError, match=r"counter_include pattern '\(pause' is not a regular expression"):
        EthtoolSource("node1", RecordedEthtoolBackend(RECORDED, {}), counter_include=["(pause"])
    with pytest.raises(ValueError, match="must be a list of regular expressions"):
        EthtoolSource("node1", RecordedEthtoolBackend(RECORDED, {}), counter_exclude="ptp")
    with pytest.raises(TypeError, match="lacks interfaces"):
        EthtoolSource("node1", object())
