"""``strandwatch report``: a week of stranded compute as an HTML page, a PDF and CSV files.

    strandwatch report --since 7d --store metrics.db --output report/

writes ``report/report.html`` (plots embedded as PNG), ``report/report.pdf``
(the same figures and tables, one section per page) and one CSV per table:
utilization by day; network-stranded GPU-hours and dollars by job, link,
switch and cause; the top episodes with their evidence; the change against
the week before. A short summary in plain words opens the page.

It reads the detector's results (``stranded_compute``, ``stranded_episode``,
see docs/schema.md) and the GPUs' ``nvidia_smi`` and ``job_gpu`` points from
the store. Where the store has rollups beside it (``metrics.1m.db``,
``metrics.1h.db``, see collector/store/rollup.py), the GPU telemetry comes from
the coarsest rollup that fits each stretch of the window (:class:`RollupReader`):
a week of 1,024 GPUs is about 0.2 million hourly rows instead of 60 million raw
samples per field. When the window has no results yet and ``--topology`` and
``--jobs`` are given, it runs the detector over the window's raw telemetry
first. The window ends at ``--until`` or at the newest GPU sample in the
store, so a report of a replayed or simulated week needs no clock tricks.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Collection, Mapping, Protocol

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from collector.frames import points_to_frames
from collector.store import EmbeddedStore
from collector.store.rollup import Resolution, Rollups
from detector.results import STRANDED_COMPUTE, STRANDED_EPISODE, result_points

DEFAULT_STORE = Path("/var/lib/strandwatch/metrics.db")
TOP_EPISODES = 15
TOP_ROWS = 10
BUSY_FIELDS = ("sm_active", "utilization_gpu")

__all__ = ["ReportData", "ReportReader", "RollupReader", "StoreReader", "add_report_arguments", "build_tables",
           "load_report_data", "open_reader", "parse_span", "run_report", "write_report"]


class ReportReader(Protocol):
    """Where the report's measurements come from: raw points (:class:`StoreReader`) or rollups
    (:class:`RollupReader`)."""

    def read(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
             fields: Collection[str] | None = None) -> pd.DataFrame:
        """The points of [start, end) as stored (the detector's results: few rows, read as written)."""
        ...

    def read_series(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
                    fields: Collection[str]) -> pd.DataFrame:
        """Telemetry over [start, end) at whatever resolution the reader picks, with a ``seconds`` column:
        the span of time each row stands for (the sample interval of raw points, the step of a rollup).
        Means weighted by ``seconds`` and sums of ``seconds`` are then the same at every resolution."""
        ...

    def latest(self, measurement: str) -> pd.Timestamp | None: ...


class StoreReader:
    """Raw points of an :class:`EmbeddedStore`, read as wide frames."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def read(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
             fields: Collection[str] | None = None) -> pd.DataFrame:
        return self.store.read(measurement, start, end, fields=fields)

    def read_series(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
                    fields: Collection[str]) -> pd.DataFrame:
        frame = self.store.read(measurement, start, end, fields=fields)
        return frame.assign(seconds=_sample_interval_s(frame))

    def latest(self, measurement: str) -> pd.Timestamp | None:
        span = self.store.time_range(measurement)
        return None if span is None else span.last


def _sample_interval_s(frame: pd.DataFrame) -> float:
    """The usual spacing of a raw frame's samples (0 with fewer than two sample times)."""
    times = frame["time"].drop_duplicates().sort_values()
    return float(times.diff().dt.total_seconds().median()) if len(times) > 1 else 0.0


MAX_STEP: Mapping[str, pd.Timedelta] = {"job_gpu": pd.Timedelta(minutes=1)}
"""The coarsest rollup the report reads per measurement (see :class:`RollupReader`); others: any."""


class RollupReader:
    """Raw points for the detector's results; for telemetry, the coarsest rollup that covers each stretch.

    A window [start, end) is cut into whole intervals of the coarsest level
    that holds them (a rollup row stands for its complete interval, so only
    intervals inside the window and inside the level's time range are used),
    then what is left at either edge, or past the newest rollup, or before a
    level's retention, goes to the next finer level, and the rest to the raw
    points. A report ending now thus reads the last minutes from raw points and
    the week before from 1 h rows, and matches a raw read within rounding.

    ``max_step`` caps the level per measurement: ``job_gpu`` has a row per
    held GPU and poll, and a rollup row only says the GPU was held at some
    moment of its interval, so 1 h rows would count a job that ends at 10:05
    as holding its GPUs until 11:00; 1 min rows bound that to a minute.
    """

    def __init__(self, raw: EmbeddedStore, levels: Collection[tuple[pd.Timedelta, EmbeddedStore]],
                 max_step: Mapping[str, pd.Timedelta] = MAX_STEP) -> None:
        self.store = raw
        self.levels = sorted(levels, key=lambda level: level[0], reverse=True)  # coarsest first
        self.max_step = dict(max_step)
        self._raw_interval: dict[tuple[str, ...], float] = {}

    def read(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
             fields: Collection[str] | None = None) -> pd.DataFrame:
        return self.store.read(measurement, start, end, fields=fields)

    def read_series(self, measurement: str, start: pd.Timestamp, end: pd.Timestamp,
                    fields: Collection[str]) -> pd.DataFrame:
        pending = [(start, end)]
        frames = []
        for step, store in self.levels:
            if step > self.max_step.get(measurement, step):
                continue
            span = store.time_range(measurement)
            if span is None:
                continue
            left = []
            for first, last in pending:
                inner_first = max(first.ceil(step), span.first)
                inner_last = min(last.floor(step), span.last + step)
                if inner_first >= inner_last:
                    left.append((first, last))
                    continue
                frames.append(store.read(measurement, inner_first, inner_last, fields=fields)
                              .assign(seconds=step.total_seconds()))
                left += [(a, b) for a, b in ((first, inner_first), (inner_last, last)) if a < b]
            pending = left
        for first, last in pending:
            frame = self.store.read(measurement, first, last, fields=fields)
            if not frame.empty:
                frames.append(frame.assign(seconds=self._raw_interval_s(measurement, fields)))
        frames = [frame for frame in frames if not frame.empty]
        if not frames:  # the empty frame of this measurement and these fields
            return self.store.read(measurement, start, start, fields=fields).assign(seconds=0.0)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _raw_interval_s(self, measurement: str, fields: Collection[str]) -> float:
        """The raw sample interval of these fields (sources poll some fields less often), from the newest ten
        minutes of raw points: an edge alone is too short to tell."""
        key = (measurement, *sorted(fields))
        if key not in self._raw_interval:
            span = self.store.time_range(measurement)
            sample = (pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]")}) if span is None else
                      self.store.read(measurement, span.last - pd.Timedelta(minutes=10), span.last + pd.Timedelta(1),
                                      fields=fields))
            self._raw_interval[key] = _sample_interval_s(sample)
        return self._raw_interval[key]

    def latest(self, measurement: str) -> pd.Timestamp | None:
        spans = [store.time_range(measurement) for store in (self.store, *(store for _, store in self.levels))]
        return max((span.last for span in spans if span is not None), default=None)


