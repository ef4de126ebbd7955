"""From wide frames per measurement to tidy rates on one time grid.

The detector reads the four measurements of the data contract as
``collector.frames.points_to_frames`` (or a store's reads) give them: one wide
frame per measurement, a ``time`` column, one column per tag and per field.
This module turns them into what the detector reasons about, per grid interval:

- switch ports: octets, packets, discards, errors per second, speed, status, and
  the vendor congestion counters of the SNMP source's profiles (queue drops, PFC
  pauses sent and received, Onyx TxWait);
- NIC ports (``infiniband``): congestion, retransmission and error counters
  and traffic per second;
- netdevs (``ethtool``): PFC pause frames and pause time received and sent;
- GPUs (``nvidia_smi``): the busy signal and power.

All samples are put on one grid of ``step_s`` seconds: a sample stamped ``t``
describes the interval that ends at ``t`` and is labelled with the grid interval
that holds most of it, so sources polled a little apart in time still line up
and finer samples average into the grid's intervals. Missing
measurements give empty frames: a site without ethtool or without GPUs still
gets everything the other sources say.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from collector.schema import ETHTOOL, INFINIBAND, INTERFACE, NVIDIA_SMI
from detector.compiled import jit
from detector.rates import (IN_ORDER, TIME, UNSORTED, FloatBlock, counter_rates, distinct_rows, factorize_runs,
                            grid_step_ns, group_codes, in_order, map_keys, nanoseconds, row_sums, series_order,
                            utc_times)


class TelemetryError(ValueError):
    """The telemetry cannot be analysed; the message names the measurement and the problem."""


INTERFACE_NAME_TAGS = ("ifName", "ifDescr", "ifIndex")
"""The first of these tags present names a switch port (Telegraf configs vary)."""
SWITCH_TAG = "agent_host"

INTERFACE_COUNTERS = (
    "ifHCInOctets", "ifHCOutOctets", "ifInOctets", "ifOutOctets",
    "ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors",
)
INTERFACE_GAUGES = ("ifHighSpeed", "ifOperStatus")

SWITCH_QUEUE_DROPS = re.compile(
    r"^(clEgressQOverflowDiscards|clBufferOverflowDiscards|clIntOutTc\d+(Buff|Wred)Discard"
    r"|mellanoxQoSTC(UnicastNoBufferDiscard|WREDDiscard)(_\w+)?|jnxCosQstat(TailDropPkts|TotalRedDropPkts)(_\w+)?"
    r"|aristaIngressQueuePktsDropped(_\w+)?)$"
)
"""Vendor queue and buffer drop counters on ``interface`` points (the SNMP source's profiles)."""
SWITCH_PAUSE_FAMILIES = {
    "out": (
        re.compile(r"^(clIntOutPfc\d+Pkt|aristaPfcPriorityRequests(_\w+)?|mellanoxQoSPFCTxPausePkts(_\w+)?)$"),
        re.compile(r"^(clIntOutPausePkt|mellanoxQoSPortTxPausePkts)$"),
        re.compile(r"^dot3HCOutPauseFrames$"),
        re.compile(r"^dot3OutPauseFrames$"),
    ),
    "in": (
        re.compile(r"^(clIntInPfc\d+Pkt|aristaPfcPriorityIndications(_\w+)?|mellanoxQoSPFCRxPausePkts(_\w+)?)$"),
        re.compile(r"^(clIntInPausePkt|mellanoxQoSPortRxPausePkts)$"),
        re.compile(r"^dot3HCInPauseFrames$"),
        re.compile(r"^dot3InPauseFrames$"),
    ),
}
"""Pause frames a switch port sends (``out``) and receives (``in``): per-priority PFC counters where the
vendor has them, else port pause counters, else EtherLike-MIB's (64-bit, then 32-bit). Only the first
family a port reports is used: they count the same frames again."""
SWITCH_TX_WAIT = "mellanoxQoSPortTxWaitMicroseconds"
"""Microseconds a port had data to send and could not (Onyx): the switch's own port_xmit_wait."""
PORT_COLUMN_SOURCES = {
    "in_bps": ("ifHCInOctets", "ifInOctets"), "out_bps": ("ifHCOutOctets", "ifOutOctets"),
    "discards_in": ("ifInDiscards",), "discards_out": ("ifOutDiscards",),
    "errors_in": ("ifInErrors",), "errors_out": ("ifOutErrors",),
    "speed_bps": ("ifHighSpeed",), "oper_status": ("ifOperStatus",), "tx_wait": (SWITCH_TX_WAIT,),
}
"""Port columns taken from the first of these rates a port has (octets and speed scaled afterwards)."""

NIC_TRAFFIC = ("port_xmit_data", "port_rcv_data", "port_xmit_data_64", "port_rcv_data_64")
"""4-byte words (sysfs), whatever the lane count."""
NIC_CONGESTION = (
    "port_xmit_wait", "np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled",
)
NIC_RECOVERY = (
    "roce_adp_retrans", "local_ack_timeout_err", "out_of_sequence", "packet_seq_err",
)
NIC_ERRORS = (
    "symbol_error", "port_rcv_errors", "link_error_recovery", "link_downed",
    "local_link_integrity_errors",
)
NIC_COUNTERS = (*NIC_TRAFFIC, *NIC_CONGESTION, *NIC_RECOVERY, *NIC_ERRORS)

PRIORITY_PAUSE_FIELD = re.compile(r"^(rx|tx)_prio\d+_pause(_duration)?$")
"""mlx5 per-priority PFC counters: pause frames, and pause time in microseconds."""
GLOBAL_PAUSE_FIELD = re.compile(r"^(rx|tx)_pause_ctrl_phy$")
"""Pause frames of all priorities together: used only where the per-priority ones are missing,
since they count the same frames again."""
ETHTOOL_BYTES = {"rx_bytes": ("rx_bytes_phy", "rx_bytes"), "tx_bytes": ("tx_bytes_phy", "tx_bytes")}
"""Bytes on the wire per direction, by the first name a driver has."""

BUSY_FIELDS = ("sm_active", "utilization_gpu")
"""The GPU busy signal: SM activity where the GPU reports it, else NVML's utilization."""


RATE_MARKERS = ("sysUpTime", "ifCounterDiscontinuityTime", "counter32_fields")
"""Fields rates need beside the counters: reboots, discontinuities, which counters are 32-bit."""
USED_FIELDS: dict[str, tuple[str, ...]] = {
    INTERFACE: (*INTERFACE_COUNTERS, *INTERFACE_GAUGES, SWITCH_TX_WAIT, *RATE_MARKERS),
    INFINIBAND: (*NIC_COUNTERS, *RATE_MARKERS),
    ETHTOOL: (*(name for names in ETHTOOL_BYTES.values() for name in names), *RATE_MARKERS),
    NVIDIA_SMI: (*BUSY_FIELDS, "power_draw"),
}
USED_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    INTERFACE: (SWITCH_QUEUE_DROPS, *(family for families in SWITCH_PAUSE_FAMILIES.values() for family in families)),
    ETHTOOL: (PRIORITY_PAUSE_FIELD, GLOBAL_PAUSE_FIELD),
}


