"""A congestion score per link and interval, with the evidence behind it.

Everything that attaches to a link is read as a *signal*, a rate per second on
the link: the switch's own port counters (utilization against ifHighSpeed in
both directions, discards, errors, oper status) and, through the topology (a
NIC's host and device give its leaf port), what the NIC on the other end of the
cable sees (port_xmit_wait, ECN marks and CNPs, retransmissions and ack
timeouts, symbol and receive errors, PFC pauses received). Each signal is
scored against its normal level on that link::

    score = (value - normal) / max(floor, relative * normal)

where ``normal`` is the lower of the link's own 25th percentile and the
fleet's median for the signal (so a link congested most of the time still has
a clean normal), ``floor`` the smallest excess that matters and ``relative``
how many times its normal a signal must rise. A score of 1 means "congested".
The link's score is the highest of its signals; every signal's value, normal
and score stay in the evidence so an episode can say which counters rose and how far.

Signals come in two kinds. *Local* ones are measured on the link itself
(switch port counters, the NIC's cable errors): they say *this* link is the
problem. *Path* ones are measured at the NIC end (ECN marks, CNPs, pauses,
xmit_wait, retransmissions): they say the NIC's traffic meets congestion
somewhere on its path, not necessarily on its own cable. Both make a link
congested; when links are blamed, local evidence ranks first.

Pauses a host *sends* (``tx_prio*_pause``) are not link congestion: the host
is back-pressuring the fabric, a slow receiver. They are scored per host
(``host_pause``) so attribution can tell a slow host from a congested fabric.

Utilization alone never makes a link congested: an all-reduce that fills a
link at line rate with no drops, marks or pauses is a healthy fabric. Its
score tops out at ``UTILIZATION_CAP`` (below 1), enough to rank a saturated
uplink first among the blamed links.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from detector.rates import map_keys, map_series
from detector.telemetry import NIC_ERRORS, NIC_RECOVERY, Telemetry
from detector.topology import Topology

LOCAL = "local"
PATH = "path"


@dataclass(frozen=True, slots=True)
class Signal:
    """One kind of congestion evidence on a link and how to score it."""

    name: str
    kind: str
    counters: str
    unit: str
    floor: float
    relative: float = 1.0
    fleet_normal: bool = True
    """Whether the fleet's median may lower a link's normal (not for a port that is down all along: unused)."""


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("discards", LOCAL, "ifInDiscards + ifOutDiscards", "packets/s", floor=1.0),
    Signal("port_errors", LOCAL, "ifInErrors + ifOutErrors", "packets/s", floor=1.0),
    Signal("link_down", LOCAL, "ifOperStatus != up", "", floor=1.0, fleet_normal=False),
    Signal("queue_drops", LOCAL, "vendor queue and buffer drops (CUMULUS-COUNTERS, MELLANOX-QOS, JUNIPER-COS, "
           "ARISTA-QUEUE)", "packets/s", floor=1.0),
    Signal("switch_pauses_sent", LOCAL, "PFC/PAUSE frames the switch sends out of the port", "frames/s",
           floor=100.0),
    Signal("switch_pauses_received", LOCAL, "PFC/PAUSE frames the switch receives from a peer switch", "frames/s",
           floor=100.0),
    Signal("port_tx_wait", LOCAL, "mellanoxQoSPortTxWaitMicroseconds", "share of time", floor=0.01),
    Signal("cable_errors", LOCAL, " + ".join(NIC_ERRORS), "events/s", floor=1.0),
    Signal("xmit_wait", PATH, "port_xmit_wait", "ticks/s", floor=1e5),
    Signal("ecn_marked", PATH, "np_ecn_marked_roce_packets", "packets/s", floor=1e3),
    Signal("cnp", PATH, "np_cnp_sent + rp_cnp_handled", "packets/s", floor=1e3),
    Signal("retransmissions", PATH, " + ".join(NIC_RECOVERY), "events/s", floor=1.0),
    Signal("pauses_received", PATH, "rx_prio*_pause", "frames/s", floor=100.0),
    Signal("paused_time", PATH, "rx_prio*_pause_duration", "share of time", floor=0.01),
)}
"""Default signals; floors are rates per second at which an excess alone counts as congestion."""

UTILIZATION = Signal("utilization", LOCAL, "max(ifHCInOctets, ifHCOutOctets) * 8 / ifHighSpeed",
                     "share of line rate", floor=0.0)
"""Scored on its own ramp (below), not against a normal."""
UTILIZATION_START = 0.60
UTILIZATION_FULL = 0.95
UTILIZATION_CAP = 0.9

HOST_SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("pauses_sent", "host", "tx_prio*_pause (or the pauses its leaf port receives)", "frames/s",
           floor=100.0),
    Signal("pause_time_sent", "host", "tx_prio*_pause_duration", "share of time", floor=0.01),
)}
"""Pauses a host sends: scored per host, evidence of a slow receiver."""

NORMAL_QUANTILE = 0.25


@dataclass(slots=True)
class Congestion:
    """Per-link and per-host congestion on the telemetry's grid."""

    scores: pd.DataFrame
    """time, link, score, local_score, path_score, top_signal: one row per link and interval."""
    signals: pd.DataFrame
    """time, link, signal, kind, value, normal, score: the evidence, one row per signal, link and interval."""
    host_pause: pd.DataFrame
    """time, host, signal, value, normal, score: pauses each host sends."""
    host_traffic: pd.DataFrame
    """time, host, tx_bytes, rx_bytes (per second), from NIC counters, else ethtool, else its switch ports."""
    unmapped: dict[str, set[str]] = field(default_factory=dict)
    """Series the topology does not place (e.g. a NIC on a host it lacks), per measurement."""