_LEVEL = re.compile(r"(\d+)([smhd])")


def open_reader(raw: EmbeddedStore, stack: ExitStack) -> ReportReader:
    """A :class:`RollupReader` when rollup files lie beside ``raw`` (``metrics.1h.db`` ...), else a
    :class:`StoreReader`.

    The rollups are opened read-only and closed with ``stack``.
    """
    levels = []
    for path in sorted(raw.path.parent.glob(f"{raw.path.stem}.*{raw.path.suffix}")):
        label = path.name[len(raw.path.stem) + 1:len(path.name) - len(raw.path.suffix)]
        match = _LEVEL.fullmatch(label)
        if not match:
            continue
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        step = pd.Timedelta(**{unit: int(match.group(1))})
        if Rollups.path_of(raw.path, Resolution(step.to_pytimedelta(), None)) != path:
            continue
        levels.append((step, stack.enter_context(EmbeddedStore(path, read_only=True))))
    return RollupReader(raw, levels) if levels else StoreReader(raw)


def parse_span(text: str) -> pd.Timedelta:
    """``7d``, ``36h``, ``90m``: a positive span; anything else is a clear error."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([wdhm])\s*", text or "")
    if not match:
        raise ValueError(f"--since: {text!r} is not a span like 7d, 36h or 90m")
    number, unit = float(match.group(1)), match.group(2)
    span = pd.Timedelta(**{{"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}[unit]: number})
    if span <= pd.Timedelta(0):
        raise ValueError(f"--since: {text!r} must be longer than zero")
    return span


@dataclass(slots=True)
class ReportData:
    start: pd.Timestamp
    end: pd.Timestamp
    losses: pd.DataFrame
    """stranded_compute rows of the window: time, job, cause, link, switch, gpu_seconds_lost, dollars_lost, ..."""
    previous_losses: pd.DataFrame
    """The same for the span before the window, for week-over-week change."""
    episodes: pd.DataFrame
    gpu_days: pd.DataFrame
    """Per UTC day: gpus, gpu_hours, sm_active (mean %), utilization_gpu (mean %), allocated_gpus."""
    previous_busy: float | None
    notes: list[str] = field(default_factory=list)


def load_report_data(reader: ReportReader, start: pd.Timestamp, end: pd.Timestamp,
                     advance: Callable[[str], None] = lambda _: None) -> ReportData:
    """Everything the report shows, read day by day so a week of a large cluster stays within memory."""
    span = end - start
    losses = _with_columns(reader.read(STRANDED_COMPUTE, start, end), LOSS_COLUMNS)
    advance("stranded compute")
    previous = _with_columns(reader.read(STRANDED_COMPUTE, start - span, start), LOSS_COLUMNS)
    advance("previous week")
    episodes = _with_columns(reader.read(STRANDED_EPISODE, start, end), EPISODE_COLUMNS)
    advance("episodes")
    days = []
    day = start
    while day < end:
        day_end = min(day.normalize() + pd.Timedelta(days=1), end)
        days.append(_gpu_day(reader, day, day_end))
        advance(f"GPUs {day:%Y-%m-%d}")
        day = day_end
    gpu_days = pd.DataFrame([row for row in days if row is not None])
    previous_gpus = _gpu_day(reader, start - span, start, allocation=False)
    advance("previous week's GPUs")
    return ReportData(start, end, losses, previous, episodes, gpu_days,
                      None if previous_gpus is None else previous_gpus["sm_active"])


LOSS_COLUMNS = ("time", "job", "cause", "link", "switch", "gpu_seconds_lost", "dollars_lost")
EPISODE_COLUMNS = ("time", "job", "cause", "end", "gpus", "gpu_seconds_lost", "dollars_lost", "confidence", "links",
                   "evidence")


def _with_columns(frame: pd.DataFrame, columns: Collection[str]) -> pd.DataFrame:
    """The frame with every column the report uses (a missing tag or an empty read has none)."""
    for column in columns:
        if column not in frame:
            frame[column] = pd.Series(dtype="datetime64[ns, UTC]" if column == "time" else object, index=frame.index)
    return frame


def _gpu_day(reader: ReportReader, start: pd.Timestamp, end: pd.Timestamp, allocation: bool = True) -> dict | None:
    """One row of utilization for [start, end): GPUs seen, GPU-hours, time-weighted mean busy and allocation."""
    gpus = reader.read_series("nvidia_smi", start, end, fields=BUSY_FIELDS)
    if gpus.empty:
        return None
    busy_field = "sm_active" if "sm_active" in gpus and gpus["sm_active"].notna().any() else "utilization_gpu"
    keys = gpus["host"] + "/" + gpus["index"]
    row = {
        "day": start.strftime("%Y-%m-%d"),
        "gpus": int(keys.nunique()),
        "gpu_hours": round(float(gpus["seconds"].sum()) / 3600.0, 1),
        "sm_active": _weighted_mean(gpus, busy_field),
        "utilization_gpu": _weighted_mean(gpus, "utilization_gpu"),
        "busy_field": busy_field,
    }
    if not allocation:
        return row
    allocations = reader.read_series("job_gpu", start, end, fields=("allocated",))
    if not allocations.empty:
        # GPU-seconds held by jobs over the seconds that have any allocation: the mean number allocated.
        covered = allocations[["time", "seconds"]].drop_duplicates()["seconds"].sum()
        if covered > 0:
            row["allocated_gpus"] = float(allocations["seconds"].sum() / covered)
    return row


def _weighted_mean(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return np.nan
    present = frame[column].notna()
    weights = frame["seconds"][present]
    if weights.sum() <= 0:
        return float(frame[column].mean())
    return float(np.average(frame[column][present].astype(float), weights=weights))


# --- tables ------------------------------------------------------------------


def _network(losses: pd.DataFrame) -> pd.DataFrame:
    return losses[losses["cause"] == "network"]


def _by(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    columns = [key, "gpu_hours_lost", "dollars_lost", "share_of_network_loss_pct"]
    if rows.empty or key not in rows:
        return pd.DataFrame(columns=columns)
    names = rows[key].replace("", "(unplaced)") if key in ("link", "switch") else rows[key]
    grouped = rows.groupby(names)[["gpu_seconds_lost", "dollars_lost"]].sum()
    grouped = grouped.sort_values("dollars_lost", ascending=False)
    total = grouped["dollars_lost"].sum()
    table = pd.DataFrame({
        key: grouped.index.astype(str),
        "gpu_hours_lost": (grouped["gpu_seconds_lost"] / 3600).round(2).to_numpy(),
        "dollars_lost": grouped["dollars_lost"].round(2).to_numpy(),
        "share_of_network_loss_pct": (100 * grouped["dollars_lost"] / total).round(1).to_numpy() if total else 0.0,
    })
    return table.reset_index(drop=True)


def _change(this: float, before: float) -> float | None:
    return None if not before else round(100.0 * (this - before) / before, 1)


def build_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """Every table of the report, by the file name its CSV gets."""
    network = _network(data.losses)
    previous = _network(data.previous_losses)
    days = data.gpu_days.copy()
    if not days.empty:
        per_day = network.assign(day=network["time"].dt.strftime("%Y-%m-%d")) if not network.empty else None
        other = data.losses[data.losses["cause"] != "network"] if not data.losses.empty else data.losses
        for name, rows in (("network", per_day), ("other", other)):
            if rows is not None and not rows.empty:
                rows = rows.assign(day=rows["time"].dt.strftime("%Y-%m-%d"))
                summed = rows.groupby("day")[["gpu_seconds_lost", "dollars_lost"]].sum()
                days[f"{name}_gpu_hours_lost"] = days["day"].map(summed["gpu_seconds_lost"] / 3600).fillna(0).round(2)
                days[f"{name}_dollars_lost"] = days["day"].map(summed["dollars_lost"]).fillna(0).round(2)
            else:
                days[f"{name}_gpu_hours_lost"] = 0.0
                days[f"{name}_dollars_lost"] = 0.0
        days["network_share_pct"] = (100 * days["network_gpu_hours_lost"] / days["gpu_hours"]).round(2)
        days["sm_active"] = days["sm_active"].round(1)
        days["utilization_gpu"] = days["utilization_gpu"].round(1)
        if "allocated_gpus" in days:
            days["allocated_gpus"] = days["allocated_gpus"].round(1)
        days = days.rename(columns={"sm_active": "mean_busy_pct", "utilization_gpu": "mean_utilization_gpu_pct"})

    causes = pd.DataFrame(columns=["cause", "gpu_hours_lost", "dollars_lost"])
    if not data.losses.empty:
        grouped = data.losses.groupby("cause")[["gpu_seconds_lost", "dollars_lost"]].sum()
        causes = pd.DataFrame({"cause": grouped.index.astype(str),
                               "gpu_hours_lost": (grouped["gpu_seconds_lost"] / 3600).round(2).to_numpy(),
                               "dollars_lost": grouped["dollars_lost"].round(2).to_numpy()})
        causes = causes.sort_values("dollars_lost", ascending=False).reset_index(drop=True)

    episodes = pd.DataFrame(columns=["start", "end", "job", "gpus", "gpu_hours_lost", "dollars_lost", "confidence",
                                     "links", "evidence"])
    if not data.episodes.empty:
        chosen = data.episodes[data.episodes["cause"] == "network"].sort_values("dollars_lost", ascending=False)
        chosen = chosen.head(TOP_EPISODES)
        episodes = pd.DataFrame({
            "start": chosen["time"].dt.strftime("%Y-%m-%d %H:%M"),
            "end": pd.to_datetime(chosen["end"], utc=True).dt.strftime("%Y-%m-%d %H:%M"),
            "job": chosen["job"], "gpus": chosen["gpus"].astype(int),
            "gpu_hours_lost": (chosen["gpu_seconds_lost"] / 3600).round(2),
            "dollars_lost": chosen["dollars_lost"].round(2), "confidence": chosen["confidence"].round(2),
            "links": chosen["links"].fillna(""), "evidence": chosen["evidence"].fillna(""),
        }).reset_index(drop=True)

    this_dollars, before_dollars = float(network["dollars_lost"].sum()), float(previous["dollars_lost"].sum())
    this_hours, before_hours = (float(network["gpu_seconds_lost"].sum()) / 3600,
                                float(previous["gpu_seconds_lost"].sum()) / 3600)
    this_busy = float(np.average(data.gpu_days["sm_active"], weights=data.gpu_days["gpu_hours"])) \
        if not data.gpu_days.empty and data.gpu_days["gpu_hours"].sum() > 0 else float("nan")
    week = pd.DataFrame([
        ("network dollars lost", round(this_dollars, 2), round(before_dollars, 2),
         _change(this_dollars, before_dollars)),
        ("network GPU-hours lost", round(this_hours, 2), round(before_hours, 2), _change(this_hours, before_hours)),
        ("jobs hit by the network", network["job"].nunique() if not network.empty else 0,
         previous["job"].nunique() if not previous.empty else 0, None),
        ("mean GPU busy %", round(this_busy, 1), None if data.previous_busy is None else round(data.previous_busy, 1),
         None if data.previous_busy is None else _change(this_busy, data.previous_busy)),
    ], columns=["measure", "this_period", "previous_period", "change_pct"])
    return {
        "summary_week_over_week": week,
        "utilization_by_day": days,
        "network_loss_by_job": _by(network, "job"),
        "network_loss_by_link": _by(network, "link"),
        "network_loss_by_switch": _by(network, "switch"),
        "loss_by_cause": causes,
        "top_network_episodes": episodes,
    }


def summary_text(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The report's opening paragraphs, in plain words."""
    week = tables["summary_week_over_week"].set_index("measure")
    dollars, hours = week.loc["network dollars lost", "this_period"], week.loc["network GPU-hours lost", "this_period"]
    gpu_hours = float(data.gpu_days["gpu_hours"].sum()) if not data.gpu_days.empty else 0.0
    share = f" ({100 * hours / gpu_hours:.2f} % of all GPU time)" if gpu_hours else ""
    lines = [f"From {data.start:%a %d %b %H:%M} to {data.end:%a %d %b %H:%M} UTC the network stranded "
             f"{hours:,.1f} GPU-hours, worth ${dollars:,.2f}{share}."]
    jobs, links = tables["network_loss_by_job"], tables["network_loss_by_link"]
    if not jobs.empty:
        lines.append(f"The job hit hardest was {jobs.iloc[0]['job']} (${jobs.iloc[0]['dollars_lost']:,.2f}); "
                     f"the costliest link was {links.iloc[0]['link']} ({links.iloc[0]['share_of_network_loss_pct']:.0f} "
                     f"% of the loss) and the costliest switch {tables['network_loss_by_switch'].iloc[0]['switch']}.")
    else:
        lines.append("No job lost time to the network in this period.")
    change = week.loc["network dollars lost", "change_pct"]
    before = week.loc["network dollars lost", "previous_period"]
    if change is not None and change == change:
        direction = "more" if change > 0 else "less"
        lines.append(f"That is {abs(change):.0f} % {direction} than the period before (${before:,.2f}).")
    else:
        lines.append("There is no loss on record for the period before to compare with.")
    causes = tables["loss_by_cause"]
    other = causes[causes["cause"] != "network"]
    if not other.empty:
        named = ", ".join(f"{row.cause} {row.gpu_hours_lost:,.1f} h" for row in other.itertuples())
        lines.append(f"GPU time lost to causes outside the network ({named}) is shown for context and not counted.")
    lines.extend(data.notes)
    return lines


