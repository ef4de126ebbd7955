"""The rdma source against real sysfs trees: exact values, RoCE counters, changes between polls."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml

from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, INFINIBAND, Point
from collector.sources.base import Source
from collector.sources.rdma import RdmaSource, rdma_netdevs

SHARED_SYSFS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sysfs"
ROCE_SYSFS = Path(__file__).parent / "fixtures" / "sysfs" / "roce"
GOLDEN = Path(__file__).parent / "golden" / "node"
SAMPLE_CONFIG = Path(__file__).parents[1] / "collector" / "sources" / "rdma" / "sample.yaml"
T = 1_767_225_600_000_000_000


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/node/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()


async def poll(source: RdmaSource, time_ns: int = T) -> tuple[dict[tuple[str, str], Point], Point]:
    """The infiniband points by (device, port), and the health point."""
    points = await source.collect(time_ns)
    assert points[-1].measurement == COLLECTOR_HEALTH
    ports = {(p.tags["device"], p.tags["port"]): p for p in points[:-1]}
    assert all(p.measurement == INFINIBAND and p.time_ns == time_ns for p in ports.values())
    return ports, points[-1]


def copy_tree(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    shutil.copytree(source, root, symlinks=True)
    return root


def device_dir(root: Path, device: str) -> Path:
    return (root / "class" / "infiniband" / device).resolve()


@pytest.fixture
def shared_sysfs() -> Path:
    if not SHARED_SYSFS.is_dir():
        pytest.fail(f"shared fixtures not found at {SHARED_SYSFS}")
    return SHARED_SYSFS


async def test_is_a_source():
    assert isinstance(RdmaSource("node1", ROCE_SYSFS), Source)


async def test_shared_mlx4_and_mlx5_trees_give_their_exact_values(shared_sysfs):
    ports, health = await poll(RdmaSource("node1", shared_sysfs))

    assert sorted(ports) == [("mlx4_0", "1"), ("mlx4_0", "2"), ("mlx5_0", "1")]
    mlx4_1 = ports[("mlx4_0", "1")]
    assert mlx4_1.tags == {"host": "node1", "device": "mlx4_0", "port": "1", "link_layer": "InfiniBand"}
    assert mlx4_1.fields["port_xmit_data"] == 26509113295  # 4-byte words, kept raw
    assert mlx4_1.fields["port_rcv_data"] == 2221223609
    assert mlx4_1.fields["port_xmit_wait"] == 3599
    assert mlx4_1.fields["rate_gbps"] == 40.0
    assert (mlx4_1.fields["state_id"], mlx4_1.fields["state"]) == (4, "ACTIVE")
    assert (mlx4_1.fields["phys_state_id"], mlx4_1.fields["phys_state"]) == (5, "LinkUp")
    assert ports[("mlx4_0", "2")].fields["port_xmit_wait"] == 3846
    assert "local_ack_timeout_err" not in mlx4_1.fields  # mlx4 has no hw_counters

    mlx5 = ports[("mlx5_0", "1")].fields
    assert mlx5["port_xmit_data"] == 2880761508848
    assert mlx5["unicast_xmit_packets"] == 10907922116
    assert mlx5["rate_gbps"] == 25.0
    # hw_counters/ ride in the same point as counters/.
    assert (mlx5["local_ack_timeout_err"], mlx5["out_of_sequence"], mlx5["packet_seq_err"]) == (131, 1, 1)
    assert (mlx5["roce_adp_retrans"], mlx5["roce_slow_restart_cnps"], mlx5["duplicate_request"]) == (99, 131, 41)
    assert mlx5["rx_read_requests"] == 175528982
    assert len(mlx5) == 21 + 25 + 5  # counters, hw_counters, state/phys_state/rate
    assert all(type(mlx5[name]) is int for name in mlx5 if name not in ("state", "phys_state", "rate_gbps"))

    assert health.tags == {"source": "rdma", "target": "node1"}
    assert health.fields["up"] == 1 and health.fields["points"] == 3
    assert 0 <= health.fields["duration_seconds"] < 5
    assert_golden("rdma_shared.lp", encode(ports.values()))


async def test_roce_tree_gives_congestion_counters_netdevs_and_wide_counters():
    ports, _ = await poll(RdmaSource("gpu-node-07", ROCE_SYSFS))

    roce = ports[("mlx5_0", "1")]
    assert roce.tags == {
        "host": "gpu-node-07", "device": "mlx5_0", "port": "1", "link_layer": "Ethernet", "netdev": "ens1f0np0",
    }
    fields = roce.fields
    assert fields["np_cnp_sent"] == 48211
    assert fields["np_ecn_marked_roce_packets"] == 96420
    assert fields["rp_cnp_handled"] == 51002
    assert fields["rp_cnp_ignored"] == 3
    assert fields["out_of_sequence"] == 17
    assert fields["roce_adp_retrans"] == 5
    # port_xmit_data_64 wins over the saturated 32-bit file and is stored under the base name.
    assert fields["port_xmit_data"] == 912345678901
    assert fields["port_rcv_data"] == 887654321098  # only the _64 file exists
    assert not any(name.endswith("_64") for name in fields)
    # "N/A (no PMA)" values are left out, not turned into zeros.
    assert "symbol_error" not in fields and "excessive_buffer_overrun_errors" not in fields
    assert fields["rate_gbps"] == 200.0

    assert ports[("mlx5_1", "1")].tags["netdev"] == "ens1f1np1"
    assert ports[("mlx5_1", "1")].fields["rate_gbps"] == 400.0
    # Two ports, two netdevs: dev_port (0-based) picks the netdev of each port.
    assert ports[("mlx4_0", "1")].tags["netdev"] == "ib0"
    down = ports[("mlx4_0", "2")]
    assert down.tags["netdev"] == "ib1"
    assert (down.fields["state_id"], down.fields["state"]) == (1, "DOWN")
    assert (down.fields["phys_state_id"], down.fields["phys_state"]) == (3, "Disabled")
    assert down.fields["rate_gbps"] == 2.5
    assert_golden("rdma_roce.lp", encode(ports.values()))


def test_rdma_netdevs_lists_the_network_devices_of_all_rdma_devices(tmp_path):
    assert rdma_netdevs(ROCE_SYSFS) == ["ens1f0np0", "ens1f1np1", "ib0", "ib1"]
    assert rdma_netdevs(tmp_path) == []


async def test_counters_that_move_between_polls_are_read_afresh(tmp_path):
    root = copy_tree(ROCE_SYSFS, tmp_path)
    source = RdmaSource("node1", root)
    first, _ = await poll(source, T)

    port = device_dir(root, "mlx5_0") / "ports" / "1"
    (port / "hw_counters" / "np_cnp_sent").write_text("48311\n")
    (port / "hw_counters" / "rp_cnp_handled").write_text("51102\n")
    (port / "counters" / "port_xmit_data_64").write_text("912445678901\n")
    (port / "counters" / "symbol_error").write_text("7\n")  # now readable
    second, _ = await poll(source, T + 10_000_000_000)

    before, after = first[("mlx5_0", "1")], second[("mlx5_0", "1")]
    assert after.fields["np_cnp_sent"] - before.fields["np_cnp_sent"] == 100
    assert after.fields["rp_cnp_handled"] - before.fields["rp_cnp_handled"] == 100
    assert after.fields["port_xmit_data"] - before.fields["port_xmit_data"] == 100_000_000
    assert after.fields["symbol_error"] == 7
    assert after.time_ns == T + 10_000_000_000
    assert second[("mlx5_1", "1")].fields == first[("mlx5_1", "1")].fields


async def test_a_device_removed_between_polls_is_skipped_without_error(tmp_path, caplog):
    root = copy_tree(ROCE_SYSFS, tmp_path)
    source = RdmaSource("node1", root)
    first, _ = await poll(source)
    assert {device for device, _ in first} == {"mlx4_0", "mlx5_0", "mlx5_1"}

    # The class entry stays behind as a dangling link, as when the device goes
    # between listing the class directory and reading the ports.
    shutil.rmtree(device_dir(root, "mlx5_1"))
    with caplog.at_level(logging.WARNING):
        second, health = await poll(source)
    assert {device for device, _ in second} == {"mlx4_0", "mlx5_0"}
    assert health.fields["up"] == 1 and health.fields["points"] == 3
    assert not caplog.records

    (root / "class" / "infiniband" / "mlx5_1").unlink()
    third, _ = await poll(source)
    assert sorted(third) == sorted(second)


async def test_missing_infiniband_class_is_logged_once_and_gives_only_health(tmp_path, caplog):
    source = RdmaSource("cpu-node", tmp_path)
    with caplog.at_level(logging.DEBUG, logger="collector.sources.rdma"):
        for _ in range(3):
            points = await source.collect(T)
            assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
            assert points[0].fields["up"] == 1 and points[0].fields["points"] == 0
    messages = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(messages) == 1 and messages[0].levelno == logging.DEBUG


async def test_an_unreadable_class_directory_marks_the_poll_down(tmp_path):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "infiniband").write_text("not a directory")
    points = await RdmaSource("node1", tmp_path).collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
    assert points[0].fields["up"] == 0


def test_sample_config_builds_a_source_and_bad_options_are_named():
    options = yaml.safe_load(SAMPLE_CONFIG.read_text())["rdma"]
    source = RdmaSource.from_config("node1", options)
    assert source.sysfs_root == Path("/sys")
    with pytest.raises(ValueError, match="unknown option.*sysfs_path"):
        RdmaSource.from_config("node1", {"sysfs_path": "/sys"})
    with pytest.raises(ValueError, match="sysfs_root must be a path string"):
        RdmaSource.from_config("node1", {"sysfs_root": 3})
    with pytest.raises(ValueError, match="host"):
        RdmaSource("", ROCE_SYSFS)