def link_congestion(telemetry: Telemetry, topology: Topology, signals: dict[str, Signal] | None = None) -> Congestion:
    """Score every link of the telemetry for every interval."""
    signals = SIGNALS if signals is None else signals
    unmapped: dict[str, set[str]] = {}
    ports = _switch_ports(telemetry.ports, topology)
    nics = _nic_links(telemetry.nics, topology, unmapped)
    pauses = _pause_links(telemetry.pauses, telemetry.nics, topology, unmapped)
    host_of_link = {link: host for (host, _), link in topology.nic_links().items()}
    facing_host = map_series(ports["link"], host_of_link) if not ports.empty else pd.Series(dtype=object)

    long_parts = [
        _long(ports, {
            "discards": _sum(ports, ["discards_in", "discards_out"]),
            "port_errors": _sum(ports, ["errors_in", "errors_out"]),
            "link_down": None if ports.empty else
            (ports["oper_status"].notna() & (ports["oper_status"] != 1)).astype(float),
            "queue_drops": _sum(ports, ["queue_drops"]),
            "switch_pauses_sent": _sum(ports, ["pauses_out"]),
            # Pauses a host sends into its leaf port are the host's (see host_pause), a peer switch's the link's.
            "switch_pauses_received": None if ports.empty else ports["pauses_in"].where(facing_host.isna()),
            "port_tx_wait": _sum(ports, ["tx_wait"]),
        }),
        _long(nics, {
            "cable_errors": _sum(nics, NIC_ERRORS),
            "xmit_wait": _sum(nics, ["port_xmit_wait"]),
            "ecn_marked": _sum(nics, ["np_ecn_marked_roce_packets"]),
            "cnp": _sum(nics, ["np_cnp_sent", "rp_cnp_handled"]),
            "retransmissions": _sum(nics, NIC_RECOVERY),
        }),
        _long(pauses, {
            "pauses_received": _sum(pauses, ["pause_rx"]),
            "paused_time": _sum(pauses, ["pause_rx_us"], scale=1e-6),
        }),
    ]
    evidence = pd.concat([part for part in long_parts if not part.empty] or [_empty_long()], ignore_index=True)
    evidence = evidence[evidence["signal"].isin(list(signals))]
    evidence = evidence.groupby(["time", "link", "signal"], as_index=False, sort=False)["value"].sum()
    evidence = _score(evidence, "link", signals)
    evidence["kind"] = evidence["signal"].map({name: s.kind for name, s in signals.items()})
    utilization = _utilization(ports)
    evidence = pd.concat([evidence, utilization], ignore_index=True) if not utilization.empty else evidence

    scores = _link_scores(evidence)
    host_pause = _host_pause(pauses, ports.assign(host=facing_host).dropna(subset=["host"]) if not ports.empty
                             else ports)
    traffic = _host_traffic(telemetry, ports, topology)
    return Congestion(scores, evidence.reset_index(drop=True), host_pause, traffic, unmapped)


def _switch_agents(topology: Topology) -> dict[str, str]:
    """Data's agent_host (the configured one, or the switch's name) -> the topology's agent_host."""
    agents = {switch.name: switch.agent_host for switch in topology.switches.values()}
    agents.update({switch.agent_host: switch.agent_host for switch in topology.switches.values()})
    return agents


def _switch_ports(ports: pd.DataFrame, topology: Topology) -> pd.DataFrame:
    if ports.empty:
        return ports.assign(link=pd.Series(dtype=str))
    agents = _switch_agents(topology)
    agent = map_series(ports["agent_host"], agents).fillna(ports["agent_host"])
    return ports.assign(link=agent + ":" + ports["port"])


