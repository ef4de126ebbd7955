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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from detector.compiled import jit
from detector.rates import (DistinctKeys, FloatBlock, all_distinct, distinct_rows, factorize_runs_apart,
                            grid_codes_apart, grid_step_ns, in_order, key_codes, map_keys, map_series, nanoseconds,
                            row_sums, sorted_positions, utc_times)
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

LOCATING_PATH_SIGNALS = frozenset({"pauses_received", "paused_time", "xmit_wait"})
"""Path signals that place the trouble on the link they are seen on: a NIC receives pause frames only from its own
leaf port, and waits to send (``port_xmit_wait``) only while that port pauses it or withholds credits. ECN marks,
CNPs and retransmissions may come from any hop."""

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

    link_scores: GridScores | FrameScores
    """Per link and interval with a score: the highest, its signal, the highest per kind (see ``scores``)."""
    evidence: Evidence | FrameEvidence
    """The evidence behind the scores, one entry per signal, link and interval (see ``signals``)."""
    host_pause: pd.DataFrame
    """time, host, signal, value, normal, score: pauses each host sends."""
    host_traffic: pd.DataFrame
    """time, host, tx_bytes, rx_bytes (per second), from NIC counters, else ethtool, else its switch ports."""
    unmapped: dict[str, set[str]] = field(default_factory=dict)
    """Series the topology does not place (e.g. a NIC on a host it lacks), per measurement."""

    @property
    def scores(self) -> pd.DataFrame:
        """time, link, score, local_score, path_score, top_signal: one row per link and interval (built on each call)."""
        return self.link_scores.frame()

    @property
    def signals(self) -> pd.DataFrame:
        """time, link, signal, value, normal, score, kind: the evidence as a frame (built on each call)."""
        return self.evidence.frame()


@dataclass(frozen=True, slots=True)
class SignalEntries:
    """One signal's evidence: its (time, link) grid cells, each at most once, with value, normal and score."""

    code: int
    cell: np.ndarray
    value: np.ndarray
    normal: np.ndarray
    score: np.ndarray