# --- figures -------------------------------------------------------------------


def _figures(tables: dict[str, pd.DataFrame]) -> list[tuple[str, object]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figures = []
    days = tables["utilization_by_day"]
    if not days.empty:
        figure, axis = plt.subplots(figsize=(9, 3.6))
        axis.bar(days["day"], days["network_dollars_lost"], color="#d62728", label="network $ lost")
        axis.set_ylabel("$ lost to the network")
        axis.tick_params(axis="x", rotation=30)
        twin = axis.twinx()
        twin.plot(days["day"], days["mean_busy_pct"], color="#1f77b4", marker="o", label="mean GPU busy %")
        twin.set_ylabel("mean GPU busy %")
        twin.set_ylim(0, 100)
        axis.set_title("Network loss and GPU busy by day")
        figure.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        figures.append(("Network loss and GPU busy by day", figure))
    for key, label in (("job", "job"), ("link", "link"), ("switch", "switch")):
        table = tables[f"network_loss_by_{key}"].head(TOP_ROWS)
        if table.empty:
            continue
        figure, axis = plt.subplots(figsize=(9, 0.45 * len(table) + 1.4))
        axis.barh(table[key][::-1], table["dollars_lost"][::-1], color="#d62728")
        axis.set_xlabel("$ lost to the network")
        axis.set_title(f"Network loss by {label} (top {len(table)})")
        figure.tight_layout()
        figures.append((f"Network loss by {label}", figure))
    causes = tables["loss_by_cause"]
    if not causes.empty:
        figure, axis = plt.subplots(figsize=(9, 0.45 * len(causes) + 1.4))
        colors = ["#d62728" if cause == "network" else "#999999" for cause in causes["cause"][::-1]]
        axis.barh(causes["cause"][::-1], causes["gpu_hours_lost"][::-1], color=colors)
        axis.set_xlabel("GPU-hours lost")
        axis.set_title("GPU time lost by cause (only network counts)")
        figure.tight_layout()
        figures.append(("GPU time lost by cause", figure))
    return figures


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


TABLE_TITLES = {
    "summary_week_over_week": "Week over week",
    "utilization_by_day": "Utilization by day",
    "network_loss_by_job": "Network loss by job",
    "network_loss_by_link": "Network loss by link",
    "network_loss_by_switch": "Network loss by switch",
    "loss_by_cause": "Loss by cause",
    "top_network_episodes": "Top network episodes, with evidence",
}

_STYLE = """
body { font-family: -apple-system, "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { margin-bottom: 0.2em; } .window { color: #666; margin-top: 0; }
.summary { background: #fff4f0; border-left: 4px solid #d62728; padding: 0.8em 1.2em; font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def _html_table(table: pd.DataFrame, limit: int | None = None) -> str:
    shown = table if limit is None else table.head(limit)
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in shown.columns)
    rows = []
    for values in shown.itertuples(index=False):
        cells = []
        for value in values:
            number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            text = "" if value is None or (number and value != value) else (
                f"{value:,.2f}" if isinstance(value, (float, np.floating)) else str(value))
            cells.append(f'<td class="number">{text}</td>' if number else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if table.empty:
        rows.append(f'<tr><td colspan="{len(table.columns)}">none</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _render_html(title: str, data: ReportData, summary: list[str], tables: dict[str, pd.DataFrame],
                 figures: list[tuple[str, str]]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='window'>{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC</p>",
             "<section id='summary' class='summary'>" + "".join(f"<p>{html.escape(line)}</p>" for line in summary)
             + "</section>"]
    images = dict(figures)
    order = [("summary_week_over_week", None), ("utilization_by_day", "Network loss and GPU busy by day"),
             ("network_loss_by_job", "Network loss by job"), ("network_loss_by_link", "Network loss by link"),
             ("network_loss_by_switch", "Network loss by switch"), ("top_network_episodes", None),
             ("loss_by_cause", "GPU time lost by cause")]
    for key, figure in order:
        parts.append(f"<section id='{key}'><h2>{TABLE_TITLES[key]}</h2>")
        if figure in images:
            parts.append(f"<img alt='{html.escape(figure)}' src='data:image/png;base64,{images[figure]}'>")
        parts.append(_html_table(tables[key], limit=None if key == "utilization_by_day" else 25))
        parts.append(f"<p><a href='{key}.csv'>{key}.csv</a></p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _pdf_table_pages(pdf, title: str, table: pd.DataFrame, rows_per_page: int = 22) -> None:
    from matplotlib import pyplot as plt

    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype == object or str(shown[column].dtype) in ("str", "string"):
            shown[column] = shown[column].astype(str).str.slice(0, 70)
    chunks = [shown.iloc[first:first + rows_per_page] for first in range(0, max(len(shown), 1), rows_per_page)]
    for number, chunk in enumerate(chunks, start=1):
        figure = plt.figure(figsize=(11.69, 8.27))
        suffix = f" ({number}/{len(chunks)})" if len(chunks) > 1 else ""
        figure.suptitle(title + suffix, x=0.05, ha="left", fontsize=14)
        axis = figure.add_axes([0.03, 0.03, 0.94, 0.85])
        axis.axis("off")
        cells = [["" if value is None or (isinstance(value, float) and value != value)
                  else f"{value:,.2f}" if isinstance(value, float) else str(value) for value in row]
                 for row in chunk.itertuples(index=False)] or [["none"] + [""] * (len(chunk.columns) - 1)]
        drawn = axis.table(cellText=cells, colLabels=list(chunk.columns), loc="upper left", cellLoc="left")
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(7)
        drawn.auto_set_column_width(list(range(len(chunk.columns))))
        pdf.savefig(figure)
        plt.close(figure)


def _render_pdf(path: Path, title: str, data: ReportData, summary: list[str], tables: dict[str, pd.DataFrame],
                figures: list[tuple[str, object]]) -> None:
    import textwrap

    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        front = plt.figure(figsize=(11.69, 8.27))
        front.text(0.05, 0.92, title, fontsize=20, weight="bold")
        front.text(0.05, 0.87, f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC", color="#666")
        wrapped = "\n\n".join(textwrap.fill(line, 120) for line in summary)
        front.text(0.05, 0.80, wrapped, fontsize=11, va="top")
        pdf.savefig(front)
        plt.close(front)
        for _, figure in figures:
            pdf.savefig(figure)
        for key, table in tables.items():
            _pdf_table_pages(pdf, TABLE_TITLES[key], table)
        info = pdf.infodict()
        info["Title"] = title
        info["CreationDate"] = datetime.now(timezone.utc)


def write_report(data: ReportData, output: Path, title: str = "strandwatch weekly report",
                 advance: Callable[[str], None] = lambda _: None) -> dict[str, Path]:
    """Write report.html, report.pdf and the tables' CSVs to ``output``; returns them by name."""
    from matplotlib import pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    tables = build_tables(data)
    summary = summary_text(data, tables)
    written: dict[str, Path] = {}
    for key, table in tables.items():
        written[key] = output / f"{key}.csv"
        table.to_csv(written[key], index=False)
    advance("tables")
    figures = _figures(tables)
    pngs = [(name, _png(figure)) for name, figure in figures]
    written["html"] = output / "report.html"
    written["html"].write_text(_render_html(title, data, summary, tables, pngs))
    advance("HTML")
    written["pdf"] = output / "report.pdf"
    _render_pdf(written["pdf"], title, data, summary, tables, figures)
    for _, figure in figures:
        plt.close(figure)
    advance("PDF")
    return written


# --- command line ------------------------------------------------------------------


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="7d", help="how far back the report reaches: 7d, 36h, 90m (default 7d)")
    parser.add_argument("--until", help="RFC 3339 end of the window (default: the newest GPU sample in the store)")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"embedded store (default {DEFAULT_STORE})")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for report.html, "
                        "report.pdf and the CSV files")
    parser.add_argument("--topology", type=Path, help="with --jobs: run the detector first where the store has "
                        "no results for the window")
    parser.add_argument("--jobs", type=Path, help="jobs file (job,host,gpus,start,end), with --topology")
    parser.add_argument("--price-per-gpu-hour", type=float, metavar="DOLLARS",
                        help="with --topology/--jobs: one price for every GPU model")
    parser.add_argument("--title", default="strandwatch weekly report", help="the report's heading")