def _nic_links(nics: pd.DataFrame, topology: Topology, unmapped: dict[str, set[str]]) -> pd.DataFrame:
    if nics.empty:
        return nics.assign(link=pd.Series(dtype=str))
    links = topology.nic_links()
    mapped = pd.Series(map_keys([nics["host"], nics["device"]], lambda *key: links.get(key)), index=nics.index,
                       dtype=object)
    unplaced = nics.loc[mapped.isna().to_numpy(), ["host", "device"]].drop_duplicates()
    missing = {f"{host}/{device}" for host, device in unplaced.itertuples(index=False)}
    if missing:
        unmapped["infiniband"] = missing
    return nics.assign(link=mapped).dropna(subset=["link"])


def _netdev_nics(topology: Topology, nics: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(host, netdev) -> RDMA device: from the topology, else from the infiniband points' netdev tag."""
    found = {(nic.host, nic.netdev): nic.device for host in topology.hosts.values()
             for nic in host.nics.values() if nic.netdev}
    if not nics.empty:
        known = nics[["host", "device", "netdev"]].dropna().drop_duplicates()
        for host, device, netdev in known.itertuples(index=False):
            found.setdefault((host, netdev), device)
    return found


def _pause_links(
    pauses: pd.DataFrame, nics: pd.DataFrame, topology: Topology, unmapped: dict[str, set[str]],
) -> pd.DataFrame:
    if pauses.empty:
        return pauses.assign(link=pd.Series(dtype=str), device=pd.Series(dtype=str))
    by_netdev = _netdev_nics(topology, nics)
    links = topology.nic_links()
    # A host with one NIC whose netdev nobody named: its one RDMA netdev is the one ethtool reports.
    named_hosts = {host for host, _ in by_netdev}
    single = {host.name: next(iter(host.nics)) for host in topology.hosts.values()
              if len(host.nics) == 1 and host.name not in named_hosts}
    def place(host: str, netdev: str) -> tuple[str | None, str | None]:
        device = by_netdev.get((host, netdev)) or single.get(host)
        return device, links.get((host, device)) if device else None

    placed = map_keys([pauses["host"], pauses["netdev"]], place)
    devices = [device for device, _ in placed]
    mapped = [link for _, link in placed]
    unplaced = pauses.loc[[link is None for link in mapped], ["host", "netdev"]].drop_duplicates()
    missing = {f"{host}/{netdev}" for host, netdev in unplaced.itertuples(index=False)}
    if missing:
        unmapped["ethtool"] = missing
    return pauses.assign(device=devices, link=mapped).dropna(subset=["link"])


def _sum(frame: pd.DataFrame, names, scale: float = 1.0) -> pd.Series | None:
    """The sum of the columns that have a value in a row (NaN where none has); None without any column."""
    present = [name for name in names if name in frame.columns]
    if frame.empty or not present:
        return None
    return frame[present].astype(float).sum(axis=1, min_count=1) * scale


def _long(frame: pd.DataFrame, values: dict[str, pd.Series | None]) -> pd.DataFrame:
    parts = []
    for name, series in values.items():
        if series is None:
            continue
        part = pd.DataFrame({"time": frame["time"], "link": frame["link"], "signal": name,
                             "value": series.astype(float)})
        parts.append(part.dropna(subset=["value"]))
    return pd.concat(parts, ignore_index=True) if parts else _empty_long()


def _empty_long() -> pd.DataFrame:
    return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"), "link": pd.Series(dtype=str),
                         "signal": pd.Series(dtype=str), "value": pd.Series(dtype=float)})


def _score(frame: pd.DataFrame, key: str, signals: dict[str, Signal]) -> pd.DataFrame:
    """Add normal and score columns to a long frame of (time, key, signal, value)."""
    if frame.empty:
        return frame.assign(normal=pd.Series(dtype=float), score=pd.Series(dtype=float))
    own = frame.groupby([key, "signal"])["value"].quantile(NORMAL_QUANTILE).rename("own").reset_index()
    fleet = frame.groupby("signal")["value"].median().rename("fleet").reset_index()
    normal = own.merge(fleet, on="signal")
    uses_fleet = normal["signal"].map({name: s.fleet_normal for name, s in signals.items()}).astype(bool)
    normal["normal"] = normal["own"].where(~uses_fleet, np.minimum(normal["own"], normal["fleet"])).clip(lower=0)
    frame = frame.merge(normal[[key, "signal", "normal"]], on=[key, "signal"], how="left")
    floor = frame["signal"].map({name: s.floor for name, s in signals.items()}).to_numpy(dtype=float)
    relative = frame["signal"].map({name: s.relative for name, s in signals.items()}).to_numpy(dtype=float)
    scale = np.maximum(floor, relative * frame["normal"].to_numpy())
    frame["score"] = np.clip((frame["value"].to_numpy() - frame["normal"].to_numpy()) / scale, 0, None)
    return frame