def used_fields(measurement: str, names: Iterable[str]) -> list[str]:
    """Of a store's field names, those the detector reads from ``measurement`` (named or matching a pattern).

    A store read of only these fields skips the many counters (``ethtool -S`` lists hundreds) the
    detector never looks at.
    """
    named = set(USED_FIELDS.get(measurement, ()))
    patterns = USED_PATTERNS.get(measurement, ())
    return [name for name in names if name in named or any(pattern.match(name) for pattern in patterns)]


@dataclass(slots=True)
class Telemetry:
    """Rates per interval on one grid; each frame has a ``time`` column of grid times."""

    step_s: float
    ports: pd.DataFrame
    """agent_host, port, in_bps, out_bps, discards_in, discards_out, errors_in, errors_out,
    speed_bps, oper_status, and from vendor tables where present: queue_drops, pauses_out (frames the
    switch sends), pauses_in (frames it receives), tx_wait (share of time)."""
    nics: pd.DataFrame
    """host, device, port, netdev, tx_bytes, rx_bytes and the NIC counters per second."""
    pauses: pd.DataFrame
    """host, netdev, pause_rx, pause_rx_us, pause_tx, pause_tx_us (frames and microseconds per second),
    tx_bytes, rx_bytes."""
    gpus: pd.DataFrame
    """host, gpu (int), busy (%), busy_field, kernel (utilization_gpu where busy is sm_active, %), power_w, model."""
    start: pd.Timestamp | None
    end: pd.Timestamp | None


