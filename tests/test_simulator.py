"""The fabric simulator: determinism, the scenario's causes, conservation, ground truth, device faces."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from collector.schema import COLLECTOR_HEALTH, ETHTOOL, INFINIBAND, INTERFACE, NVIDIA_SMI, Point
from collector.sources.ethtool import EthtoolBackend, EthtoolSource
from collector.sources.gpu import NVIDIA_SMI_PROCESS, GpuBackend, GpuSource
from collector.sources.rdma import RdmaSource
from collector.sources.snmp import SnmpSource, SnmpTarget
from detector.jobs import load_jobs
from detector.simulator import (
    CONFOUNDERS,
    NETWORK_CAUSES,
    SCHEDULED_KINDS,
    SimConfig,
    SimConfigError,
    Simulation,
    simulate,
)
from detector.simulator.snmp_agent import SimulatedSwitchAgents
from detector.topology import Topology

GOLDEN = Path(__file__).parent / "golden" / "simulator"
SHORT = SimConfig(duration=timedelta(minutes=40))


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/simulator/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()


@pytest.fixture(scope="module")
def default_run() -> tuple[list[Point], Simulation]:
    return simulate(SimConfig())


def snapshots(points: list[Point]) -> list[list[Point]]:
    """The points of a simulate() run, split by timestamp."""
    by_time: dict[int, list[Point]] = {}
    for point in points:
        by_time.setdefault(point.time_ns, []).append(point)
    return [by_time[t] for t in sorted(by_time)]


# --- scenario --------------------------------------------------------------------------------


def test_same_seed_same_scenario_and_other_seed_differs():
    first, sim_a = simulate(SHORT)
    second, sim_b = simulate(SHORT)
    assert first == second
    assert sim_a.allocations == sim_b.allocations
    assert sim_a.ground_truth.intervals == sim_b.ground_truth.intervals
    other, _ = simulate(SHORT.with_(seed=2))
    assert other != first


def test_default_scenario_has_every_cause_and_job_shape(default_run):
    _, sim = default_run
    config, cluster = sim.config, sim.cluster
    assert (config.steps, config.interval_s, config.start.isoformat()) == (360, 30.0, "2026-11-02T00:00:00+00:00")
    assert {event.label for event in sim.events} >= set(SCHEDULED_KINDS) | {"checkpoint"}
    episodes = sim.ground_truth.episodes
    assert {e.cause for e in episodes} == set(NETWORK_CAUSES) | set(CONFOUNDERS)
    assert {e.event for e in episodes if e.cause == "congestion"} == {
        "congestion/ecmp_collision", "congestion/oversubscription"}
    assert all(e.links for e in episodes if e.network) and not any(e.links for e in episodes if not e.network)
    at_start = [job for job in sim.jobs if job.active(0)]
    leaves = {job.name: len(job.leaves(cluster)) for job in at_start}
    assert any(job.multi_host and leaves[job.name] == 2 for job in at_start)
    assert any(job.multi_host and leaves[job.name] == 1 for job in at_start)
    assert any(not job.multi_host for job in at_start)
    assert sim.ground_truth.totals()["gpu_seconds_unallocated"] > 0
    assert any(job.start_step > 0 for job in sim.jobs), "a job ends and another takes its hosts"
    scheduled = sorted((e.start_step, e.end_step) for e in sim.events if e.kind != "checkpoint")
    assert all(a[1] <= b[0] for a, b in zip(scheduled, scheduled[1:])), "injected events do not overlap"
    assert all(3 <= (end - start) * config.interval_s / 60 <= 20 for start, end in scheduled)


def test_default_episodes_match_golden(default_run):
    _, sim = default_run
    rows = [
        {**episode.to_dict(), "gpu_seconds_lost": round(episode.gpu_seconds_lost)}
        for episode in sim.ground_truth.episodes
    ]
    assert_golden("default_episodes.json", json.dumps(rows, indent=1) + "\n")


def test_points_carry_every_device_and_the_sources_fields(default_run):
    points, sim = default_run
    first = snapshots(points)[0]
    cluster = sim.cluster
    measurements = (INTERFACE, INFINIBAND, ETHTOOL, NVIDIA_SMI, NVIDIA_SMI_PROCESS)
    counts = {m: sum(p.measurement == m for p in first) for m in measurements}
    assert counts == {
        INTERFACE: sum(len(spec.ports) for spec in cluster.switch_specs),
        INFINIBAND: cluster.n_nics, ETHTOOL: cluster.n_nics, NVIDIA_SMI: cluster.n_gpus,
        NVIDIA_SMI_PROCESS: int((sim.model.gauges.job >= 0).sum()),
    }
    port = next(p for p in first if p.measurement == INTERFACE)
    assert set(port.tags) == {"agent_host", "ifName", "ifIndex"}
    assert list(port.fields) == [
        "ifAlias", "ifHighSpeed", "ifOperStatus", "ifHCInOctets", "ifHCOutOctets", "ifHCInUcastPkts",
        "ifHCOutUcastPkts", "ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors", "sysUpTime"]
    nic = next(p for p in first if p.measurement == INFINIBAND)
    for name in ("port_xmit_data", "port_xmit_wait", "np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled",
                 "out_of_sequence", "local_ack_timeout_err", "roce_adp_retrans", "symbol_error", "port_rcv_errors"):
        assert isinstance(nic.fields[name], int), name
    assert nic.tags["netdev"] == "ens1np0" and nic.fields["rate_gbps"] == 400.0
    eth = next(p for p in first if p.measurement == ETHTOOL)
    assert {"rx_prio3_pause", "tx_prio3_pause", "rx_prio3_pause_duration", "rx_prio3_discards", "rx_discards_phy",
            "rx_out_of_buffer"} <= set(eth.fields)


def test_busy_signals_follow_the_job_state(default_run):
    _, sim = default_run
    gauges = sim.model.gauges
    assert ((gauges.job >= 0) | ((gauges.sm_active == 0) & (gauges.utilization_gpu == 0))).all()
    hang = next(e for e in sim.events if e.kind == "hung_job")
    checkpoint = next(e for e in sim.events if e.kind == "checkpoint" and e.start_step > 0)
    with Simulation(sim.config) as replay:
        seen = {}
        for step in range(max(hang.start_step, checkpoint.start_step) + 1):
            replay.step()
            for event in (hang, checkpoint):
                if step == event.start_step:
                    job = replay.jobs[event.job]
                    gpus = [h * replay.cluster.gpus_per_host + i for h in job.hosts for i in job.gpus]
                    g = replay.model.gauges
                    seen[event.kind] = (g.utilization_gpu[gpus], g.sm_active[gpus])
    utilization, sm = seen["hung_job"]
    assert utilization.min() > 95 and sm.max() < 3, "a hung collective spins: busy to NVML, idle SMs"
    utilization, sm = seen["checkpoint"]
    assert utilization.max() < 15 and sm.max() < 5


# --- ground truth -------------------------------------------------------------------------------


def test_network_loss_only_inside_network_events(default_run):
    _, sim = default_run
    dt = timedelta(seconds=sim.config.interval_s)
    windows = [(sim.config.start + e.start_step * dt, sim.config.start + e.end_step * dt, e)
               for e in sim.events if e.kind in NETWORK_CAUSES]
    names = {job.name: job for job in sim.jobs}
    lossy = [item for item in sim.ground_truth.iter_intervals() if item.network_gpu_seconds_lost > 0]
    assert lossy
    for item in lossy:
        active = [e for start, end, e in windows if start <= item.start and item.end <= end]
        assert active, f"network loss outside any network event: {item}"
        assert item.network_cause in {e.kind for e in active}
        job = names[item.job]
        path = sim.topology.path_links((sim.cluster.host_names[h], g) for h in job.hosts for g in job.gpus)
        assert item.links and set(item.links) <= path
        assert 0 < item.network_gpu_seconds_lost <= item.gpus * sim.config.interval_s
    for item in sim.ground_truth.iter_intervals():
        assert item.other_gpu_seconds_lost >= 0
        assert (item.other_gpu_seconds_lost > 1e-9) == (item.other_cause is not None)


def test_healthy_cluster_loses_nothing():
    _, sim = simulate(SHORT.with_(events=False, checkpoints=False))
    intervals = sim.ground_truth.intervals
    assert intervals and all(i.progress == 1.0 for i in intervals)
    totals = sim.ground_truth.totals()
    assert totals["network_gpu_seconds_lost"] == 0 and totals["other_gpu_seconds_lost"] == 0
    assert sim.ground_truth.episodes == []


def test_rings_that_share_uplinks_lose_to_contention():
    """More rails than uplinks: a job across leaves shares uplinks with itself, and the truth charges the fabric."""
    config = SHORT.with_(duration=timedelta(minutes=20), events=False, checkpoints=False, hosts=4, leaves=2,
                         spines=2, uplinks_per_leaf=4, uplink_gbps=400, seed=1)
    _, sim = simulate(config)
    across = {job.name for job in sim.jobs if len({int(sim.cluster.host_leaf[h]) for h in job.hosts}) > 1}
    assert across
    episodes = sim.ground_truth.episodes
    assert episodes and {e.job for e in episodes} == across
    uplinks = {name for link in range(sim.cluster.first_uplink, sim.cluster.first_storage)
               for name in sim.cluster.link_ids(link)}
    for episode in episodes:
        assert episode.network and episode.cause == "congestion" and episode.event == "congestion/contention"
        assert episode.links and set(episode.links) <= uplinks
    for item in sim.ground_truth.iter_intervals():
        assert (item.network_gpu_seconds_lost > 0) == (item.job in across)
        assert item.other_gpu_seconds_lost == 0


def test_totals_add_up(default_run):
    _, sim = default_run
    truth = sim.ground_truth
    totals = truth.totals()
    assert totals["network_gpu_seconds_lost"] == pytest.approx(sum(totals["network_by_cause"].values()))
    assert totals["network_gpu_seconds_lost"] == pytest.approx(
        sum(e.gpu_seconds_lost for e in truth.episodes if e.network), rel=1e-6)
    assert totals["other_gpu_seconds_lost"] == pytest.approx(
        sum(e.gpu_seconds_lost for e in truth.episodes if not e.network), rel=1e-6)
    assert totals["gpu_seconds_allocated"] + totals["gpu_seconds_unallocated"] == totals["gpu_seconds_total"]
    assert 0 < totals["network_gpu_seconds_lost"] < totals["other_gpu_seconds_lost"] < totals["gpu_seconds_allocated"]


# --- counters -----------------------------------------------------------------------------------


def test_host_and_switch_ends_of_every_link_agree(default_run):
    points, sim = default_run
    snaps = snapshots(points)
    nic_port = {(nic.host, nic.device): (nic.switch, nic.port)
                for host in sim.topology.hosts.values() for nic in host.nics.values()}
    uplinks = [((leaf.name, up.port), (up.peer, up.peer_port))
               for leaf in sim.topology.switches.values() for up in leaf.uplinks]

    def index(snap):
        ports = {(p.tags["agent_host"], p.tags["ifName"]): p.fields for p in snap if p.measurement == INTERFACE}
        nics = {(p.tags["host"], p.tags["device"]): p.fields for p in snap if p.measurement == INFINIBAND}
        return ports, nics

    previous = index(snaps[0])
    moved = 0
    for snap in snaps[1:]:
        ports, nics = index(snap)
        for key, fields in nics.items():
            port, before = ports[nic_port[key]], previous[1][key]
            old_port = previous[0][nic_port[key]]
            tx = (fields["port_xmit_data"] - before["port_xmit_data"]) * 4
            assert tx == port["ifHCInOctets"] - old_port["ifHCInOctets"]
            assert (fields["port_rcv_data"] - before["port_rcv_data"]) * 4 == (
                port["ifHCOutOctets"] - old_port["ifHCOutOctets"])
            assert fields["port_xmit_packets"] - before["port_xmit_packets"] == (
                port["ifHCInUcastPkts"] - old_port["ifHCInUcastPkts"])
            moved += tx > 0
        for near, far in uplinks:
            assert ports[near]["ifHCOutOctets"] - previous[0][near]["ifHCOutOctets"] == (
                ports[far]["ifHCInOctets"] - previous[0][far]["ifHCInOctets"])
        previous = (ports, nics)
    assert moved > 0


def test_counters_only_grow_except_counter32_wraps(default_run):
    points, _ = default_run
    snaps = snapshots(points)
    wraps = 0
    last: dict[tuple, dict] = {}
    for snap in snaps:
        for point in snap:
            key = point.series_key()
            before = last.get(key)
            if before is not None:
                for name, value in point.fields.items():
                    if not isinstance(value, int) or name in ("ifOperStatus", "ifHighSpeed", "ifIndex"):
                        continue
                    if point.measurement.startswith(NVIDIA_SMI):  # gauges, not counters
                        continue
                    if value < before[name]:
                        assert name in ("ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"), (key, name)
                        assert before[name] > 2**32 - 100 and value < 100
                        wraps += 1
            last[key] = point.fields
    assert wraps > 0


def test_switch_reboot_restarts_its_counters_and_uptime():
    config = SHORT.with_(switch_reboot=True)
    with Simulation(config) as sim:
        reboot = next(e for e in sim.events if e.kind == "switch_reboot")
        assert sim.ground_truth.totals()  # reboots cost no GPU time
        board = sim.board
        for _ in range(reboot.start_step):
            sim.step()
        before = board.counters.copy(), board.uptime_ticks.copy()
        sim.step()
        s = reboot.switch
        assert board.uptime_ticks[s] == round(config.interval_s * 100) < before[1][s]
        grown = board.counters[s].astype(float) - before[0][s].astype(float)
        assert (board.counters[s] <= before[0][s]).all() and (grown < 0).any()
        others = [i for i in range(len(sim.cluster.switch_names)) if i != s]
        assert (board.counters[others] >= before[0][others]).all()
        assert (board.uptime_ticks[others] > before[1][others]).all()
        points = sim.points()
        uptime = {p.tags["agent_host"]: p.fields["sysUpTime"] for p in points if p.measurement == INTERFACE}
        assert uptime[sim.cluster.switch_names[s]] == round(config.interval_s * 100)
    with Simulation(SimConfig()) as default:
        assert not any(e.kind == "switch_reboot" for e in default.events)


# --- device faces -------------------------------------------------------------------------------


async def test_sysfs_tree_reads_back_through_the_rdma_source(tmp_path):
    sim = Simulation(SHORT)
    host = "node02"
    source = RdmaSource(host, tmp_path)
    for _ in range(2):
        sim.write_sysfs(host, tmp_path)
        read = [p for p in await source.collect(sim.time_ns) if p.measurement != COLLECTOR_HEALTH]
        expected = [p for p in sim.points() if p.measurement == INFINIBAND and p.tags["host"] == host]
        assert read == expected
        sim.step()
    assert sorted(os.listdir(tmp_path)) == [".strandwatch-sim-tmp", "class"]
    assert os.listdir(tmp_path / ".strandwatch-sim-tmp") == []
    assert (tmp_path / "class/infiniband/mlx5_3/ports/1/rate").read_text() == "400 Gb/sec (4X NDR)\n"


async def test_gpu_and_ethtool_backends_give_the_same_points():
    sim = Simulation(SHORT)
    for _ in range(3):
        sim.step()
    host = "node03"
    gpu_backend, ethtool_backend = sim.gpu_backend(host), sim.ethtool_backend(host)
    assert isinstance(gpu_backend, GpuBackend) and isinstance(ethtool_backend, EthtoolBackend)
    collected = await GpuSource(host, gpu_backend).collect(sim.time_ns)
    collected += await EthtoolSource(host, ethtool_backend).collect(sim.time_ns)
    expected = [p for p in sim.points() if p.tags.get("host") == host and p.measurement not in (INFINIBAND, INTERFACE)]
    by_measurement = sorted([p for p in collected if p.measurement != COLLECTOR_HEALTH], key=lambda p: p.measurement)
    assert by_measurement == sorted(expected, key=lambda p: p.measurement)
    with pytest.raises(OSError):
        ethtool_backend.stats("eth99")


async def test_switch_agents_serve_what_points_show():
    sim = Simulation(SHORT)
    try:
        board = sim.board
        with SimulatedSwitchAgents(board) as agents:
            targets = [SnmpTarget(name, host, port) for name, (host, port) in agents.endpoints.items()]
            source = SnmpSource.from_targets(targets)
            try:
                for _ in range(2):
                    sim.step()
                    polled = [p for p in await source.collect(sim.time_ns) if p.measurement == INTERFACE]
                    expected = [p for p in sim.points() if p.measurement == INTERFACE]
                    key = lambda p: (p.tags["agent_host"], int(p.tags["ifIndex"]))  # noqa: E731
                    assert sorted(polled, key=key) == sorted(expected, key=key)
            finally:
                await source.close()
    finally:
        sim.close()


def test_export_writes_files_the_detector_reads(tmp_path, default_run):
    _, sim = default_run
    paths = sim.export(tmp_path)
    assert Topology.load(paths["topology"]).to_dict() == sim.topology.to_dict()
    assert load_jobs(paths["jobs"]) == sim.allocations
    document = json.loads(paths["ground_truth"].read_text())
    assert document["scenario"]["seed"] == 1
    assert len(document["episodes"]) == len(sim.ground_truth.episodes)
    assert {e["kind"] for e in document["events"]} >= set(NETWORK_CAUSES) | set(CONFOUNDERS)
    rows = paths["intervals"].read_text().splitlines()
    assert rows[0].startswith("job,start,end,gpus,progress,network_gpu_seconds_lost")
    assert len(rows) - 1 == len(sim.ground_truth.intervals)


def test_topology_and_switches_match():
    sim = Simulation(SHORT)
    topology, cluster = sim.topology, sim.cluster
    assert sorted(topology.hosts) == [f"node{i:02d}" for i in range(1, 9)]
    assert {nic.switch for nic in topology.hosts["node04"].nics.values()} == {"leaf01"}
    assert {nic.switch for nic in topology.hosts["node05"].nics.values()} == {"leaf02"}
    uplink = topology.switches["leaf01"].uplinks[0]
    assert (uplink.port, uplink.peer, uplink.peer_port) == ("swp33", "spine01", "swp1")
    specs = {spec.name: spec for spec in cluster.switch_specs}
    assert specs["leaf01"].ports[32].if_alias == "spine01:swp1"
    assert specs["spine01"].ports[0].if_alias == "leaf01:swp33"
    assert specs["leaf01"].ports[0].if_alias == "node01:mlx5_0" and specs["leaf01"].ports[0].speed_mbps == 400_000
    assert topology.switch_of_link()["spine02:swp4"] == "spine02"


def test_large_cluster_is_configurable_and_quick():
    config = SimConfig(hosts=128, leaves=8, spines=4, interval_s=10, duration=timedelta(days=7))
    with Simulation(config) as sim:
        assert sim.cluster.n_gpus == 1024 and config.steps == 60480
        for _ in range(20):
            sim.step()
        points = sim.points()
        assert sum(p.measurement == NVIDIA_SMI for p in points) == 1024
        assert sum(p.measurement == INTERFACE for p in points) == sum(len(s.ports) for s in sim.cluster.switch_specs)


@pytest.mark.parametrize("changes, setting", [
    ({"hosts": 1}, "hosts"),
    ({"gpus_per_host": 6}, "gpus_per_host"),
    ({"uplinks_per_leaf": 3}, "uplinks_per_leaf"),
    ({"interval_s": 7}, "duration"),
    ({"gpu_model": "X100"}, "gpu_model"),
    ({"event_kinds": ("meteor",)}, "event_kinds"),
    ({"start": "2026-11-02T00:00:00"}, "start"),
])
def test_bad_settings_name_the_setting(changes, setting):
    with pytest.raises(SimConfigError, match=rf"SimConfig\.{setting}"):
        SimConfig(**changes)


def test_unknown_host_is_a_clear_error(tmp_path):
    sim = Simulation(SHORT)
    with pytest.raises(ValueError, match="node99"):
        sim.write_sysfs("node99", tmp_path)