class Evidence:
    """The evidence as arrays over the (time, link) grid: per signal, a value, normal and score per cell.

    A week of a large fabric has tens of millions of entries; as a frame of strings and
    times they would take gigabytes, and a batch window keeps only the few that an
    episode quotes (``scored_at``). ``frame()`` builds the whole frame where it is wanted.
    The entries stay one array set per signal, never joined into one: joining them costs
    as much time and memory as scoring them.
    """

    def __init__(
        self, times: pd.api.extensions.ExtensionArray, link_names: np.ndarray, entries: list[SignalEntries],
        names: list[str], kinds: list[str],
    ) -> None:
        self.times, self.link_names, self.entries = times, link_names, entries
        self.names, self.kinds = names, kinds

    def frame(self, chosen: list[np.ndarray] | None = None) -> pd.DataFrame:
        """The entries (all, or per signal those at ``chosen`` positions) in order of signal, then row:
        time, link, signal, value, normal, score, kind."""
        picks = chosen if chosen is not None else [slice(None)] * len(self.entries)
        chosen_entries = [SignalEntries(entries.code, entries.cell[pick], entries.value[pick], entries.normal[pick],
                                        entries.score[pick]) for entries, pick in zip(self.entries, picks)]

        def column(name: str, dtype) -> np.ndarray:
            return _join([getattr(entries, name) for entries in chosen_entries], dtype)

        cell = column("cell", np.int64)
        code = _join([np.full(len(entries.cell), entries.code, dtype=np.int16) for entries in chosen_entries], np.int16)
        n_times = max(len(self.times), 1)
        return pd.DataFrame({
            "time": self.times.take(cell % n_times),
            "link": _strings(self.link_names, cell // n_times),
            "signal": _strings(self.names, code),
            "value": column("value", float),
            "normal": column("normal", float),
            "score": column("score", float),
            "kind": _strings(self.kinds, code),
        })

    def scored_at(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """The entries with a score above 0 at the (time, link) ``pairs``, in order."""
        n_links = len(self.link_names)
        if pairs.empty or not self.entries:
            return self.frame([np.empty(0, dtype=np.int64) for _ in self.entries])
        grid_ns = nanoseconds(self.times)
        wanted_ns = nanoseconds(pairs["time"])
        time_code = np.minimum(np.searchsorted(grid_ns, wanted_ns), len(grid_ns) - 1)
        link_code = pd.Index(self.link_names).get_indexer(pairs["link"].to_numpy(dtype=object))
        known = (grid_ns[time_code] == wanted_ns) & (link_code >= 0)
        wanted = np.zeros(len(grid_ns) * n_links, dtype=bool)
        wanted[link_code[known] * len(grid_ns) + time_code[known]] = True
        return self.frame([np.flatnonzero(wanted[entries.cell] & (entries.score > 0)) for entries in self.entries])


def _join(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


class FrameEvidence:
    """The evidence as a frame (the groupby path), with the methods of :class:`Evidence`."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def frame(self) -> pd.DataFrame:
        return self._frame

    def scored_at(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """The rows with a score above 0 at the (time, link) ``pairs``, in order."""
        signals = self._frame
        if pairs.empty or signals.empty:
            return signals.iloc[:0]
        keep = pd.MultiIndex.from_frame(signals[["time", "link"]]).isin(pd.MultiIndex.from_frame(pairs[["time", "link"]]))
        return signals[keep & (signals["score"] > 0)].reset_index(drop=True)


SCORE_COLUMNS = ["time", "link", "score", "local_score", "path_score", "top_signal"]


class GridScores:
    """The link scores on the (time, link) grid: per cell the highest score, its signal and the highest per kind.

    A window of a large fabric has a score for every link and interval, tens of millions
    of rows as a frame of times and strings; a batch window keeps the few above a
    threshold (``frame`` with bounds) and attribution reads the jobs' links as matrices
    (``matrices``), so the whole frame is built only where it is wanted.
    """

    def __init__(self, times: pd.api.extensions.ExtensionArray, time_values: np.ndarray, link_names: np.ndarray,
                 grid: _ScoreGrid, names: list[str]) -> None:
        self.times, self.time_values, self.link_names, self.names = times, time_values, link_names, names
        shape = (len(link_names), len(time_values))
        self.best, self.top = grid.best.reshape(shape), grid.top.reshape(shape)
        self.worst = {kind: grid.worst[kind].reshape(shape) for kind in (LOCAL, PATH)}
        self.present = grid.present().reshape(shape)

    def frame(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
              min_score: float | None = None) -> pd.DataFrame:
        """The rows in (time, link) order: every cell with a score, or those in ``(start, end]`` scoring at
        least ``min_score``. A kind no signal of scored in a cell has a score of 0 there."""
        if not self.present.any():
            return pd.DataFrame(columns=SCORE_COLUMNS)
        first = 0 if start is None else int(np.searchsorted(self.time_values, _ns(start), "right"))
        last = len(self.time_values) if end is None else int(np.searchsorted(self.time_values, _ns(end), "right"))

        def by_time(grid: np.ndarray) -> np.ndarray:
            """The window's cells as a (time, link) view: its rows come out in (time, link) order."""
            return grid[:, first:last].T

        present = by_time(self.present)
        if min_score is not None:
            present = present & (by_time(self.best) >= min_score)
        count = np.count_nonzero(present, axis=1)
        block = FloatBlock(["score", "local_score", "path_score"], int(count.sum()))
        for name, grid in (("score", self.best), ("local_score", self.worst[LOCAL]), ("path_score", self.worst[PATH])):
            block[name] = by_time(grid)[present]
        kinds = block.values[1:]
        kinds[np.isneginf(kinds)] = 0.0
        time = np.repeat(np.arange(first, last), count)
        link = np.broadcast_to(np.arange(len(self.link_names)), present.shape)[present]
        frame = block.frame({"time": self.times.take(time), "link": _strings(self.link_names, link)})
        frame["top_signal"] = _strings(self.names, by_time(self.top)[present])
        return frame

    def matrices(self, times: np.ndarray, links: pd.Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``score``, ``local_score`` and the located score (:func:`located_scores`) at these times (nanoseconds)
        and links as (time, link) matrices, NaN where a cell has no score."""
        time = sorted_positions(self.time_values, times)
        link = pd.Index(self.link_names).get_indexer(links)
        known_times, known_links = np.flatnonzero(time >= 0), np.flatnonzero(link >= 0)
        everywhere = len(known_times) == len(times) and len(known_links) == len(links)
        shape = (len(times), len(links))
        matrices = tuple(np.empty(shape) if everywhere else np.full(shape, np.nan) for _ in range(3))
        locating = np.array([name in LOCATING_PATH_SIGNALS for name in self.names], dtype=bool)
        _score_matrices(time[known_times], known_times, link[known_links], known_links, self.present, self.best,
                        self.worst[LOCAL], self.top, locating, *matrices)
        return matrices


@jit
def _score_matrices(
    grid_times: np.ndarray, rows: np.ndarray, grid_links: np.ndarray, columns: np.ndarray, present: np.ndarray,
    best: np.ndarray, local: np.ndarray, top: np.ndarray, locating: np.ndarray,
    score: np.ndarray, local_score: np.ndarray, located: np.ndarray,
) -> None:
    """:meth:`GridScores.matrices` from the (link, time) grids: the cell of ``grid_links[j]`` at
    ``grid_times[i]`` goes to row ``rows[i]``, column ``columns[j]`` of each (time, link) matrix.

    A kind no signal scored in a present cell is 0, a cell without a score NaN, and the located score
    is :func:`located_scores` (``np.fmax`` where the top signal locates), all in one pass.
    """
    for j in range(len(grid_links)):
        link, column = grid_links[j], columns[j]
        for i in range(len(grid_times)):
            time, row = grid_times[i], rows[i]
            if present[link, time]:
                highest = best[link, time] if best[link, time] != -np.inf else 0.0
                own = local[link, time] if local[link, time] != -np.inf else 0.0
            else:
                highest = own = np.nan
            score[row, column] = highest
            local_score[row, column] = own
            code = top[link, time]
            locates = code >= 0 and locating[code]
            located[row, column] = highest if locates and (highest >= own or own != own) else own


class FrameScores:
    """The link scores as a frame (the groupby path), with the methods of :class:`GridScores`."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def frame(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
              min_score: float | None = None) -> pd.DataFrame:
        scores = self._frame
        if start is None and end is None and min_score is None:
            return scores
        keep = np.ones(len(scores), dtype=bool)
        if start is not None:
            keep &= (scores["time"] > start).to_numpy()
        if end is not None:
            keep &= (scores["time"] <= end).to_numpy()
        if min_score is not None:
            keep &= (scores["score"] >= min_score).to_numpy()
        return scores[keep].reset_index(drop=True)

    def matrices(self, times: np.ndarray, links: pd.Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores = self._frame
        time = sorted_positions(times, _time_ns(scores))
        link = links.get_indexer(scores["link"])
        placed = (time >= 0) & (link >= 0)
        cells = (time * len(links) + link)[placed]
        score = scores["score"].to_numpy(dtype=float)[placed]
        local = scores["local_score"].to_numpy(dtype=float)[placed]
        located = located_scores(score, local, scores["top_signal"].isin(LOCATING_PATH_SIGNALS).to_numpy()[placed])
        matrices = []
        for values in (score, local, located):
            matrix = np.full(len(times) * len(links), np.nan)
            matrix[cells] = values
            matrices.append(matrix.reshape(len(times), len(links)))
        return tuple(matrices)


def located_scores(score: np.ndarray, local: np.ndarray, top_locates: np.ndarray) -> np.ndarray:
    """Per cell, how strongly the evidence places the trouble on the link itself: its local score, or its score
    where the top signal is a locating path signal (:data:`LOCATING_PATH_SIGNALS`)."""
    return np.where(top_locates, np.fmax(score, local), local)


def _ns(stamp: pd.Timestamp) -> int:
    return pd.Timestamp(stamp).as_unit("ns").value


SignalColumns = dict[str, Callable[[], pd.Series | None]]
"""Per signal of a frame, how its values per row are computed (None where the frame lacks them)."""


def link_congestion(
    telemetry: Telemetry, topology: Topology, signals: dict[str, Signal] | None = None, keep_unscored: bool = True,
) -> Congestion:
    """Score every link of the telemetry for every interval.

    The evidence keeps every signal's entry at every link and interval, or without
    ``keep_unscored`` only those that scored above 0, which is all an episode quotes.
    """
    signals = SIGNALS if signals is None else signals
    unmapped: dict[str, set[str]] = {}
    ports = _switch_ports(telemetry.ports, topology)
    nics = _nic_links(telemetry.nics, topology, unmapped)
    pauses = _pause_links(telemetry.pauses, telemetry.nics, topology, unmapped)
    host_of_link = {link: host for (host, _), link in topology.nic_links().items()}
    facing_host, facing = map_series(ports["link"], host_of_link) if not ports.empty \
        else (pd.Series(dtype=object), np.zeros(0, dtype=bool))

    # Each signal is a column of millions of rows: computed when scored, one at a time, not all held together.
    parts: list[tuple[pd.DataFrame, SignalColumns]] = [
        (ports, {
            "discards": lambda: _sum(ports, ["discards_in", "discards_out"]),
            "port_errors": lambda: _sum(ports, ["errors_in", "errors_out"]),
            "link_down": lambda: None if ports.empty else
            (ports["oper_status"].notna() & (ports["oper_status"] != 1)).astype(float),
            "queue_drops": lambda: _sum(ports, ["queue_drops"]),
            "switch_pauses_sent": lambda: _sum(ports, ["pauses_out"]),
            # Pauses a host sends into its leaf port are the host's (see host_pause), a peer switch's the link's.
            "switch_pauses_received": lambda: None if ports.empty else ports["pauses_in"].where(~facing),
            "port_tx_wait": lambda: _sum(ports, ["tx_wait"]),
        }),
        (nics, {
            "cable_errors": lambda: _sum(nics, NIC_ERRORS),
            "xmit_wait": lambda: _sum(nics, ["port_xmit_wait"]),
            "ecn_marked": lambda: _sum(nics, ["np_ecn_marked_roce_packets"]),
            "cnp": lambda: _sum(nics, ["np_cnp_sent", "rp_cnp_handled"]),
            "retransmissions": lambda: _sum(nics, NIC_RECOVERY),
        }),
        (pauses, {
            "pauses_received": lambda: _sum(pauses, ["pause_rx"]),
            "paused_time": lambda: _sum(pauses, ["pause_rx_us"], scale=1e-6),
        }),
    ]
    # The hosts' sums only read the frames, and numpy and pandas' groupby sums release the GIL: on a
    # second core they run beside the scoring (a 1,024-GPU 8 h window: 8.5 s down to about 6).
    step_ns = grid_step_ns(telemetry.step_s)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-sums") as pool:
        host_pause = pool.submit(_host_pause, pauses, ports, facing_host, facing, step_ns)
        traffic = pool.submit(_host_traffic, telemetry, ports, facing_host, facing, step_ns)
        grid = _EvidenceGrid([frame for frame, _ in parts], step_ns)
        if grid.has_duplicates():
            frame = _evidence_by_groupby(parts, ports, signals).reset_index(drop=True)
            scores = FrameScores(_link_scores(frame))
            evidence = FrameEvidence(frame if keep_unscored else frame[frame["score"] > 0].reset_index(drop=True))
        else:
            evidence, scores = grid.score(parts, ports, signals, keep_unscored)
        return Congestion(scores, evidence, host_pause.result(), traffic.result(), unmapped)


class _EvidenceGrid:
    """The (time, link) of every row of the port, NIC and pause frames as integer codes.

    Times are coded in time order and links in name order. A row's cell on the dense
    grid is ``link * n_times + time``: rows come by series, then time, so a signal's
    cells are nearly in order, and a link's cells are one run for its normal. Scores,
    normals and the top signal are reductions over these codes (numpy) instead of
    groupbys over millions of rows of strings; they give the same numbers and rows as
    those groupbys (tests/test_detector.py), scores in (time, link) order.
    """

    def __init__(self, frames: list[pd.DataFrame], step_ns: int) -> None:
        time_codes, self.time_values = grid_codes_apart([_time_ns(frame) for frame in frames], step_ns)
        link_codes, link_names = factorize_runs_apart(
            [frame["link"].to_numpy(dtype=object) if not frame.empty else np.empty(0, dtype=object)
             for frame in frames], sort=True)
        self.link_names = np.asarray(link_names, dtype=object)
        self.times = pd.DatetimeIndex(self.time_values.view("datetime64[ns]")).tz_localize("UTC").array
        self.n_links = len(self.link_names)
        n_times = len(self.time_values)
        self.cells = []
        for links, times in zip(link_codes, time_codes):
            cells = links * n_times
            cells += times
            self.cells.append(cells)
        self.series_links = [_series_links(cells, n_times) for cells in self.cells]

    def has_duplicates(self) -> bool:
        """Whether two series of one frame fall on the same link and interval (their values must add up)."""
        return not all(all_distinct(cells, len(self.time_values) * self.n_links) for cells in self.cells)

    def score(
        self, parts: list[tuple[pd.DataFrame, SignalColumns]], ports: pd.DataFrame,
        signals: dict[str, Signal], keep_unscored: bool = True,
    ) -> tuple[Evidence, GridScores]:
        """The evidence (one entry per time, link and signal with a value) and the link scores.

        Without ``keep_unscored`` the evidence keeps only entries that scored above 0
        (all an episode can quote): at a week of a large fabric the others are tens of
        millions of entries, gigabytes held for nothing.
        """
        names: list[str] = []
        kinds: list[str] = []
        entries: list[SignalEntries] = []
        scores = _ScoreGrid(len(self.time_values) * self.n_links)
        n_times = len(self.time_values)

        def add(name: str, kind: str, values: _Placed, normal: np.ndarray, score: np.ndarray) -> None:
            """Add a signal's scores; ``normal`` is per link (per series where the values are a matrix)."""
            values.add_to(scores, len(names), kind, score)
            value = values.value
            if keep_unscored:
                cell, normal = values.cells(), values.per_row(normal)
            else:
                scored = np.flatnonzero(score > 0)
                cell, value, score = values.cells(scored), value[scored], score[scored]
                normal = values.per_row(normal, scored)
            entries.append(SignalEntries(len(names), cell, value, normal, score))
            names.append(name)
            kinds.append(kind)

        for (_, columns), frame_cells, series_links in zip(parts, self.cells, self.series_links):
            for name, column in columns.items():
                series = column() if name in signals else None
                if series is None:
                    continue
                signal = signals[name]
                values = _Placed.of(series.to_numpy(dtype=float), frame_cells, series_links, self.n_links, n_times)
                normal = _normal(values, signal)
                add(name, signal.kind, values, normal, values.scores(normal, signal))

        if not ports.empty:
            busiest = np.fmax(ports["in_bps"].to_numpy(dtype=float), ports["out_bps"].to_numpy(dtype=float))
            speed = ports["speed_bps"].to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(speed > 0, busiest / speed, np.nan)
            used = _Placed.of(share, self.cells[0], self.series_links[0], self.n_links, n_times)
            if len(used.value):
                normal = used.quantile(0.5)
                ramp = (used.value - UTILIZATION_START) / (UTILIZATION_FULL - UTILIZATION_START)
                add(UTILIZATION.name, LOCAL, used, normal, UTILIZATION_CAP * ramp.clip(0, 1))

        evidence = Evidence(self.times, self.link_names, entries, names, kinds)
        return evidence, GridScores(self.times, self.time_values, self.link_names, scores, names)


def _series_links(cells: np.ndarray, n_times: int) -> np.ndarray | None:
    """Each series' link, where a frame's rows are whole series on the grid: one run of every time per series
    (a store read of steady polls is), else None."""
    if not len(cells) or len(cells) % n_times:
        return None
    runs = cells.reshape(-1, n_times)
    first = runs[:, 0]
    if (first % n_times).any() or not (runs == first[:, None] + np.arange(n_times)).all():
        return None
    return first // n_times


class _Placed:
    """One signal's values that are not NaN, and where they lie on the (link, time) grid.

    Where every series of the frame has a value at every time (``links``: each series'
    link), the values are a (series, time) matrix: a link's normal is a quantile of its
    row and its scores go onto the grid row by row. Otherwise each value has its own cell.
    Both give the same numbers; the rows only take less time.
    """

    def __init__(self, value: np.ndarray, cell: np.ndarray, links: np.ndarray | None, n_links: int,
                 n_times: int) -> None:
        self.value, self.cell, self.links, self.n_links, self.n_times = value, cell, links, n_links, n_times

    @staticmethod
    def of(values: np.ndarray, cells: np.ndarray, series_links: np.ndarray | None, n_links: int,
           n_times: int) -> _Placed:
        missing = np.isnan(values)
        if not missing.any():
            return _Placed(values, cells, series_links, n_links, n_times)
        rows = np.flatnonzero(~missing)
        return _Placed(values[rows], cells[rows], None, n_links, n_times)

    def quantile(self, quantile: float) -> np.ndarray:
        """Per link (per series where the values are a matrix) the quantile of its values."""
        if self.links is None:
            return _link_quantile(self.value, self.cell, self.n_links, self.n_times, quantile)
        return _row_quantile(self.value.reshape(len(self.links), self.n_times), quantile)

    def per_row(self, per_link: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """A value per link (from :meth:`quantile`) for each of the signal's values (those at ``rows``)."""
        if self.links is None:
            return per_link[self.cells(rows) // self.n_times]
        if rows is None:
            return np.repeat(per_link, self.n_times)
        return per_link[rows // self.n_times]

    def scores(self, normal: np.ndarray, signal: Signal) -> np.ndarray:
        """Each value's score: how far above its link's ``normal`` (from :func:`_normal`), in units of the
        larger of the signal's floor and its share of the normal, 0 below the normal."""
        if self.links is None:
            normal = self.per_row(normal)
            return np.clip((self.value - normal) / np.maximum(signal.floor, signal.relative * normal), 0, None)
        matrix = self.value.reshape(len(self.links), self.n_times)
        return _row_scores(matrix, normal, signal.floor, signal.relative).reshape(-1)

    def cells(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The grid cells of the values (of those at ``rows``)."""
        if rows is None:
            return self.cell
        if self.links is None:
            return self.cell[rows]
        return self.links[rows // self.n_times] * self.n_times + rows % self.n_times

    def add_to(self, scores: _ScoreGrid, code: int, kind: str, score: np.ndarray) -> None:
        if self.links is None:
            scores.add(code, kind, self.cell, score)
        else:
            scores.add_rows(code, kind, self.links, score.reshape(len(self.links), self.n_times))


def _row_quantile(matrix: np.ndarray, quantile: float) -> np.ndarray:
    """Per row of a matrix without NaN, the quantile of its values as :func:`_link_quantile` computes it.

    Every row has as many values, so the ranks either side of the quantile are the same for
    all and a partition around them replaces the sort. A row whose values at both ranks are
    zero (:func:`_zero_up_to`: most counters of most links, most of the time) needs no partition.
    """
    below, above, fraction = _ranks(np.array([matrix.shape[1]]), quantile)
    result = np.zeros(matrix.shape[0])
    rows = np.flatnonzero(~_zero_up_to(matrix, int(above[0])))
    if len(rows):
        ordered = matrix[rows]
        ordered.partition(sorted({int(below[0]), int(above[0])}), axis=1)
        result[rows] = _interpolate(ordered[:, below[0]], ordered[:, above[0]], fraction, quantile)
    return result


def _median(values: np.ndarray) -> float:
    """``np.median(values)``, without the partition where the middle values are zero."""
    if len(values) and _zero_up_to(values.reshape(1, -1), len(values) // 2)[0]:
        return 0.0
    return float(np.median(values))


@jit
def _zero_up_to(matrix: np.ndarray, rank: int) -> np.ndarray:
    """Per row, whether its values at ranks 0 .. ``rank`` in sorted order are all +0.0, without sorting:
    no NaN and nothing below +0.0 (no negative value, no -0.0), and more than ``rank`` zeros."""
    result = np.zeros(matrix.shape[0], dtype=np.bool_)
    n_columns = matrix.shape[1]
    for row in range(matrix.shape[0]):
        zeros = 0
        for column in range(n_columns):
            value = matrix[row, column]
            if value == 0.0:
                if np.signbit(value):
                    zeros = -1
                    break
                zeros += 1
            elif not value > 0.0:  # negative or NaN
                zeros = -1
                break
            elif zeros + n_columns - column - 1 <= rank:  # too few values left to be zeros
                break
        result[row] = zeros > rank
    return result


@jit
def _row_scores(value: np.ndarray, normal: np.ndarray, floor: float, relative: float) -> np.ndarray:
    """``np.clip((value - normal) / np.maximum(floor, relative * normal), 0, None)`` with a normal per row of
    ``value``, in one pass (the numbers to the bit, without a normal per value or the temporaries)."""
    score = np.empty_like(value)
    for row in range(value.shape[0]):
        own = normal[row]
        share = relative * own
        scale = floor if floor >= share else share  # np.maximum: a NaN share wins
        for column in range(value.shape[1]):
            ratio = (value[row, column] - own) / scale
            score[row, column] = ratio if ratio > 0 or ratio != ratio else 0.0
    return score


class _ScoreGrid:
    """Per (time, link) grid cell, the scores of the signals added so far, one signal at a time.

    Signals come in order and a signal has each cell at most once, so its scores go onto
    the grid by plain indexing; the top signal is the first to reach the highest score
    (a later one replaces it only with a higher score). A cell where a signal's score is
    NaN has no highest score and no row.
    """

    def __init__(self, size: int) -> None:
        self.best = np.full(size, -np.inf)
        self.worst = {LOCAL: np.full(size, -np.inf), PATH: np.full(size, -np.inf)}
        self.top = np.full(size, -1, dtype=np.int16)
        self.undefined = np.zeros(size, dtype=bool)

    def add(self, code: int, kind: str, cell: np.ndarray, score: np.ndarray) -> None:
        by_kind = self.worst[kind]
        by_kind[cell] = np.maximum(by_kind[cell], score)
        higher = score > self.best[cell]
        raised = cell[higher]
        self.best[raised] = score[higher]
        self.top[raised] = code
        self.undefined[cell[np.isnan(score)]] = True

    def add_rows(self, code: int, kind: str, links: np.ndarray, score: np.ndarray) -> None:
        """:meth:`add` of a (series, time) matrix of scores whose series lie on these links, all times each."""
        shape = (-1, score.shape[1])
        _add_rows(code, links, score, self.worst[kind].reshape(shape), self.best.reshape(shape),
                  self.top.reshape(shape), self.undefined.reshape(shape))

    def present(self) -> np.ndarray:
        """Per cell, whether it has a highest score."""
        return (self.top >= 0) & ~self.undefined


@jit
def _add_rows(code: int, links: np.ndarray, score: np.ndarray, worst: np.ndarray, best: np.ndarray,
              top: np.ndarray, undefined: np.ndarray) -> None:
    """:meth:`_ScoreGrid.add_rows` on the grid's (link, time) matrices, in one pass over the scores."""
    for row in range(score.shape[0]):
        link = links[row]
        for column in range(score.shape[1]):
            value = score[row, column]
            current = worst[link, column]
            if not (current >= value or current != current):  # np.maximum: NaN wins
                worst[link, column] = value
            if value > best[link, column]:
                best[link, column] = value
                top[link, column] = code
            elif value != value:
                undefined[link, column] = True


def _time_ns(frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.empty(0, dtype=np.int64)
    return nanoseconds(frame["time"])


def _strings(names, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A str column of ``names[code]`` per row (one string object per distinct name)."""
    return pd.array(np.asarray(list(names), dtype=object), dtype="str").take(codes)


def _link_quantile(values: np.ndarray, cells: np.ndarray, n_links: int, n_times: int, quantile: float) -> np.ndarray:
    """Per link (0 .. n_links - 1) the quantile of its values, linearly interpolated (NaN for no values).

    ``cells`` are grid positions ``link * n_times + time``, each at most once, and
    ``values`` have no NaN. The values go into a (link, time) matrix, in blocks of
    links, whose rows are sorted in place (NaN last), which is many times faster than
    one sort of all values together; the numbers are pandas' ``groupby().quantile()``
    (at 0.5 its ``median()``, the mean of the middle two).
    """
    result = np.full(n_links, np.nan)
    if not len(values):
        return result
    links_per_block = max(1, LINK_QUANTILE_BLOCK_CELLS // max(n_times, 1))
    for first in range(0, n_links, links_per_block):
        last = min(n_links, first + links_per_block)
        low, high = first * n_times, last * n_times
        inside = slice(None) if last - first == n_links else (cells >= low) & (cells < high)
        matrix = np.full((last - first) * n_times, np.nan)
        matrix[cells[inside] - low] = values[inside]
        matrix = matrix.reshape(last - first, n_times)
        matrix.sort(axis=1)
        count = n_times - np.count_nonzero(np.isnan(matrix), axis=1)
        has = np.flatnonzero(count)
        below, above, fraction = _ranks(count[has], quantile)
        result[first + has] = _interpolate(matrix[has, below], matrix[has, above], fraction, quantile)
    return result


def _ranks(count: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``count`` sorted values: the ranks either side of the quantile and how far it lies between them."""
    position = quantile * (count - 1).astype(float)
    below = position.astype(np.int64)
    return below, np.minimum(below + 1, count - 1), position % 1


def _interpolate(value: np.ndarray, following: np.ndarray, fraction: np.ndarray, quantile: float) -> np.ndarray:
    between = (value + following) / 2 if quantile == 0.5 else value + (following - value) * fraction
    return np.where(fraction != 0, between, value)


LINK_QUANTILE_BLOCK_CELLS = 2**23
"""Cells of the (link, time) matrix sorted at once (64 MiB of float64): bounds the memory normals take."""


def _normal(values: _Placed, signal: Signal) -> np.ndarray:
    """Per link (per series where the values are a matrix) of one signal: the lower of its 25th percentile
    and the fleet's median."""
    if not len(values.value):
        return np.empty(0)
    own = values.quantile(NORMAL_QUANTILE)
    if signal.fleet_normal:
        own = np.minimum(own, _median(values.value))
    return np.clip(own, 0, None)


def _evidence_by_groupby(
    parts: list[tuple[pd.DataFrame, SignalColumns]], ports: pd.DataFrame, signals: dict[str, Signal],
) -> pd.DataFrame:
    """The evidence where two series of a frame share a link and an interval: their values add up."""
    long_parts = [_long(frame, columns) for frame, columns in parts]
    evidence = pd.concat([part for part in long_parts if not part.empty] or [_empty_long()], ignore_index=True)
    evidence = evidence[evidence["signal"].isin(list(signals))]
    evidence = evidence.groupby(["time", "link", "signal"], as_index=False, sort=False)["value"].sum()
    evidence = _score(evidence, "link", signals)
    evidence["kind"] = evidence["signal"].map({name: s.kind for name, s in signals.items()})
    utilization = _utilization(ports)
    return pd.concat([evidence, utilization], ignore_index=True) if not utilization.empty else evidence


def _switch_agents(topology: Topology) -> dict[str, str]:
    """Data's agent_host (the configured one, or the switch's name) -> the topology's agent_host."""
    agents = {switch.name: switch.agent_host for switch in topology.switches.values()}
    agents.update({switch.agent_host: switch.agent_host for switch in topology.switches.values()})
    return agents


def _switch_ports(ports: pd.DataFrame, topology: Topology) -> pd.DataFrame:
    if ports.empty:
        return ports.assign(link=pd.Series(dtype=str))
    agents = _switch_agents(topology)
    links = map_keys([ports["agent_host"], ports["port"]], lambda agent, port: f"{agents.get(agent, agent)}:{port}")
    return ports.assign(link=links)


def _nic_links(nics: pd.DataFrame, topology: Topology, unmapped: dict[str, set[str]]) -> pd.DataFrame:
    if nics.empty:
        return nics.assign(link=pd.Series(dtype=str))
    links = topology.nic_links()
    keys = DistinctKeys([nics["host"], nics["device"]])
    placed = [links.get(key) for key in keys.keys]
    mapped = pd.Series(keys.per_row(placed), index=nics.index, dtype=object)
    return _placed_rows(nics.assign(link=mapped), keys, placed, "infiniband", unmapped)


def _placed_rows(frame: pd.DataFrame, keys: DistinctKeys, placed: list, measurement: str,
                 unmapped: dict[str, set[str]]) -> pd.DataFrame:
    """``frame.dropna(subset=["link"])`` from the keys' links (None: not placed), without testing every row.

    The keys without a link are named (``host/device``) in ``unmapped[measurement]``.
    """
    missing = {"/".join(map(str, key)) for key, link in zip(keys.keys, placed) if link is None}
    if not missing:
        return frame
    unmapped[measurement] = missing
    return frame[np.array([link is not None for link in placed], dtype=bool)[keys.inverse]]


def _netdev_nics(topology: Topology, nics: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(host, netdev) -> RDMA device: from the topology, else from the infiniband points' netdev tag."""
    found = {(nic.host, nic.netdev): nic.device for host in topology.hosts.values()
             for nic in host.nics.values() if nic.netdev}
    if not nics.empty:
        known = distinct_rows(nics[["host", "device", "netdev"]]).dropna()
        for host, device, netdev in known.itertuples(index=False):
            found.setdefault((host, netdev), device)
    return found


def _pause_links(
    pauses: pd.DataFrame, nics: pd.DataFrame, topology: Topology, unmapped: dict[str, set[str]],
) -> pd.DataFrame:
    if pauses.empty:
        return pauses.assign(link=pd.Series(dtype=str))
    by_netdev = _netdev_nics(topology, nics)
    links = topology.nic_links()
    # A host with one NIC whose netdev nobody named: its one RDMA netdev is the one ethtool reports.
    named_hosts = {host for host, _ in by_netdev}
    single = {host.name: next(iter(host.nics)) for host in topology.hosts.values()
              if len(host.nics) == 1 and host.name not in named_hosts}
    def place(host: str, netdev: str) -> str | None:
        device = by_netdev.get((host, netdev)) or single.get(host)
        return links.get((host, device)) if device else None

    keys = DistinctKeys([pauses["host"], pauses["netdev"]])
    placed = [place(host, netdev) for host, netdev in keys.keys]
    return _placed_rows(pauses.assign(link=keys.per_row(placed)), keys, placed, "ethtool", unmapped)


def _sum(frame: pd.DataFrame, names, scale: float = 1.0) -> pd.Series | None:
    """The sum of the columns that have a value in a row (NaN where none has); None without any column."""
    present = [name for name in names if name in frame.columns]
    if frame.empty or not present:
        return None
    total = row_sums(frame, present)
    if scale != 1.0:
        total *= scale
    return pd.Series(total, index=frame.index, copy=False)


def _long(frame: pd.DataFrame, columns: SignalColumns) -> pd.DataFrame:
    parts = []
    for name, column in columns.items():
        series = column()
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
    columns = SCORE_COLUMNS
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


def _host_pause(pauses: pd.DataFrame, ports: pd.DataFrame, facing_host: pd.Series, facing: np.ndarray,
                step_ns: int) -> pd.DataFrame:
    """Pauses each host sends: from its NICs' ethtool counters, and as its leaf ports receive them
    (``facing_host``: per port row the host its link faces, where ``facing``).

    Both ends count the same frames, so per host the larger of the two views is kept. The
    rows, numbers and order are those of a groupby over (time, host, signal, view) and
    then (time, host, signal), with :func:`_score`'s normals; the keys are integer codes
    here because string groupbys over every NIC and port take most of a large fabric's time.
    """
    names = sorted(HOST_SIGNALS)
    rows = []  # (time, host) of the NICs' rows, then of the leaf ports' facing a host
    views = []  # (which rows, signal code, view: 0 the NIC's, 1 the leaf port's, value)
    if not pauses.empty:
        rows.append((pauses["time"], pauses["host"]))
        views.append((len(rows) - 1, names.index("pauses_sent"), 0, pauses["pause_tx"].to_numpy(dtype=float)))
        views.append((len(rows) - 1, names.index("pause_time_sent"), 0,
                      (pauses["pause_tx_us"] / 1e6).to_numpy(dtype=float)))
    if facing.any():
        rows.append((ports["time"][facing], facing_host[facing]))
        views.append((len(rows) - 1, names.index("pauses_sent"), 1, ports["pauses_in"].to_numpy(dtype=float)[facing]))
    if not views:
        return pd.DataFrame(columns=["time", "host", "signal", "value", "normal", "score"])
    keys = _TimeHostKeys(rows, step_ns)
    group = np.concatenate([np.where(keys.keys[which] >= 0, (keys.keys[which] * len(names) + code) * 2 + view, -1)
                            for which, code, view, _ in views])
    value = np.concatenate([values for *_, values in views])
    has_value = ~np.isnan(value)
    sums = _sums_by_key(pd.DataFrame({"value": value[has_value]}), group[has_value])
    # Then the larger view per (time, host, signal): sums come in key order, a cell's views side by side.
    cells = sums.index.to_numpy() // 2
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if len(cells) else cells
    cell = cells[starts]
    value = np.fmax.reduceat(sums["value"].to_numpy(), starts) if len(starts) else np.empty(0)

    key, code = cell // len(names), cell % len(names)
    n_series = keys.n_hosts * len(names)
    series = (key % keys.n_hosts) * len(names) + code
    has = ~np.isnan(value)
    own = _link_quantile(value[has], series[has] * len(keys.times) + key[has] // keys.n_hosts, n_series,
                         len(keys.times), NORMAL_QUANTILE)
    fleet = np.array([np.median(value[has & (code == i)]) if (has & (code == i)).any() else np.nan
                      for i in range(len(names))])
    uses_fleet = np.array([HOST_SIGNALS[name].fleet_normal for name in names])
    series_code = np.arange(n_series) % len(names)
    normal = np.where(uses_fleet[series_code], np.minimum(own, fleet[series_code]), own)
    normal = np.where(normal < 0, 0.0, normal)[series]  # pandas' clip(lower=0): NaN and -0.0 stay
    floor = np.array([HOST_SIGNALS[name].floor for name in names])[code]
    relative = np.array([HOST_SIGNALS[name].relative for name in names])[code]
    score = np.clip((value - normal) / np.maximum(floor, relative * normal), 0, None)
    return keys.frame(key, {"signal": _strings(names, code), "value": value, "normal": normal, "score": score})


def _host_traffic(telemetry: Telemetry, ports: pd.DataFrame, facing_host: pd.Series, facing: np.ndarray,
                  step_ns: int) -> pd.DataFrame:
    """Bytes per second each host sends and receives, from the best source that has it (the switch ports' as
    :func:`_host_pause` takes them).

    Per source the sums of a groupby over (time, host) (NaN where no row has a value), and per
    (time, host) the first source's where it has one, else the next's: ``combine_first``.
    """
    columns = ["tx_bytes", "rx_bytes"]
    sources = []  # (time, host, the frames of values to sum)
    for frame in (telemetry.nics, telemetry.pauses):
        if not frame.empty:
            sources.append((frame["time"], frame["host"], [frame[columns]]))
    if facing.any():
        # The switch port's input is what the host sent. Each column is summed on its own, as a
        # frame's new columns are: pandas sums a block's columns by one method, chosen by their NaN.
        sent, received = (ports["in_bps"] / 8).to_numpy(dtype=float), (ports["out_bps"] / 8).to_numpy(dtype=float)
        sources.append((ports["time"][facing], facing_host[facing],
                        [pd.DataFrame({"tx_bytes": sent[facing]}), pd.DataFrame({"rx_bytes": received[facing]})]))
    if not sources:
        return pd.DataFrame(columns=["time", "host", *columns])
    keys = _TimeHostKeys([(times, hosts) for times, hosts, _ in sources], step_ns)
    size = len(keys.times) * keys.n_hosts
    present = np.zeros(size, dtype=bool)
    combined = {column: np.full(size, np.nan) for column in columns}
    for key, (_, _, frames) in zip(keys.keys, sources):
        for frame in frames:
            sums = _sums_by_key(frame, key, min_count=1)
            at = sums.index.to_numpy()
            present[at] = True
            for column in sums.columns:
                missing = np.isnan(combined[column][at])
                combined[column][at[missing]] = sums[column].to_numpy(dtype=float)[missing]
    key = np.flatnonzero(present)
    return keys.frame(key, {column: combined[column][key] for column in columns})


def _sums_by_key(values: pd.DataFrame, keys: np.ndarray, min_count: int = 0) -> pd.DataFrame:
    """The columns' sums per key (-1: none, the row is left out), indexed by key in order.

    pandas' own groupby sums over the columns the keys code, to the last bit: pandas sums
    sorted keys by ``reduceat`` (unless a column of the block has a NaN), others by
    compensated summation (its Cython ``group_sum``), which :func:`_compensated_sums` does
    the same way on a table of keys, without pandas' factorizing and grouping. Sorted or
    sparse keys go to pandas as a categorical of the keys present, so pandas takes its group
    codes as they are instead of hashing millions of keys to find them.
    """
    table = values.to_numpy(dtype=float)
    span = int(keys.max()) + 1 if len(keys) else 0
    if span <= 4 * len(keys) and not (in_order(keys) and not np.isnan(table).any()):
        sums, observed, rows = _compensated_sums(keys, table, span)
        present = np.flatnonzero(rows)
        sums = sums[present]
        sums[observed[present] < min_count] = np.nan
        return pd.DataFrame(sums, index=present, columns=values.columns)
    codes, present = key_codes(keys)
    groups = pd.Categorical.from_codes(codes, categories=pd.Index(present), validate=False)
    sums = values.groupby(groups, observed=False).sum(min_count=min_count)
    sums.index = present
    return sums


@jit
def _compensated_sums(keys: np.ndarray, values: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key 0 .. span - 1 and column, the sum of the rows' values as pandas' ``group_sum`` adds them
    (compensated, NaN skipped, an infinite value resetting the compensation), how many values it
    added, and per key how many rows it has; rows of a negative key are left out.

    A key's running sums, compensations and counts lie side by side, so a row's update touches
    one cache line: rows come by series, so consecutive rows' keys are far apart.
    """
    n_columns = values.shape[1]
    state = np.zeros((span, 1 + 3 * n_columns))  # rows, then (sum, compensation, values added) per column
    for row in range(len(keys)):
        key = keys[row]
        if key < 0:
            continue
        state[key, 0] += 1
        for column in range(n_columns):
            value = values[row, column]
            if value != value:
                continue
            at = 1 + 3 * column
            state[key, at + 2] += 1
            step = value - state[key, at + 1]
            total = state[key, at] + step
            compensation = total - state[key, at] - step
            state[key, at + 1] = compensation if compensation == compensation else 0.0
            state[key, at] = total
    sums = state[:, 1::3].copy()
    observed = state[:, 3::3].copy()
    return sums, observed, state[:, 0].copy()


class _TimeHostKeys:
    """The (time, host) of the rows of several frames as one integer key each: ``time * n_hosts + host``.

    Times and hosts are coded in the order a groupby sorts them (-1 where either is
    missing, rows a groupby drops), so sorting keys sorts rows by time, then host.
    Times on the grid of ``step_ns`` are coded by arithmetic (:func:`grid_codes_apart`).
    """

    def __init__(self, columns: list[tuple[pd.Series, pd.Series]], step_ns: int) -> None:
        time_codes, times = grid_codes_apart([nanoseconds(times) for times, _ in columns], step_ns)
        self.times = utc_times(times)
        host_codes, self.hosts = factorize_runs_apart([hosts for _, hosts in columns], sort=True)
        self.n_hosts = max(len(self.hosts), 1)
        self.keys = [np.where((times >= 0) & (hosts >= 0), times * self.n_hosts + hosts, -1)
                     for times, hosts in zip(time_codes, host_codes)]

    def frame(self, keys: np.ndarray, columns: dict[str, object]) -> pd.DataFrame:
        """time, host and ``columns`` for rows with these keys."""
        return pd.DataFrame({"time": self.times.take(keys // self.n_hosts),
                             "host": self.hosts.take(keys % self.n_hosts), **columns})
