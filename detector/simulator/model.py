"""The per-interval model: flows on links, the bandwidth each job gets, and what the devices count.

One call of :meth:`FabricModel.advance` simulates one interval for the whole
cluster with numpy arrays over flows, directed links, NICs, switch ports and
GPUs; the only Python loops run over jobs and active events (a handful).

Flows. Each multi-host job's all-reduce is a ring per rail over its hosts; every
hop of a ring is a flow from NIC (host a, rail r) to NIC (host b, rail r) over
the host links and, between leaves, over uplink ``r mod uplinks_per_leaf`` of
both leaves (through the spine that uplink reaches). Every NIC also has a storage
read and a storage write flow (via an uplink chosen by hashing host and rail, to
the spine's storage port), and an oversubscription event adds bulk flows from
storage into one leaf.

Bandwidth. A ring's flows transmit together, only during the job's all-reduce,
which takes a share ``d`` (duty) of its step. On a directed link a flow sees the
full load of its own job, the duty-weighted load of other jobs' rings and all
storage and bulk load; it gets ``min(1, capacity / seen)`` of its demand there,
times the link's goodput (retransmissions on a lossy link). Its rate is set by
its worst hop and the ring's by its worst flow. Duty depends on the rates, so a
few fixed-point rounds settle both. Capacity is reduced where PFC pauses a
link: by the fabric in a PFC storm, by a slow host that cannot drain its NICs.

Ground truth. The same solve is run a second time for the counterfactual with a
healthy network (no network event: default routes, no bulk traffic, no loss, no
fabric pauses, and uplinks that never run out of capacity) but every host-side
problem kept. With ``T0`` the job's healthy step time, ``T`` its step time and
``Tc`` the counterfactual's, progress ``r = T0 / T``; network loss
``n * dt * (T0/Tc - T0/T)``; other loss ``n * dt * (1 - T0/Tc)``. Checkpointing
and hung jobs make no progress. Network loss with no network event touching the
job is contention: its rings share an uplink with other rings on their default
routes (more rails than uplinks per leaf, jobs across leaves). It is the
fabric's loss too, with the uplinks where the job's rings were held back as its
links (:data:`CONTENTION`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from detector.simulator.cluster import DOWN, UP, UPLINK, Cluster
from detector.simulator.config import NETWORK_CAUSES, SimConfig
from detector.simulator.schedule import HEALTHY_LINK_EFFICIENCY, Event, Job, Plan

CONTENTION = Event(id=-2, kind="congestion", variant="contention", start_step=0, end_step=0,
                   detail="rings held back on uplinks they share on their default routes; no event injected")
"""The cause of network loss that no injected event explains (see the module docstring)."""

# Packets and protocol ------------------------------------------------------------
PACKET_BYTES = 4160
"""Mean RoCE packet on the wire: 4096 bytes of payload plus headers, rounded to 4-byte words."""
RETRANSMIT_PACKETS_PER_LOSS = 30
"""Go-back-N resends the packets in flight after a loss: extra bytes on the wire."""
LOSS_PENALTY_PACKETS = 1500
"""Goodput on a lossy link is ``1 / (1 + LOSS_PENALTY_PACKETS * p)``: each loss costs a
retransmission window and a rate cut worth about this many packet times."""
SYMBOL_ERRORS_PER_BAD_PACKET = 30
"""FEC-corrected symbol errors seen for each packet lost to a degrading link."""
CNP_PER_MARK = 0.35
"""Congestion notifications a receiver sends per ECN-marked packet (NICs coalesce them)."""
ECN_MARK_SLOPE = 0.25
"""Share of packets marked per unit of overload (offered load / capacity - 1) at a switch queue."""
ECN_MARK_MAX = 0.3
PAUSED_QUEUE_MARK_SHARE = 0.2
"""A leaf queue held back by a host's pauses marks at this share of the rate of a
congested uplink queue: a modelling choice that keeps a slow host's ECN evidence
small beside its own PFC pauses, as operators report it."""
DROPS_PER_PACKET_OVERLOAD = 2e-6
"""Egress discards per packet per unit of overload: rare on a lossless class, but counted."""
BACKPRESSURE_PAUSE_SHARE = 0.1
"""Share of its active time a sender on an overloaded path is paused by its leaf (PFC),
times ``1 - 1/overload``: DCQCN keeps most congestion off PFC."""
SLOW_RECEIVER_PAUSE_SPREAD = 0.7
"""Share of a slow receiver's pausing that reaches the senders of its ring (head-of-line)."""
XMIT_WAIT_TICKS_PER_S = 15_625_000
"""port_xmit_wait ticks per second (64 ns ticks)."""
PAUSE_QUANTA_BITS = 65535 * 512
"""A pause frame holds the link for this many bit times; switches refresh it at half."""
PAUSE_TRANSITIONS_PER_S = 100.0

# Background traffic and noise (per second unless said otherwise) ----------------------
CONTROL_BYTES_S = (2e3, 2e4)
"""LLDP, BGP, ARP and friends on every directed link."""
HOST_BACKGROUND_BYTES_S = 2e5
"""Logs, metrics and OS traffic of every host to storage, each way."""
INPUT_STALL_READ_SHARE = 0.15
BACKGROUND_ECN_PER_PACKET = 2e-8
BACKGROUND_IN_DISCARDS_PER_STEP = 0.05
BACKGROUND_OUT_DISCARDS_PER_STEP = 0.003
BACKGROUND_SYMBOL_ERRORS_PER_STEP = 0.01
BACKGROUND_NIC_DROPS_PER_STEP = 0.01

# GPU gauges -------------------------------------------------------------------------
CHECKPOINT_SM, CHECKPOINT_UTIL = 0.02, 0.06
HUNG_SM = 0.008
"""A job hung in a collective: NCCL's spinning kernel keeps utilization_gpu at 100 on few SMs."""
SLOW_HOST_TEMPERATURE_C = 14.0
SLOW_HOST_POWER_SHARE = 0.85
IDLE_SM_CLOCK_MHZ = 345
TEMPERATURE_TIME_CONSTANT_S = 60.0

RUN, CHECKPOINT, HUNG = 0, 1, 2
RING, STORAGE_WRITE, STORAGE_READ, BULK = 0, 1, 2, 3
_HOPS = 4
_ROUNDS = 5