def load_telemetry(frames: Mapping[str, pd.DataFrame], step_s: float | None = None) -> Telemetry:
    """Rates and GPU busy on one grid from the wide frames of a scenario or a store read.

    The switch ports' rates, the largest measurement's, are made on a second core beside the
    other three measurements': most of both is compiled kernels and numpy, which release the GIL
    (an 8 h window of 1,024 GPUs: 1.6 s down to 1.2). Each measurement is asked for once, so a
    mapping that lets go of a frame it hands out (as ``detector.batch`` does) frees its raw rows
    once their rates are made.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="port-rates") as pool:
        ports_made = pool.submit(_port_rates, frames.get(INTERFACE))
        try:
            nics = _nic_rates(frames.get(INFINIBAND))
            pauses = _pause_rates(frames.get(ETHTOOL))
            gpus = _gpu_samples(frames.get(NVIDIA_SMI))
        except TelemetryError:
            ports_made.result()  # the first bad measurement is named, as without the second core
            raise
        ports = ports_made.result()
    if step_s is None:
        step_s = _typical_step(gpus, ports, nics, pauses)
        # Collectors run on whole intervals; jitter must not make the grid drift (or its times odd).
        if np.isfinite(step_s):
            step_s = float(round(step_s)) if step_s >= 2 else round(step_s, 1)
    if not step_s or not np.isfinite(step_s) or step_s <= 0:
        raise TelemetryError(
            "cannot tell the sampling interval: no series has two samples "
            f"(measurements present: {', '.join(sorted(frames)) or 'none'})"
        )
    ports = _on_grid(ports, ["agent_host", "port"], step_s)
    nics = _on_grid(nics, ["host", "device", "port"], step_s)
    pauses = _on_grid(pauses, ["host", "netdev"], step_s)
    gpus = _on_grid(gpus, ["host", "gpu"], step_s)
    times = [frame[TIME] for frame in (ports, nics, pauses, gpus) if not frame.empty]
    start = min(series.min() for series in times) if times else None
    end = max(series.max() for series in times) if times else None
    return Telemetry(step_s, ports, nics, pauses, gpus, start, end)


def _typical_step(*frames: pd.DataFrame) -> float:
    for frame in frames:
        if "interval_s" in frame.columns and frame["interval_s"].notna().any():
            return float(np.nanmedian(frame["interval_s"].to_numpy(dtype=float)))
    return float("nan")


def _on_grid(frame: pd.DataFrame, keys: list[str], step_s: float) -> pd.DataFrame:
    """Label each sample with the grid interval holding the middle of the interval it describes.

    A sample at ``t`` covers ``(t - interval_s, t]``; it goes to the grid time
    ``ceil((t - interval_s / 2) / step) * step``. With samples on the grid's own
    interval that is the nearest grid time, so a few seconds of jitter either way
    do not matter; with finer samples, each lands in the interval it belongs to.
    Samples of a series that land together are averaged, weighted by their intervals.
    """
    if frame.empty:
        return frame
    bins, grid_times, covered = _grid_bins(nanoseconds(frame[TIME]), frame["interval_s"].to_numpy(dtype=float),
                                           step_s, grid_step_ns(step_s))
    frame = frame.assign(**{TIME: utc_times(grid_times)})
    if _one_sample_per_cell(group_codes([frame[key] for key in keys]), bins):
        return frame.reset_index(drop=True)
    numeric = [c for c in frame.columns
               if c not in (TIME, *keys, "interval_s") and pd.api.types.is_numeric_dtype(frame[c])]
    others = [c for c in frame.columns if c not in (TIME, *keys, "interval_s", *numeric)]
    groups = [frame[TIME], *[frame[key] for key in keys]]
    weight = pd.Series(covered, index=frame.index)
    values = frame[numeric]
    total = values.mul(weight, axis=0).groupby(groups, sort=False, dropna=False).sum(min_count=1)
    weights = values.notna().mul(weight, axis=0).groupby(groups, sort=False, dropna=False).sum()
    merged = total / weights.where(weights > 0)
    merged["interval_s"] = weight.groupby(groups, sort=False, dropna=False).sum()
    if others:
        merged = merged.join(frame[others].groupby(groups, sort=False, dropna=False).last())
    return merged.reset_index()


@jit
def _grid_bins(
    stamps: np.ndarray, covered: np.ndarray, step_s: float, step_ns: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, :func:`_on_grid`'s grid bin, that bin's time in nanoseconds and the seconds the sample
    covers (``step_s`` where ``covered`` is not a positive number), in one pass."""
    bins = np.empty(len(stamps), dtype=np.int64)
    times = np.empty(len(stamps), dtype=np.int64)
    spans = np.empty(len(stamps))
    step = step_s * 1e9
    for row in range(len(stamps)):
        span = covered[row]
        if not (np.isfinite(span) and span > 0):
            span = step_s
        spans[row] = span
        bins[row] = np.int64(np.ceil((stamps[row] - span * 1e9 / 2) / step))
        times[row] = bins[row] * step_ns
    return bins, times, spans