def _utilization(ports: pd.DataFrame) -> pd.DataFrame:
    if ports.empty:
        return pd.DataFrame()
    busiest = np.fmax(ports["in_bps"].to_numpy(dtype=float), ports["out_bps"].to_numpy(dtype=float))
    speed = ports["speed_bps"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(speed > 0, busiest / speed, np.nan)
    frame = pd.DataFrame({"time": ports["time"], "link": ports["link"], "signal": UTILIZATION.name,
                          "value": share}).dropna(subset=["value"])
    frame = frame.groupby(["time", "link", "signal"], as_index=False, sort=False)["value"].max()
    frame["normal"] = frame.groupby("link")["value"].transform("median")
    ramp = (frame["value"] - UTILIZATION_START) / (UTILIZATION_FULL - UTILIZATION_START)
    frame["score"] = UTILIZATION_CAP * ramp.clip(0, 1)
    frame["kind"] = LOCAL
    return frame


def _link_scores(evidence: pd.DataFrame) -> pd.DataFrame:
    columns = ["time", "link", "score", "local_score", "path_score", "top_signal"]
    if evidence.empty:
        return pd.DataFrame(columns=columns)
    ordered = evidence.sort_values("score", ascending=False, kind="stable")
    top = ordered.drop_duplicates(["time", "link"])[["time", "link", "score", "signal"]]
    by_kind = evidence.pivot_table(index=["time", "link"], columns="kind", values="score", aggfunc="max",
                                   fill_value=0.0)
    by_kind = by_kind.reindex(columns=[LOCAL, PATH], fill_value=0.0)
    by_kind.columns = ["local_score", "path_score"]
    scores = top.merge(by_kind.reset_index(), on=["time", "link"]).rename(columns={"signal": "top_signal"})
    return scores[columns].sort_values(["time", "link"]).reset_index(drop=True)


def _host_pause(pauses: pd.DataFrame, host_ports: pd.DataFrame) -> pd.DataFrame:
    """Pauses each host sends: from its NICs' ethtool counters, and as its leaf ports receive them.

    Both ends count the same frames, so per host the larger of the two views is kept.
    """
    views = []
    if not pauses.empty:
        views.append(pd.DataFrame({"time": pauses["time"], "host": pauses["host"], "signal": "pauses_sent",
                                   "value": pauses["pause_tx"]}))
        views.append(pd.DataFrame({"time": pauses["time"], "host": pauses["host"], "signal": "pause_time_sent",
                                   "value": pauses["pause_tx_us"] / 1e6}))
    if not host_ports.empty:
        views.append(pd.DataFrame({"time": host_ports["time"], "host": host_ports["host"], "signal": "pauses_sent",
                                   "value": host_ports["pauses_in"], "view": "switch"}))
    if not views:
        return pd.DataFrame(columns=["time", "host", "signal", "value", "normal", "score"])
    long = pd.concat(views, ignore_index=True).dropna(subset=["value"])
    long["view"] = long["view"].fillna("nic") if "view" in long.columns else "nic"
    long = long.groupby(["time", "host", "signal", "view"], as_index=False)["value"].sum()
    long = long.groupby(["time", "host", "signal"], as_index=False)["value"].max()
    return _score(long, "host", HOST_SIGNALS)


def _host_traffic(telemetry: Telemetry, ports: pd.DataFrame, topology: Topology) -> pd.DataFrame:
    """Bytes per second each host sends and receives, from the best source that has it."""
    sources = []
    if not telemetry.nics.empty:
        sources.append(telemetry.nics.groupby(["time", "host"])[["tx_bytes", "rx_bytes"]].sum(min_count=1))
    if not telemetry.pauses.empty:
        sources.append(telemetry.pauses.groupby(["time", "host"])[["tx_bytes", "rx_bytes"]].sum(min_count=1))
    if not ports.empty:
        host_of_link = {link: host for (host, _), link in topology.nic_links().items()}
        facing = ports.assign(host=map_series(ports["link"], host_of_link)).dropna(subset=["host"])
        # The switch port's input is what the host sent.
        facing = facing.assign(tx_bytes=facing["in_bps"] / 8, rx_bytes=facing["out_bps"] / 8)
        sources.append(facing.groupby(["time", "host"])[["tx_bytes", "rx_bytes"]].sum(min_count=1))
    if not sources:
        return pd.DataFrame(columns=["time", "host", "tx_bytes", "rx_bytes"])
    traffic = sources[0]
    for other in sources[1:]:
        traffic = traffic.combine_first(other)
    return traffic.reset_index()