SYSFS_COUNTERS = (
    "VL15_dropped", "excessive_buffer_overrun_errors", "link_downed", "link_error_recovery",
    "local_link_integrity_errors", "multicast_rcv_packets", "multicast_xmit_packets", "port_rcv_constraint_errors",
    "port_rcv_data", "port_rcv_errors", "port_rcv_packets", "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors", "port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards",
    "port_xmit_packets", "port_xmit_wait", "symbol_error", "unicast_rcv_packets", "unicast_xmit_packets",
)
"""Files of ``ports/1/counters/`` (sorted, as the kernel lists them)."""
HW_COUNTERS = (
    "duplicate_request", "implied_nak_seq_err", "lifespan", "local_ack_timeout_err", "np_cnp_sent",
    "np_ecn_marked_roce_packets", "out_of_buffer", "out_of_sequence", "packet_seq_err", "req_cqe_error",
    "req_cqe_flush_error", "req_remote_access_errors", "req_remote_invalid_request", "resp_cqe_error",
    "resp_cqe_flush_error", "resp_local_length_error", "resp_remote_access_errors", "rnr_nak_retry_err",
    "roce_adp_retrans", "roce_adp_retrans_to", "roce_slow_restart", "roce_slow_restart_cnps",
    "roce_slow_restart_trans", "rp_cnp_handled", "rp_cnp_ignored", "rx_atomic_requests", "rx_read_requests",
    "rx_write_requests",
)
"""Files of ``ports/1/hw_counters/`` (mlx5, RoCE). ``lifespan`` is the driver's cache time in ms."""
ETHTOOL_STATS = (
    "rx_packets_phy", "tx_packets_phy", "rx_bytes_phy", "tx_bytes_phy", "rx_crc_errors_phy", "rx_symbol_err_phy",
    "rx_discards_phy", "tx_discards_phy", "rx_pause_ctrl_phy", "tx_pause_ctrl_phy", "rx_out_of_buffer",
    "rx_vport_rdma_unicast_packets", "rx_vport_rdma_unicast_bytes", "tx_vport_rdma_unicast_packets",
    "tx_vport_rdma_unicast_bytes", "rx_prio0_bytes", "rx_prio0_packets", "tx_prio0_bytes", "tx_prio0_packets",
    "rx_prio0_pause", "rx_prio0_pause_duration", "tx_prio0_pause", "tx_prio0_pause_duration", "rx_prio3_bytes",
    "rx_prio3_packets", "tx_prio3_bytes", "tx_prio3_packets", "rx_prio3_pause", "rx_prio3_pause_duration",
    "tx_prio3_pause", "tx_prio3_pause_duration", "rx_prio3_pause_transition", "tx_prio3_pause_transition",
    "rx_prio3_discards", "tx_pause_storm_warning_events", "tx_pause_storm_error_events",
)
"""``ethtool -S`` names of an mlx5 port that the simulator drives (RoCE on priority 3)."""
SWITCH_COLUMNS = ("ifHCInOctets", "ifHCOutOctets", "ifHCInUcastPkts", "ifHCOutUcastPkts",
                  "ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors")


@dataclass(slots=True)
class FlowSet:
    """The flows of one combination of running jobs, reroutes and bulk transfers."""

    job: np.ndarray
    """Job index of each flow; ``n_jobs`` (no job) for storage and bulk flows."""
    kind: np.ndarray
    src_nic: np.ndarray
    """Sending NIC, -1 for storage."""
    dst_nic: np.ndarray
    path: np.ndarray
    """[flows, 4] directed links as routed now, padded with the null link."""
    path_healthy: np.ndarray
    """The same with default routes, for the counterfactual."""
    bulk_demand: np.ndarray
    """Bytes/s of each bulk flow (0 for the others)."""
    own: np.ndarray
    """[flows, 4] index of (job, directed link) among the ring hops, for the per-job load."""
    own_healthy: np.ndarray
    n_own: int
    n_own_healthy: int
    links_of_job: dict[int, frozenset[int]]
    """Physical links each job's ring crosses as routed now."""
    n_ring: int
    ring_jobs: np.ndarray
    ring_starts: np.ndarray
    """Ring flows come first, job after job: job ``ring_jobs[i]`` starts at ``ring_starts[i]``."""


@dataclass(slots=True)
class Solution:
    """Job rates and the per-hop view of one bandwidth solve."""

    factor: np.ndarray
    """Per job: achieved ring rate / healthy rate."""
    duty: np.ndarray
    step_s: np.ndarray
    seen: np.ndarray
    """[flows, 4] load a flow sees on each hop (bytes/s)."""
    flow_factor: np.ndarray


@dataclass(slots=True)
class Conditions:
    """What the active events do in one step (arrays over jobs, hosts, NICs or links)."""

    state: np.ndarray
    """RUN, CHECKPOINT or HUNG per job."""
    stall_s: np.ndarray
    """Seconds per step a job waits for input."""
    read_share: np.ndarray
    host_slow: np.ndarray
    """Compute slowdown per host."""
    nic_host_pause: np.ndarray
    """Share of time each NIC pauses its leaf (a slow host)."""
    nic_storm_pause: np.ndarray
    """Share of time the fabric pauses each NIC (a PFC storm)."""
    link_loss: np.ndarray
    """Packet loss rate per physical link."""
    reroutes: list[Event] = field(default_factory=list)
    bulk: list[Event] = field(default_factory=list)
    network: list[Event] = field(default_factory=list)
    confounders: dict[int, list[Event]] = field(default_factory=dict)
    reboots: list[Event] = field(default_factory=list)


@dataclass(slots=True)
class Traffic:
    """What crossed the fabric in one step."""

    flow_bytes: np.ndarray
    flow_packets: np.ndarray
    flow_active_s: np.ndarray
    """Seconds each flow was sending."""
    path_loss: np.ndarray
    """Loss rate along each flow's path."""
    overload: np.ndarray
    """[flows, 4] load the flow saw on each hop / the hop's capacity."""
    dl_delta: np.ndarray
    """Bytes per directed link (multiples of 4)."""
    dl_packets: np.ndarray
    dl_overload: np.ndarray
    corrupted: np.ndarray
    """Packets per directed link that arrived corrupted."""


@dataclass(slots=True)
class StepTruth:
    """Ground truth of one step for the jobs that ran in it (arrays over those jobs)."""

    step: int
    jobs: np.ndarray
    progress: np.ndarray
    network_loss: np.ndarray
    other_loss: np.ndarray
    network_event: np.ndarray
    other_event: np.ndarray
    links: dict[int, tuple[str, ...]]
    """Job index -> responsible link ids, for jobs with a network event."""


@dataclass(slots=True)
class GpuGauges:
    """What every GPU reports for the last interval (arrays over all GPUs)."""

    sm_active: np.ndarray
    sm_occupancy: np.ndarray
    utilization_gpu: np.ndarray
    utilization_memory: np.ndarray
    memory_used_mib: np.ndarray
    power_w: np.ndarray
    temperature_c: np.ndarray
    clocks_sm_mhz: np.ndarray
    job: np.ndarray


_CONFOUNDER_PRIORITY = ("hung_job", "checkpoint", "input_stall", "slow_host")