def _one_sample_per_cell(series: np.ndarray, bins: np.ndarray) -> bool:
    """Whether no two samples of one series (``series``: its code per row) land in one grid interval."""
    order = series_order(series, bins)
    if order != UNSORTED:  # rows come by series, then time: only neighbours can share a cell
        return order == IN_ORDER
    cells = series * (int(bins.max() - bins.min()) + 1) + (bins - bins.min())
    return len(pd.unique(cells)) == len(cells)


def _port_rates(frame: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["time", "agent_host", "port", "interval_s", "in_bps", "out_bps",
               "discards_in", "discards_out", "errors_in", "errors_out", "speed_bps", "oper_status",
               "queue_drops", "pauses_out", "pauses_in", "tx_wait"]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=columns)
    if SWITCH_TAG not in frame.columns:
        raise TelemetryError(f"measurement '{INTERFACE}': no '{SWITCH_TAG}' tag to tell switches apart")
    name_tag = next((tag for tag in INTERFACE_NAME_TAGS if tag in frame.columns), None)
    if name_tag is None:
        raise TelemetryError(f"measurement '{INTERFACE}': no interface tag ({', '.join(INTERFACE_NAME_TAGS)})")
    vendor = [name for name in frame.columns
              if SWITCH_QUEUE_DROPS.match(name) or name == SWITCH_TX_WAIT
              or any(family.match(name) for families in SWITCH_PAUSE_FAMILIES.values() for family in families)]
    rates = counter_rates(
        frame, series=[SWITCH_TAG, name_tag], counters=[*INTERFACE_COUNTERS, *vendor], gauges=INTERFACE_GAUGES,
        source=f"measurement '{INTERFACE}'",
    )
    block = FloatBlock(columns[3:], len(rates))
    block["interval_s"] = rates["interval_s"].to_numpy()
    for name, sources in PORT_COLUMN_SOURCES.items():
        _first_present(rates, sources, out=block[name])
    block["in_bps"] *= 8
    block["out_bps"] *= 8
    block["speed_bps"] *= 1e6
    block["tx_wait"] /= 1e6
    row_sums(rates, [name for name in vendor if SWITCH_QUEUE_DROPS.match(name)], out=block["queue_drops"])
    _first_family(rates, vendor, SWITCH_PAUSE_FAMILIES["out"], out=block["pauses_out"])
    _first_family(rates, vendor, SWITCH_PAUSE_FAMILIES["in"], out=block["pauses_in"])
    return block.frame({"time": rates[TIME], "agent_host": _as_str(rates[SWITCH_TAG]), "port": _as_str(rates[name_tag])})


def _first_present(rates: pd.DataFrame, names: Iterable[str], out: np.ndarray) -> None:
    """Into ``out``, per row the first of these columns that has a value there (NaN where none has)."""
    _fill_gaps(out, (rates[name].to_numpy(dtype=float) for name in names if name in rates.columns))


def _fill_gaps(out: np.ndarray, candidates: Iterable[np.ndarray]) -> None:
    """Into ``out``, per row the first candidate's value that is not NaN (NaN where none is).

    Candidates are taken one at a time, and no more once every row has a value.
    """
    first = True
    for values in candidates:
        if not _fill_from(out, values, first):
            return
        first = False
    if first:
        out[:] = np.nan