def run_report(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        span = parse_span(args.since)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    if bool(args.topology) != bool(args.jobs):
        console.print("[red]--topology and --jobs go together[/red]")
        return 2
    try:
        store = EmbeddedStore(args.store, read_only=True)
    except (OSError, FileNotFoundError) as error:
        console.print(f"[red]{error}[/red]")
        return 1
    with store, ExitStack() as rollups:
        reader = open_reader(store, rollups)
        if args.until:
            end = pd.Timestamp(args.until)
            if end.tzinfo is None:
                console.print(f"[red]--until: {args.until!r} has no UTC offset[/red]")
                return 2
        else:
            end = reader.latest("nvidia_smi") or pd.Timestamp.now(tz="UTC")
            end = end + pd.Timedelta(seconds=1)
        start = end - span
        steps = 5 + int(np.ceil(span / pd.Timedelta(days=1))) + 1
        with Progress(TextColumn("[bold]report[/bold] {task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("reading", total=steps + 1)

            def advance(label: str) -> None:
                progress.update(task, advance=1, description=label)

            reader = _with_detection(reader, args, start, end, console, advance)
            data = load_report_data(reader, start, end, advance)
            if data.gpu_days.empty and data.losses.empty:
                console.print(f"[red]{args.store} has no nvidia_smi or stranded_compute data between "
                              f"{start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC[/red]")
                return 1
            if data.losses.empty:
                data.notes.append("The store holds no detector results for this period: run the detector, or "
                                  "pass --topology and --jobs to run it here.")
            written = write_report(data, args.output, args.title, advance)
    console.print(f"wrote {written['html']}, {written['pdf']} and {len(written) - 2} CSV files")
    return 0


class _Overlay:
    """A reader whose result measurements come from a detection run here, the rest from the store."""

    def __init__(self, base: ReportReader, frames: dict[str, pd.DataFrame]) -> None:
        self.base, self.frames = base, frames

    def read(self, measurement, start, end, fields=None):
        if measurement not in self.frames:
            return self.base.read(measurement, start, end, fields)
        frame = self.frames[measurement]
        return frame[(frame["time"] >= start) & (frame["time"] < end)]

    def read_series(self, measurement, start, end, fields):
        return self.base.read_series(measurement, start, end, fields)

    def latest(self, measurement):
        return self.base.latest(measurement)


def _with_detection(reader: StoreReader | RollupReader, args, start, end, console, advance) -> ReportReader:
    if not args.topology or not reader.read(STRANDED_COMPUTE, start, end, fields=("gpu_seconds_lost",)).empty:
        return reader
    from detector.detect import detect
    from detector.jobs import load_jobs
    from detector.pricing import Prices
    from detector.topology import Topology

    frames = {name: reader.store.read(name, start, end) for name in reader.store.measurements()}
    result = detect(frames, Topology.load(args.topology), load_jobs(args.jobs),
                    Prices(override_per_gpu_hour=args.price_per_gpu_hour))
    advance("detection")
    return _Overlay(reader, points_to_frames(result_points(result)))