class FabricModel:
    """Simulates one cluster step by step and keeps every device counter it implies."""

    def __init__(self, cluster: Cluster, config: SimConfig, plan: Plan, noise: np.random.Generator,
                 offsets: np.random.Generator) -> None:
        self.cluster = cluster
        self.config = config
        self.jobs = plan.jobs
        self.events = plan.events
        self.rng = noise
        self.dt = float(config.interval_s)
        c = cluster
        self.n_jobs = len(self.jobs)
        self.healthy_bandwidth = HEALTHY_LINK_EFFICIENCY * float(c.dl_capacity[0])
        self.compute_s = np.array([job.compute_s for job in self.jobs] + [0.0])
        self.comm_bytes = np.array([job.comm_bytes for job in self.jobs] + [0.0])
        self.healthy_step_s = self.compute_s + self.comm_bytes / self.healthy_bandwidth
        self.healthy_duty = np.divide(self.comm_bytes / self.healthy_bandwidth, self.healthy_step_s,
                                      out=np.zeros_like(self.compute_s), where=self.healthy_step_s > 0)
        self.job_gpus = np.array([job.n_gpus for job in self.jobs] + [0])
        self.job_input = np.array([job.input_bytes_s for job in self.jobs] + [0.0])
        self.job_checkpoint = np.array([job.checkpoint_bytes_s for job in self.jobs] + [0.0])
        self.job_start = np.array([job.start_step for job in self.jobs], dtype=np.int64)
        never = np.iinfo(np.int64).max
        self.job_end = np.array([never if job.end_step is None else job.end_step for job in self.jobs], dtype=np.int64)
        # Membership as flat (job, host) and (job, GPU) pairs, for vectorised lookups per step.
        self.member_job = np.array([job.index for job in self.jobs for _ in job.hosts], dtype=np.int64)
        self.member_host = np.array([h for job in self.jobs for h in job.hosts], dtype=np.int64)
        self.slot_job = np.array([job.index for job in self.jobs for _ in job.hosts for _ in job.gpus], dtype=np.int64)
        self.slot_gpu = np.array([h * c.gpus_per_host + g for job in self.jobs for h in job.hosts for g in job.gpus],
                                 dtype=np.int64)
        self._events_starting: dict[int, list[Event]] = {}
        for event in self.events:
            self._events_starting.setdefault(event.start_step, []).append(event)
        self._active: list[Event] = []
        self._flowsets: dict[tuple, FlowSet] = {}

        # Where each directed link's transmitter is a switch: only switch queues mark ECN.
        dl_switch_egress = np.zeros(c.n_dl + 1, dtype=bool)
        dl_switch_egress[c.port_tx_dl] = True
        self.dl_switch_egress = dl_switch_egress
        self.dl_pause_frames_per_s = np.append(
            np.repeat(2 * c.link_gbps * 1e9 / PAUSE_QUANTA_BITS, 2), 0.0)
        self.storage_uplink = (c.nic_host + c.nic_rail) % c.uplinks_per_leaf
        self.is_uplink_dl = np.append(np.repeat(c.link_kind == UPLINK, 2), False)
        """Per directed link (and the null link): whether it runs between a leaf and a spine."""

        # Counters. Bytes per directed link since the start (both ends of a link count these).
        self.dl_bytes = np.zeros(c.n_dl, dtype=np.int64)
        self.nic = _initial_nic_counters(c.n_nics, offsets)
        self.ethtool = _initial_ethtool_counters(c.n_nics, offsets, self.nic)
        n_switches = len(c.switch_specs)
        max_ports = max(len(spec.ports) for spec in c.switch_specs)
        self.switch_counters = np.zeros((n_switches, max_ports, len(SWITCH_COLUMNS)), dtype=np.uint64)
        self.uptime_ticks = np.zeros(n_switches, dtype=np.uint64)
        self.oper_status = np.ones((n_switches, max_ports), dtype=np.uint8)
        self._initial_switch_counters(offsets)
        self.temperature_bias = offsets.normal(0, 1.5, c.n_gpus)
        self.temperature = np.zeros(c.n_gpus)
        self.gpu_bias = offsets.normal(0, 0.012, c.n_gpus)
        self.gauges = self._gauges(self._gpu_jobs(self._active_jobs(0)), self.healthy_step_s,
                                   np.zeros(self.n_jobs + 1, dtype=np.int8), np.ones(c.n_hosts),
                                   np.zeros(self.n_jobs + 1), settle=True)
        self.truth: list[StepTruth] = []

    # Initial state --------------------------------------------------------------------
    def _initial_switch_counters(self, rng: np.random.Generator) -> None:
        c = self.cluster
        n_ports = len(c.ports)
        octets_in = rng.uniform(1e12, 5e15, n_ports)
        octets_out = rng.uniform(1e12, 5e15, n_ports)
        base = np.zeros((n_ports, len(SWITCH_COLUMNS)))
        base[:, 0], base[:, 1] = octets_in, octets_out
        base[:, 2], base[:, 3] = octets_in / PACKET_BYTES, octets_out / PACKET_BYTES
        base[:, 4] = rng.integers(0, 50_000, n_ports)
        base[:, 5] = rng.integers(0, 5_000, n_ports)
        base[:, 6] = rng.integers(0, 20, n_ports)
        # A few Counter32 discard counters sit just below 2^32 and wrap during the run.
        wrapping = rng.choice(n_ports, size=max(1, n_ports // 30), replace=False)
        base[wrapping, 4] = 2**32 - rng.integers(1, 8, wrapping.size)
        self.switch_counters[c.port_switch, c.port_position] = base.astype(np.uint64)
        self.uptime_ticks[:] = rng.integers(5 * 8_640_000, 200 * 8_640_000, len(c.switch_specs)).astype(np.uint64)

    # Events -----------------------------------------------------------------------
    def _events_at(self, step: int) -> list[Event]:
        self._active = [event for event in self._active if event.end_step > step]
        self._active += self._events_starting.get(step, [])
        return self._active

    # Flows ------------------------------------------------------------------------
    def _flowset(self, running: list[Job], reroutes: list[Event], bulk: list[Event]) -> FlowSet:
        key = (tuple(job.index for job in running), tuple(e.id for e in reroutes), tuple(e.id for e in bulk))
        flowset = self._flowsets.get(key)
        if flowset is None:
            if len(self._flowsets) > 256:
                self._flowsets.clear()
            flowset = self._flowsets[key] = self._build_flows(running, reroutes, bulk)
        return flowset

    def _build_flows(self, running: list[Job], reroutes: list[Event], bulk: list[Event]) -> FlowSet:
        c = self.cluster
        null = c.null_dl
        jobs, kinds, srcs, dsts, paths, healthy_paths, demands = [], [], [], [], [], [], []

        def add(job: int, kind: int, src: int, dst: int, path: list[int], healthy: list[int], demand: float) -> None:
            jobs.append(job), kinds.append(kind), srcs.append(src), dsts.append(dst)
            paths.append(path + [null] * (_HOPS - len(path)))
            healthy_paths.append(healthy + [null] * (_HOPS - len(healthy)))
            demands.append(demand)

        def between_leaves(src: int, dst: int, leaf_a: int, leaf_b: int, u: int) -> list[int]:
            """NIC to leaf a, up uplink u to its spine, down the same-numbered uplink of leaf b, to the NIC."""
            return [c.dl(src, UP), c.dl(c.uplink(leaf_a, u), UP), c.dl(c.uplink(leaf_b, u), DOWN), c.dl(dst, DOWN)]

        rerouted = {(e.job, e.leaf, rail): e.uplink for e in reroutes for rail in e.rails}
        for job in running:
            if not job.multi_host:
                continue
            for rail in range(c.rails):
                for position, a in enumerate(job.hosts):
                    b = job.hosts[(position + 1) % len(job.hosts)]
                    src, dst = c.nic(a, rail), c.nic(b, rail)
                    leaf_a, leaf_b = int(c.host_leaf[a]), int(c.host_leaf[b])
                    if leaf_a == leaf_b:
                        path = [c.dl(src, UP), c.dl(dst, DOWN)]
                        add(job.index, RING, src, dst, path, path, 0.0)
                        continue
                    default = rail % c.uplinks_per_leaf
                    u = rerouted.get((job.index, leaf_a, rail), default)
                    add(job.index, RING, src, dst, between_leaves(src, dst, leaf_a, leaf_b, u),
                        between_leaves(src, dst, leaf_a, leaf_b, default), 0.0)
        for n in range(c.n_nics):
            leaf = int(c.host_leaf[c.nic_host[n]])
            u = int(self.storage_uplink[n])
            uplink, storage = c.uplink(leaf, u), c.storage_link(c.uplink_spine(u))
            write = [c.dl(n, UP), c.dl(uplink, UP), c.dl(storage, UP)]
            read = [c.dl(storage, DOWN), c.dl(uplink, DOWN), c.dl(n, DOWN)]
            add(self.n_jobs, STORAGE_WRITE, n, -1, write, write, 0.0)
            add(self.n_jobs, STORAGE_READ, -1, n, read, read, 0.0)
        for event in bulk:
            uplink = c.uplink(event.leaf, event.uplink)
            storage = c.storage_link(c.uplink_spine(event.uplink))
            for n in event.nics:
                path = [c.dl(storage, DOWN), c.dl(uplink, DOWN), c.dl(n, DOWN)]
                add(self.n_jobs, BULK, -1, n, path, [null] * 3, event.level * float(c.dl_capacity[2 * n]))

        job = np.array(jobs, dtype=np.int64)
        path = np.array(paths, dtype=np.int64)
        path_healthy = np.array(healthy_paths, dtype=np.int64)
        stride = c.n_dl + 1
        own_keys = job[:, None] * stride + path
        own_healthy_keys = job[:, None] * stride + path_healthy
        _, own = np.unique(own_keys, return_inverse=True)
        _, own_healthy = np.unique(own_healthy_keys, return_inverse=True)
        n_ring = int(np.count_nonzero(np.array(kinds) == RING))
        ring_jobs, ring_starts = np.unique(job[:n_ring], return_index=True)
        links_of_job = {}
        for index in {j.index for j in running if j.multi_host}:
            hops = path[job == index].ravel()
            links_of_job[index] = frozenset(int(x) for x in np.unique(hops[hops != null] // 2))
        return FlowSet(
            job=job, kind=np.array(kinds, dtype=np.int8), src_nic=np.array(srcs, dtype=np.int64),
            dst_nic=np.array(dsts, dtype=np.int64), path=path, path_healthy=path_healthy,
            bulk_demand=np.array(demands), own=own.reshape(path.shape), own_healthy=own_healthy.reshape(path.shape),
            n_own=int(own.max()) + 1, n_own_healthy=int(own_healthy.max()) + 1, links_of_job=links_of_job,
            n_ring=n_ring, ring_jobs=ring_jobs, ring_starts=ring_starts,
        )

    def _solve(self, flows: FlowSet, path: np.ndarray, own: np.ndarray, n_own: int, demand: np.ndarray,
               capacity: np.ndarray, goodput: np.ndarray, compute_s: np.ndarray, stall_s: np.ndarray,
               running: np.ndarray) -> Solution:
        """Fixed point of duty cycles and per-hop shares (see the module docstring)."""
        ring = flows.kind == RING
        job = flows.job
        ring_demand = np.where(ring, demand, 0.0)
        own_load = np.bincount(own.ravel(), weights=np.repeat(ring_demand, _HOPS), minlength=n_own)[own]
        hop_capacity = capacity[path]
        hop_goodput = goodput[path]
        duty = self.healthy_duty.copy()
        factor = np.ones(self.n_jobs + 1)
        step_s = self.healthy_step_s.copy()
        seen = np.zeros(path.shape)
        flow_factor = np.ones(len(job))
        comm_s = np.zeros(self.n_jobs + 1)
        for _ in range(_ROUNDS):
            weight = demand * np.where(ring, duty[job], 1.0)
            load = np.bincount(path.ravel(), weights=np.repeat(weight, _HOPS), minlength=len(capacity))
            seen = load[path] + np.where(ring, 1.0 - duty[job], 0.0)[:, None] * own_load
            share = np.minimum(1.0, hop_capacity / np.maximum(seen, 1e-9)) * hop_goodput
            flow_factor = share.min(axis=1)
            factor = np.ones(self.n_jobs + 1)
            if len(flows.ring_jobs):
                factor[flows.ring_jobs] = np.minimum.reduceat(flow_factor[: flows.n_ring], flows.ring_starts)
            comm_s = self.comm_bytes / (self.healthy_bandwidth * factor)
            step_s = compute_s + comm_s + stall_s
            duty = np.where(running, comm_s / np.maximum(step_s, 1e-12), 0.0)
        return Solution(factor, duty, step_s, seen, flow_factor)

    # One step --------------------------------------------------------------------
    def advance(self, step: int) -> None:
        """Simulate interval ``step`` and add what it did to every counter and gauge."""
        c, dt = self.cluster, self.dt
        conditions = self._conditions(step, self._events_at(step))
        active = self._active_jobs(step)
        active_jobs = [self.jobs[index] for index in np.flatnonzero(active)]
        running = active & (conditions.state == RUN)
        member = active[self.member_job]
        host_job = np.full(c.n_hosts, self.n_jobs)
        host_job[self.member_host[member]] = self.member_job[member]
        slowest = np.ones(self.n_jobs + 1)
        np.maximum.at(slowest, self.member_job[member], conditions.host_slow[self.member_host[member]])
        compute_s = np.where(active, self.compute_s * slowest, 0.0)

        flows = self._flowset(active_jobs, conditions.reroutes, conditions.bulk)
        demand, demand_healthy = self._demands(flows, conditions, active, running, host_job)
        capacity_host = c.dl_capacity.copy()
        capacity_host[c.dl(np.arange(c.n_nics), DOWN)] *= 1.0 - conditions.nic_host_pause
        capacity = capacity_host.copy()
        capacity[c.dl(np.arange(c.n_nics), UP)] *= 1.0 - conditions.nic_storm_pause
        dl_loss = np.append(np.repeat(conditions.link_loss, 2), 0.0)
        goodput = 1.0 / (1.0 + LOSS_PENALTY_PACKETS * dl_loss)
        actual = self._solve(flows, flows.path, flows.own, flows.n_own, demand, capacity, goodput, compute_s,
                             conditions.stall_s, running)
        uncontended = np.where(self.is_uplink_dl, np.inf, capacity_host)
        healthy = self._solve(flows, flows.path_healthy, flows.own_healthy, flows.n_own_healthy, demand_healthy,
                              uncontended, np.ones(c.n_dl + 1), compute_s, conditions.stall_s, running)

        progress = np.where(running, self.healthy_step_s / np.maximum(actual.step_s, 1e-12), 0.0)
        progress_healthy = np.where(running, self.healthy_step_s / np.maximum(healthy.step_s, 1e-12), 0.0)
        gpu_seconds = self.job_gpus * dt
        network_loss = np.maximum(gpu_seconds * (progress_healthy - progress), 0.0)
        other_loss = gpu_seconds * (1.0 - progress_healthy)
        self._record_truth(step, active_jobs, progress, network_loss, other_loss, conditions, flows, actual,
                           capacity)

        traffic = self._traffic(flows, actual, demand, capacity, dl_loss, running)
        self._count_nics(flows, traffic, conditions)
        self._count_switches(traffic, conditions)
        self.gauges = self._gauges(self._gpu_jobs(active), actual.step_s, conditions.state, conditions.host_slow,
                                   conditions.stall_s)

    def _conditions(self, step: int, events: list[Event]) -> Conditions:
        """What the active events do to jobs, hosts, NICs and links in this step."""
        c, n_jobs = self.cluster, self.n_jobs
        conditions = Conditions(
            state=np.zeros(n_jobs + 1, dtype=np.int8), stall_s=np.zeros(n_jobs + 1), read_share=np.ones(n_jobs + 1),
            host_slow=np.ones(c.n_hosts), nic_host_pause=np.zeros(c.n_nics), nic_storm_pause=np.zeros(c.n_nics),
            link_loss=np.zeros(c.n_links),
        )
        for event in events:
            if event.kind == "checkpoint":
                conditions.state[event.job] = max(conditions.state[event.job], CHECKPOINT)
            elif event.kind == "hung_job":
                conditions.state[event.job] = HUNG
            elif event.kind == "input_stall":
                conditions.stall_s[event.job] = event.level * self.compute_s[event.job]
                conditions.read_share[event.job] = INPUT_STALL_READ_SHARE
            elif event.kind == "slow_host":
                conditions.host_slow[event.host] = event.level
                conditions.nic_host_pause[list(event.nics)] = event.level2
            elif event.kind == "pfc_storm":
                conditions.nic_storm_pause[list(event.nics)] = np.clip(
                    event.level * self.rng.uniform(0.85, 1.1), 0.0, 0.95)
            elif event.kind == "link_degradation":
                progress = (step - event.start_step + 1) / (event.end_step - event.start_step)
                conditions.link_loss[list(event.links)] = event.level * progress**2
            elif event.kind == "congestion":
                (conditions.reroutes if event.variant == "ecmp_collision" else conditions.bulk).append(event)
            elif event.kind == "switch_reboot" and event.start_step == step:
                conditions.reboots.append(event)
            if event.kind in NETWORK_CAUSES:
                conditions.network.append(event)
            elif event.job is not None:
                conditions.confounders.setdefault(event.job, []).append(event)
        return conditions

    def _demands(self, flows: FlowSet, conditions: Conditions, active: np.ndarray, running: np.ndarray,
                 host_job: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bytes/s each flow wants, with and without bulk transfers: rings at the healthy rate while
        their job runs, storage by what each host's job does."""
        c = self.cluster
        nic_job = host_job[c.nic_host]
        state, share = conditions.state, conditions.read_share
        read = (HOST_BACKGROUND_BYTES_S + np.where(running[nic_job], self.job_input[nic_job] * share[nic_job], 0.0))
        write = (HOST_BACKGROUND_BYTES_S + np.where(active[nic_job] & (state[nic_job] == CHECKPOINT),
                                                    self.job_checkpoint[nic_job], 0.0))
        demand = np.where((flows.kind == RING) & running[flows.job], self.healthy_bandwidth, 0.0)
        demand[flows.kind == STORAGE_WRITE] = write / c.rails
        demand[flows.kind == STORAGE_READ] = read / c.rails
        return demand + flows.bulk_demand, demand

    def _traffic(self, flows: FlowSet, actual: Solution, demand: np.ndarray, capacity: np.ndarray,
                 dl_loss: np.ndarray, running: np.ndarray) -> Traffic:
        """Bytes of each flow, then of each directed link, and the overload at every hop."""
        c, dt = self.cluster, self.dt
        ring = flows.kind == RING
        steps_done = np.where(running, dt / np.maximum(actual.step_s, 1e-12), 0.0)
        path_loss = dl_loss[flows.path].sum(axis=1)
        flow_bytes = np.where(
            ring, steps_done[flows.job] * self.comm_bytes[flows.job] * (1 + RETRANSMIT_PACKETS_PER_LOSS * path_loss),
            demand * actual.flow_factor * dt)
        dl_traffic = np.bincount(flows.path.ravel(), weights=np.repeat(flow_bytes, _HOPS), minlength=c.n_dl + 1)
        dl_traffic = dl_traffic[: c.n_dl] + self.rng.uniform(*CONTROL_BYTES_S, c.n_dl) * dt
        dl_delta = (dl_traffic // 4).astype(np.int64) * 4
        before = self.dl_bytes
        self.dl_bytes = before + dl_delta
        overload = actual.seen / np.maximum(capacity[flows.path], 1e-9)
        overload[demand <= 0] = 0.0
        dl_overload = np.zeros(c.n_dl + 1)
        np.maximum.at(dl_overload, flows.path.ravel(), overload.ravel())
        dl_packets = self.dl_bytes // PACKET_BYTES - before // PACKET_BYTES
        return Traffic(
            flow_bytes=flow_bytes, flow_packets=flow_bytes / PACKET_BYTES,
            flow_active_s=np.where(ring, actual.duty[flows.job] * dt, np.where(demand > 0, dt, 0.0)),
            path_loss=path_loss, overload=overload, dl_delta=dl_delta, dl_packets=dl_packets,
            dl_overload=dl_overload[: c.n_dl], corrupted=self.rng.poisson(dl_packets * dl_loss[: c.n_dl]),
        )

    def _poisson(self, values: np.ndarray) -> np.ndarray:
        return self.rng.poisson(np.maximum(values, 0.0)).astype(np.uint64)

    def _count_nics(self, flows: FlowSet, traffic: Traffic, conditions: Conditions) -> None:
        """Add this step to every NIC's sysfs counters and ethtool statistics."""
        c, dt, poisson = self.cluster, self.dt, self._poisson
        n = c.n_nics
        ring = flows.kind == RING
        src_ok, dst_ok = flows.src_nic >= 0, flows.dst_nic >= 0

        def at_senders(values: np.ndarray) -> np.ndarray:
            return np.bincount(flows.src_nic[src_ok], weights=values[src_ok], minlength=n)

        def at_receivers(values: np.ndarray) -> np.ndarray:
            return np.bincount(flows.dst_nic[dst_ok], weights=values[dst_ok], minlength=n)

        tx_bytes, rx_bytes = traffic.dl_delta[0: 2 * n: 2], traffic.dl_delta[1: 2 * n: 2]
        tx_packets, rx_packets = traffic.dl_packets[0: 2 * n: 2], traffic.dl_packets[1: 2 * n: 2]
        storm, host_pause = conditions.nic_storm_pause, conditions.nic_host_pause

        # ECN marks at switch queues (fewer at a queue a pausing host holds back).
        hops = flows.path
        host_paused_dl = np.zeros(c.n_dl + 1, dtype=bool)
        host_paused_dl[c.dl(np.arange(n), DOWN)] = host_pause > 0
        marking = np.where(self.dl_switch_egress[hops],
                           np.clip(ECN_MARK_SLOPE * (traffic.overload - 1.0), 0.0, ECN_MARK_MAX), 0.0)
        marking *= np.where(host_paused_dl[hops], PAUSED_QUEUE_MARK_SHARE, 1.0)
        marked = traffic.flow_packets * marking.max(axis=1)
        cnps = marked * CNP_PER_MARK
        marked_rx = at_receivers(marked) + rx_packets * BACKGROUND_ECN_PER_PACKET
        cnp_sent = at_receivers(cnps) + rx_packets * BACKGROUND_ECN_PER_PACKET * CNP_PER_MARK
        cnp_back = at_senders(cnps)  # includes notifications from storage receivers of our writes
        lost = traffic.flow_packets * traffic.path_loss
        lost_by_sender, lost_by_receiver = at_senders(lost), at_receivers(lost)

        # Pauses in seconds. Received: storms, and back-pressure on overloaded or slow-receiver paths.
        congestion_wait = np.where(
            self.dl_switch_egress[hops] & (traffic.overload > 1.0),
            BACKPRESSURE_PAUSE_SHARE * (1.0 - 1.0 / np.maximum(traffic.overload, 1.0)), 0.0).max(axis=1)
        receiver_pause = np.zeros(c.n_dl + 1)
        receiver_pause[c.dl(np.arange(n), DOWN)] = host_pause * SLOW_RECEIVER_PAUSE_SPREAD
        slow_wait = receiver_pause[hops].max(axis=1)
        backpressure = at_senders(traffic.flow_active_s * np.where(ring, np.maximum(congestion_wait, slow_wait), 0.0))
        link_capacity = c.dl_capacity[0: 2 * n: 2]
        storm_wait = tx_bytes / (link_capacity * (1.0 - storm)) * storm
        rx_pause_s = np.minimum(dt, storm * dt + backpressure)
        tx_pause_s = np.minimum(dt, rx_bytes / (link_capacity * np.maximum(1.0 - host_pause, 0.05)) * host_pause)
        xmit_wait_s = np.minimum(dt, storm_wait + backpressure)
        frames_per_s = self.dl_pause_frames_per_s[0: 2 * n: 2]

        corrupted = traffic.corrupted[1: 2 * n: 2]
        ring_rx_packets = at_receivers(np.where(ring, traffic.flow_packets, 0.0))
        adds = {
            "port_xmit_data": (tx_bytes // 4).astype(np.uint64),
            "port_rcv_data": (rx_bytes // 4).astype(np.uint64),
            "port_xmit_packets": tx_packets.astype(np.uint64),
            "port_rcv_packets": rx_packets.astype(np.uint64),
            "unicast_xmit_packets": tx_packets.astype(np.uint64),
            "unicast_rcv_packets": rx_packets.astype(np.uint64),
            "port_xmit_wait": (xmit_wait_s * XMIT_WAIT_TICKS_PER_S).astype(np.uint64),
            "port_rcv_errors": corrupted.astype(np.uint64),
            "symbol_error": poisson(corrupted * SYMBOL_ERRORS_PER_BAD_PACKET + BACKGROUND_SYMBOL_ERRORS_PER_STEP),
            "link_error_recovery": poisson(corrupted * 2e-4),
            "np_ecn_marked_roce_packets": poisson(marked_rx),
            "np_cnp_sent": poisson(cnp_sent),
            "rp_cnp_handled": poisson(cnp_back * 0.97),
            "rp_cnp_ignored": poisson(cnp_back * 0.03),
            "roce_adp_retrans": poisson(lost_by_sender),
            "roce_adp_retrans_to": poisson(lost_by_sender * 0.02),
            "roce_slow_restart": poisson(lost_by_sender * 0.01),
            "roce_slow_restart_cnps": poisson(cnp_back * 1e-4),
            "roce_slow_restart_trans": poisson(lost_by_sender * 0.01),
            "packet_seq_err": poisson(lost_by_sender * 0.8),
            "implied_nak_seq_err": poisson(lost_by_sender * 0.1),
            "local_ack_timeout_err": poisson(lost_by_sender * 0.05),
            "out_of_sequence": poisson(lost_by_receiver * 6),
            "duplicate_request": poisson(lost_by_receiver * 0.2),
            "out_of_buffer": poisson(host_pause * rx_packets * 1e-6 + 0.02),
            "rx_write_requests": (ring_rx_packets / 4).astype(np.uint64),
            "rx_read_requests": poisson(rx_packets * 1e-3),
        }
        rx_frames = poisson(rx_pause_s * frames_per_s)
        tx_frames = poisson(tx_pause_s * frames_per_s)
        tx_total, rx_total = tx_bytes.astype(np.uint64), rx_bytes.astype(np.uint64)
        ethtool_adds = {
            "rx_packets_phy": adds["port_rcv_packets"], "tx_packets_phy": adds["port_xmit_packets"],
            "rx_bytes_phy": rx_total, "tx_bytes_phy": tx_total,
            "rx_vport_rdma_unicast_packets": adds["port_rcv_packets"],
            "tx_vport_rdma_unicast_packets": adds["port_xmit_packets"],
            "rx_vport_rdma_unicast_bytes": rx_total, "tx_vport_rdma_unicast_bytes": tx_total,
            "rx_prio3_bytes": rx_total, "tx_prio3_bytes": tx_total,
            "rx_prio3_packets": adds["port_rcv_packets"], "tx_prio3_packets": adds["port_xmit_packets"],
            "rx_crc_errors_phy": adds["port_rcv_errors"], "rx_symbol_err_phy": adds["symbol_error"],
            "rx_prio3_pause": rx_frames, "tx_prio3_pause": tx_frames,
            "rx_pause_ctrl_phy": rx_frames, "tx_pause_ctrl_phy": tx_frames,
            "rx_prio3_pause_duration": (rx_pause_s * 1e6).astype(np.uint64),
            "tx_prio3_pause_duration": (tx_pause_s * 1e6).astype(np.uint64),
            "rx_prio3_pause_transition": poisson(rx_pause_s * PAUSE_TRANSITIONS_PER_S),
            "tx_prio3_pause_transition": poisson(tx_pause_s * PAUSE_TRANSITIONS_PER_S),
            "tx_pause_storm_warning_events": poisson(tx_pause_s * 0.2),
            "rx_out_of_buffer": adds["out_of_buffer"],
            "rx_discards_phy": poisson(np.full(n, BACKGROUND_NIC_DROPS_PER_STEP)),
            "rx_prio3_discards": poisson(np.full(n, BACKGROUND_NIC_DROPS_PER_STEP / 2)),
        }
        # New dicts of new arrays, swapped in whole: readers in other threads see one step or the next.
        self.nic = {**self.nic, **{name: self.nic[name] + value for name, value in adds.items()}}
        self.ethtool = {**self.ethtool, **{name: self.ethtool[name] + value for name, value in ethtool_adds.items()}}

    def _count_switches(self, traffic: Traffic, conditions: Conditions) -> None:
        """Add this step to every switch port: a port sends and receives its link's directed traffic."""
        c = self.cluster
        rx_dl, tx_dl = c.port_rx_dl, c.port_tx_dl
        n_ports = len(c.ports)
        adds = np.zeros((n_ports, len(SWITCH_COLUMNS)), dtype=np.uint64)
        adds[:, 0] = traffic.dl_delta[rx_dl]
        adds[:, 1] = traffic.dl_delta[tx_dl]
        adds[:, 2] = traffic.dl_packets[rx_dl]
        adds[:, 3] = traffic.dl_packets[tx_dl]
        adds[:, 4] = self._poisson(np.full(n_ports, BACKGROUND_IN_DISCARDS_PER_STEP))
        adds[:, 5] = self._poisson(traffic.dl_packets[tx_dl] * DROPS_PER_PACKET_OVERLOAD
                                   * np.maximum(traffic.dl_overload[tx_dl] - 1, 0) + BACKGROUND_OUT_DISCARDS_PER_STEP)
        adds[:, 6] = traffic.corrupted[rx_dl]
        for reboot in conditions.reboots:
            self.switch_counters[reboot.switch] = 0
            self.uptime_ticks[reboot.switch] = 0
        self.switch_counters[c.port_switch, c.port_position] += adds
        self.uptime_ticks += np.uint64(round(self.dt * 100))

    # Ground truth -------------------------------------------------------------------
    def _held_back_uplinks(self, flows: FlowSet, actual: Solution, capacity: np.ndarray) -> dict[int, set[int]]:
        """Per job: the uplinks (physical links) where its rings saw more load than the link carries."""
        ring_hops = (flows.kind == RING)[:, None] & self.is_uplink_dl[flows.path]
        flow, hop = np.nonzero(ring_hops & (actual.seen > capacity[flows.path]))
        held: dict[int, set[int]] = {}
        for job, link in zip(flows.job[flow].tolist(), (flows.path[flow, hop] // 2).tolist()):
            held.setdefault(job, set()).add(link)
        return held

    def _record_truth(self, step: int, active_jobs: list[Job], progress: np.ndarray, network_loss: np.ndarray,
                      other_loss: np.ndarray, conditions: Conditions, flows: FlowSet, actual: Solution,
                      capacity: np.ndarray) -> None:
        indices = np.array([job.index for job in active_jobs], dtype=np.int64)
        network_event = np.full(len(indices), -1)
        other_event = np.full(len(indices), -1)
        links: dict[int, tuple[str, ...]] = {}
        held_back: dict[int, set[int]] | None = None  # found once, and only for loss no event explains
        for position, index in enumerate(indices):
            crossed = flows.links_of_job.get(int(index), frozenset())
            for event in conditions.network:
                touched = crossed.intersection(event.links)
                if touched or event.job == index and event.variant == "ecmp_collision":
                    network_event[position] = event.id
                    links[int(index)] = tuple(sorted(
                        name for link in (touched or event.links) for name in self.cluster.link_ids(link)))
                    break
            if network_event[position] < 0 and network_loss[index] > 0:
                if held_back is None:
                    held_back = self._held_back_uplinks(flows, actual, capacity)
                if int(index) in held_back:
                    network_event[position] = CONTENTION.id
                    links[int(index)] = tuple(sorted(
                        name for link in held_back[int(index)] for name in self.cluster.link_ids(link)))
            own = conditions.confounders.get(int(index), [])
            if own:
                chosen = min(own, key=lambda event: _CONFOUNDER_PRIORITY.index(event.kind))
                other_event[position] = chosen.id
        self.truth.append(StepTruth(step, indices, progress[indices], network_loss[indices], other_loss[indices],
                                    network_event, other_event, links))

    # GPUs -------------------------------------------------------------------------
    def _active_jobs(self, step: int) -> np.ndarray:
        """Which jobs run in this step (plus the always-inactive "no job" slot at the end)."""
        return np.append((self.job_start <= step) & (step < self.job_end), False)

    def _gpu_jobs(self, active: np.ndarray) -> np.ndarray:
        """Job index of every GPU, -1 where unallocated."""
        gpu_job = np.full(self.cluster.n_gpus, -1)
        chosen = active[self.slot_job]
        gpu_job[self.slot_gpu[chosen]] = self.slot_job[chosen]
        return gpu_job

    def _gauges(self, gpu_job: np.ndarray, step_s: np.ndarray, state: np.ndarray, host_slow: np.ndarray,
                stall_s: np.ndarray, *, settle: bool = False) -> GpuGauges:
        """Gauges of the interval just simulated; ``settle`` starts temperatures at equilibrium."""
        c, rng, dt = self.cluster, self.rng, self.dt
        model = self.config.model
        allocated = gpu_job >= 0
        job = np.where(allocated, gpu_job, self.n_jobs)
        job_state = np.where(allocated, state[job], -1)
        sm_level = np.array([j.sm_level for j in self.jobs] + [0.0])
        memory = np.array([j.memory_mib for j in self.jobs] + [0.0])
        own_compute = (np.array([j.compute_s for j in self.jobs] + [0.0])[job] * host_slow[c.gpu_host])
        period = np.maximum(step_s[job], 1e-12)
        running = job_state == RUN
        sm = np.where(running, sm_level[job] * own_compute / period, 0.0)
        busy = np.where(running, (period - stall_s[job]) / period, 0.0)
        sm = np.where(job_state == CHECKPOINT, CHECKPOINT_SM, sm)
        busy = np.where(job_state == CHECKPOINT, CHECKPOINT_UTIL, busy)
        sm = np.where(job_state == HUNG, HUNG_SM, sm)
        busy = np.where(job_state == HUNG, 1.0, busy)
        noise = rng.normal(0.0, 0.015, c.n_gpus)
        sm = np.clip(sm * (1.0 + self.gpu_bias + noise), 0.0, 1.0)
        busy = np.clip(busy + np.where(allocated, rng.normal(0.0, 0.008, c.n_gpus), 0.0), 0.0, 1.0)
        occupancy = np.clip(sm * rng.uniform(0.4, 0.5, c.n_gpus), 0.0, 1.0)
        memory_util = np.clip(sm * 0.55 + busy * 0.05, 0.0, 1.0)
        memory_used = np.where(allocated, memory[job] + rng.normal(0.0, 40.0, c.n_gpus), 0.0)
        throttled = host_slow[c.gpu_host] > 1.0
        load = np.clip(0.08 * busy + 0.72 * sm + 0.2 * memory_util, 0.0, 1.0)
        power = model.idle_power_w + (model.max_power_w - model.idle_power_w) * load
        power = np.where(throttled, power * SLOW_HOST_POWER_SHARE, power) * (1.0 + rng.normal(0.0, 0.01, c.n_gpus))
        target = 27.0 + 0.065 * power + self.temperature_bias + np.where(throttled, SLOW_HOST_TEMPERATURE_C, 0.0)
        follow = 1.0 if settle else 1 - np.exp(-dt / TEMPERATURE_TIME_CONSTANT_S)
        self.temperature = self.temperature + (target - self.temperature) * follow
        # Busy GPUs boost to the model's top clock; a throttled host runs slower by its slowdown.
        clocks = np.where(busy > 0.1, model.max_sm_clock_mhz / host_slow[c.gpu_host], IDLE_SM_CLOCK_MHZ)
        return GpuGauges(
            sm_active=sm * 100.0, sm_occupancy=occupancy * 100.0, utilization_gpu=busy * 100.0,
            utilization_memory=memory_util * 100.0, memory_used_mib=np.maximum(memory_used, 0.0), power_w=power,
            temperature_c=self.temperature.copy(), clocks_sm_mhz=np.round(clocks), job=gpu_job,
        )


def gpu_uuid(host: str, index: int) -> str:
    """A stable UUID per simulated GPU, formatted as NVML does."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{host}.gpu{index}.strandwatch.sim')}"


def _initial_nic_counters(n_nics: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Counters as a host that has been up for a while shows them."""
    words_tx = rng.uniform(1e11, 5e13, n_nics)
    words_rx = rng.uniform(1e11, 5e13, n_nics)
    start: dict[str, np.ndarray] = {name: np.zeros(n_nics) for name in SYSFS_COUNTERS + HW_COUNTERS}
    start["port_xmit_data"], start["port_rcv_data"] = words_tx, words_rx
    start["port_xmit_packets"] = start["unicast_xmit_packets"] = words_tx * 4 / PACKET_BYTES
    start["port_rcv_packets"] = start["unicast_rcv_packets"] = words_rx * 4 / PACKET_BYTES
    start["multicast_xmit_packets"] = rng.integers(100, 5_000, n_nics)
    start["multicast_rcv_packets"] = rng.integers(100, 5_000, n_nics)
    start["port_xmit_wait"] = rng.uniform(1e6, 1e9, n_nics)
    start["symbol_error"] = rng.integers(0, 40, n_nics)
    start["link_downed"] = rng.integers(0, 3, n_nics)
    start["link_error_recovery"] = rng.integers(0, 3, n_nics)
    for name in ("np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled"):
        start[name] = rng.integers(1_000, 200_000, n_nics)
    for name in ("out_of_sequence", "packet_seq_err", "roce_adp_retrans", "local_ack_timeout_err", "out_of_buffer"):
        start[name] = rng.integers(0, 200, n_nics)
    start["rx_write_requests"] = words_rx * 4 / PACKET_BYTES / 4
    start["rx_read_requests"] = rng.integers(10_000, 1_000_000, n_nics)
    start["lifespan"] = np.full(n_nics, 10)
    return {name: values.astype(np.uint64) for name, values in start.items()}


def _initial_ethtool_counters(n_nics: int, rng: np.random.Generator,
                              nic: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    start = {name: np.zeros(n_nics, dtype=np.uint64) for name in ETHTOOL_STATS}
    for name, source in (("rx_bytes_phy", "port_rcv_data"), ("tx_bytes_phy", "port_xmit_data")):
        start[name] = nic[source] * np.uint64(4) + rng.integers(0, 10**9, n_nics).astype(np.uint64)
    start["rx_packets_phy"] = nic["port_rcv_packets"] + nic["multicast_rcv_packets"]
    start["tx_packets_phy"] = nic["port_xmit_packets"] + nic["multicast_xmit_packets"]
    for direction in ("rx", "tx"):
        start[f"{direction}_vport_rdma_unicast_bytes"] = start[f"{direction}_bytes_phy"] - rng.integers(
            0, 10**8, n_nics).astype(np.uint64)
        start[f"{direction}_vport_rdma_unicast_packets"] = start[f"{direction}_packets_phy"] // np.uint64(2)
        start[f"{direction}_prio3_bytes"] = start[f"{direction}_vport_rdma_unicast_bytes"]
        start[f"{direction}_prio3_packets"] = start[f"{direction}_vport_rdma_unicast_packets"]
        start[f"{direction}_prio0_bytes"] = rng.integers(10**8, 10**10, n_nics).astype(np.uint64)
        start[f"{direction}_prio0_packets"] = start[f"{direction}_prio0_bytes"] // np.uint64(800)
    start["rx_prio3_pause"] = rng.integers(0, 50_000, n_nics).astype(np.uint64)
    start["rx_prio3_pause_duration"] = start["rx_prio3_pause"] * np.uint64(40)
    start["tx_prio3_pause"] = rng.integers(0, 5_000, n_nics).astype(np.uint64)
    start["tx_prio3_pause_duration"] = start["tx_prio3_pause"] * np.uint64(40)
    start["rx_pause_ctrl_phy"] = start["rx_prio3_pause"]
    start["tx_pause_ctrl_phy"] = start["tx_prio3_pause"]
    start["rx_crc_errors_phy"] = rng.integers(0, 5, n_nics).astype(np.uint64)
    start["rx_symbol_err_phy"] = nic["symbol_error"].copy()
    start["rx_discards_phy"] = rng.integers(0, 100, n_nics).astype(np.uint64)
    start["rx_out_of_buffer"] = nic["out_of_buffer"].copy()
    return start