@jit
def _fill_from(out: np.ndarray, values: np.ndarray, first: bool) -> bool:
    """Into ``out``, ``values`` (the ``first`` candidate) or only where ``out`` is NaN; whether a NaN is left."""
    gaps = False
    for row in range(len(out)):
        if first or out[row] != out[row]:
            out[row] = values[row]
        gaps |= out[row] != out[row]
    return gaps


def _as_str(tags: pd.Series) -> pd.Series:
    return tags if tags.dtype == "str" else tags.astype(str)


def _first_family(rates: pd.DataFrame, names: list[str], families: tuple[re.Pattern[str], ...],
                  out: np.ndarray) -> None:
    """Into ``out``, per row the sum of the first family of counters that has a value there."""
    members = ([name for name in names if family.match(name)] for family in families)
    _fill_gaps(out, (row_sums(rates, family) for family in members if family))


def _nic_rates(frame: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["time", "host", "device", "port", "netdev", "interval_s", "tx_bytes", "rx_bytes", *NIC_CONGESTION,
               *NIC_RECOVERY, *NIC_ERRORS]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=columns)
    for tag in ("host", "device"):
        if tag not in frame.columns:
            raise TelemetryError(f"measurement '{INFINIBAND}': no '{tag}' tag")
    frame = frame if "port" in frame.columns else frame.assign(port="1")
    rates = counter_rates(
        frame, series=["host", "device", "port"], counters=NIC_COUNTERS, source=f"measurement '{INFINIBAND}'",
    )
    block = FloatBlock(["interval_s", "tx_bytes", "rx_bytes"], len(rates))
    block["interval_s"] = rates["interval_s"].to_numpy()
    _first_present(rates, ("port_xmit_data_64", "port_xmit_data"), out=block["tx_bytes"])
    _first_present(rates, ("port_rcv_data_64", "port_rcv_data"), out=block["rx_bytes"])
    block["tx_bytes"] *= 4  # the data counters count 4-byte words
    block["rx_bytes"] *= 4
    # The NIC counters' rates are kept as counter_rates gave them, not copied.
    counters = {name: rates[name] if name in rates.columns else pd.Series(np.nan, index=rates.index)
                for name in (*NIC_CONGESTION, *NIC_RECOVERY, *NIC_ERRORS)}
    out = block.frame({"time": rates[TIME], "host": _as_str(rates["host"]), "device": _as_str(rates["device"]),
                       "port": _as_str(rates["port"])}, counters)
    netdevs = _last_tag(frame, ["host", "device", "port"], "netdev")
    out.insert(5, "netdev", map_keys([out["host"], out["device"], out["port"]], lambda *key: netdevs.get(key)))
    return out


def _pause_rates(frame: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["time", "host", "netdev", "interval_s", "pause_rx", "pause_rx_us", "pause_tx", "pause_tx_us",
               "tx_bytes", "rx_bytes"]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=columns)
    for tag in ("host", "interface"):
        if tag not in frame.columns:
            raise TelemetryError(f"measurement '{ETHTOOL}': no '{tag}' tag")
    pause_fields = [name for name in frame.columns if PRIORITY_PAUSE_FIELD.match(name)]
    if not pause_fields:
        pause_fields = [name for name in frame.columns if GLOBAL_PAUSE_FIELD.match(name)]
    byte_fields = [name for names in ETHTOOL_BYTES.values() for name in names if name in frame.columns]
    counters = [*pause_fields, *byte_fields]
    rates = counter_rates(frame, series=["host", "interface"], counters=counters, source=f"measurement '{ETHTOOL}'")
    block = FloatBlock(["interval_s", "pause_rx", "pause_rx_us", "pause_tx", "pause_tx_us", *ETHTOOL_BYTES], len(rates))
    block["interval_s"] = rates["interval_s"].to_numpy()
    for direction in ("rx", "tx"):
        frame_fields = [n for n in pause_fields if n.startswith(direction) and not n.endswith("_duration")]
        duration_fields = [n for n in pause_fields if n.startswith(direction) and n.endswith("_duration")]
        row_sums(rates, frame_fields, out=block[f"pause_{direction}"])
        row_sums(rates, duration_fields, out=block[f"pause_{direction}_us"])
    for name, sources in ETHTOOL_BYTES.items():
        _first_present(rates, sources, out=block[name])
    return block.frame({"time": rates[TIME], "host": _as_str(rates["host"]), "netdev": _as_str(rates["interface"])})


def _gpu_samples(frame: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["time", "host", "gpu", "interval_s", "busy", "busy_field", "kernel", "power_w", "model"]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=columns)
    for tag in ("host", "index"):
        if tag not in frame.columns:
            raise TelemetryError(f"measurement '{NVIDIA_SMI}': no '{tag}' tag")
    present = [name for name in BUSY_FIELDS if name in frame.columns]
    if not present:
        raise TelemetryError(f"measurement '{NVIDIA_SMI}': neither {' nor '.join(BUSY_FIELDS)} is present")
    index_codes, indices = factorize_runs(frame["index"], use_na_sentinel=False)
    gpu = pd.Series(pd.to_numeric(pd.Series(indices), errors="coerce").to_numpy()[index_codes], index=frame.index)
    if gpu.isna().any():
        bad = frame.loc[gpu.isna(), "index"].iloc[0]
        raise TelemetryError(f"measurement '{NVIDIA_SMI}': tag 'index' is not a GPU number: {bad!r}")
    host = frame["host"].astype(str)
    gpu = gpu.astype(int)
    sm, utilization = (_field(frame, name) for name in BUSY_FIELDS)
    # One signal per GPU, never a mix: a GPU that reports SM activity at all is judged on it alone.
    gpu_codes = group_codes([host, gpu])
    has_sm = np.zeros(len(frame), dtype=bool)
    if sm is not None:
        reports_sm = np.zeros(gpu_codes.max() + 1, dtype=bool)
        reports_sm[gpu_codes[~np.isnan(sm)]] = True
        has_sm = reports_sm[gpu_codes]
    busy, kernel = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    busy_field = np.zeros(len(frame), dtype=np.int8)  # 0: none, else 1 + its position in BUSY_FIELDS
    if sm is not None:
        np.copyto(busy, sm, where=has_sm)
        busy_field[has_sm] = 1
    if utilization is not None:
        np.copyto(busy, utilization, where=~has_sm)
        busy_field[~has_sm] = 2
        # Beside SM activity, NVML's utilization says whether any kernel ran at all (NCCL's included).
        np.copyto(kernel, utilization, where=has_sm)
    out = pd.DataFrame({
        "time": frame[TIME], "host": host, "gpu": gpu, "busy": busy,
        "busy_field": pd.array(["", *BUSY_FIELDS], dtype="str").take(busy_field),
        "kernel": kernel,
        "power_w": pd.to_numeric(frame["power_draw"], errors="coerce") if "power_draw" in frame.columns else np.nan,
        "model": frame["name"].astype(str) if "name" in frame.columns else "",
    })
    stamps = nanoseconds(out[TIME])
    if not in_order(factorize_runs(out["host"], sort=True)[0], out["gpu"].to_numpy(), stamps):
        out = out.sort_values(["host", "gpu", TIME], kind="stable")
        stamps = nanoseconds(out[TIME])
        gpu_codes = group_codes([out["host"], out["gpu"]])
    interval = np.full(len(out), np.nan)
    interval[1:] = np.where(gpu_codes[1:] == gpu_codes[:-1], np.diff(stamps.astype(float)) / 1e9, np.nan)
    out["interval_s"] = interval
    return out.reset_index(drop=True)


def _field(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """A field's values as floats (NaN where not a number), None where the frame lacks it."""
    if name not in frame.columns:
        return None
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _last_tag(frame: pd.DataFrame, keys: list[str], tag: str) -> dict[tuple, str]:
    """Per key, the last value of ``tag`` that is not missing."""
    if tag not in frame.columns:
        return {}
    # Each (key, tag) pair's last row first (a few thousand runs), then the missing tags dropped.
    known = distinct_rows(frame[[*keys, tag]], keep="last").dropna(subset=[tag])
    known = known.drop_duplicates(keys, keep="last")
    return {tuple(str(v) for v in row[:-1]): str(row[-1]) for row in known.itertuples(index=False)}
