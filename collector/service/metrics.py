"""The service's own metrics, in the Prometheus text exposition format (0.0.4).

A small registry of counters, gauges and histograms with labels; no client
library needed. What a strandwatch service reports about itself (not the
fabric: that goes to the store) is :class:`ServiceMetrics`: poll duration and
success per source and target, points in and out, queue and spool depth,
detector lag and dropped messages, plus the process's resident memory so a
soak run can watch it.

Label values come from configuration and devices (target names, host names),
so they are escaped on output, and each metric holds at most
``MAX_SERIES_PER_METRIC`` label sets: a flood of new names (a misbehaving
agent inventing hosts) cannot grow the service's memory without bound.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from collector.schema import COLLECTOR_HEALTH, Point

__all__ = [
    "Counter",
    "DEFAULT_BUCKETS",
    "Gauge",
    "Histogram",
    "MAX_SERIES_PER_METRIC",
    "MetricError",
    "Registry",
    "ServiceMetrics",
]

MAX_SERIES_PER_METRIC = 10_000
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a healthy SNMP or sysfs poll takes milliseconds, a stuck one runs into its deadline."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class MetricError(ValueError):
    """A metric defined or used wrongly: bad name, wrong labels, a negative increment."""


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise MetricError(f"metric name {name!r} is not a valid Prometheus name")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise MetricError(f"metric {name}: label name {label!r} is not valid")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], object] = {}
        self.dropped_series = 0

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise MetricError(f"metric {self.name}: labels {sorted(labels)} given, {list(self.labelnames)} expected")
        return tuple(str(labels[name]) for name in self.labelnames)

    def _slot(self, labels: dict[str, object], new: Callable[[], object]) -> object | None:
        key = self._key(labels)
        slot = self._series.get(key)
        if slot is None:
            if len(self._series) >= MAX_SERIES_PER_METRIC:
                self.dropped_series += 1
                return None
            slot = self._series[key] = new()
        return slot

    def remove(self, **labels: object) -> None:
        """Forget one label set (a target removed by a reload)."""
        with self._lock:
            self._series.pop(self._key(labels), None)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}",
                 f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            lines += self._samples()
        return lines

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up: events, points, bytes."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise MetricError(f"counter {self.name}: increment {amount} is negative")
        with self._lock:
            slot = self._slot(labels, lambda: [0.0])
            if slot is not None:
                slot[0] += amount  # type: ignore[index]

    def value(self, **labels: object) -> float:
        with self._lock:
            slot = self._series.get(self._key(labels))
        return slot[0] if slot is not None else 0.0  # type: ignore[index]

    def _samples(self) -> list[str]:
        return [f"{self.name}{_label_text(self.labelnames, key)} {_format_value(slot[0])}"  # type: ignore[index]
                for key, slot in self._series.items()]


class Gauge(_Metric):
    """A value that goes up and down; or, with ``set_function``, one read when scraped (a queue's depth)."""

    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        with self._lock:
            slot = self._slot(labels, lambda: [0.0])
            if slot is not None:
                slot[0] = value  # type: ignore[index]

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        with self._lock:
            slot = self._slot(labels, lambda: [0.0])
            if slot is not None:
                slot[0] += amount  # type: ignore[index]

    def set_function(self, read: Callable[[], float], **labels: object) -> None:
        """Read the value from ``read()`` at every scrape."""
        with self._lock:
            self._series[self._key(labels)] = read

    def value(self, **labels: object) -> float:
        with self._lock:
            slot = self._series.get(self._key(labels))
        return _read(slot)

    def _samples(self) -> list[str]:
        return [f"{self.name}{_label_text(self.labelnames, key)} {_format_value(_read(slot))}"
                for key, slot in self._series.items()]


def _read(slot: object) -> float:
    if slot is None:
        return 0.0
    if callable(slot):
        try:
            return float(slot())
        except Exception:  # a scrape must not fail because one reading did
            return math.nan
    return slot[0]  # type: ignore[index]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if "le" in labelnames:
            raise MetricError(f"histogram {name}: 'le' is reserved for buckets")
        if not buckets or list(buckets) != sorted(set(buckets)):
            raise MetricError(f"histogram {name}: buckets must be increasing and distinct, got {list(buckets)}")
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(float(bound) for bound in buckets if not math.isinf(bound))

    def observe(self, value: float, **labels: object) -> None:
        with self._lock:
            slot = self._slot(labels, lambda: [[0] * (len(self.buckets) + 1), 0.0, 0])
            if slot is None:
                return
            counts, _, _ = slot  # type: ignore[misc]
            counts[bisect_left(self.buckets, value)] += 1
            slot[1] += value  # type: ignore[index]
            slot[2] += 1  # type: ignore[index]

    def count(self, **labels: object) -> int:
        with self._lock:
            slot = self._series.get(self._key(labels))
        return slot[2] if slot is not None else 0  # type: ignore[index]

    def _samples(self) -> list[str]:
        lines = []
        for key, (counts, total, count) in self._series.items():  # type: ignore[misc]
            cumulative = 0
            for bound, bucket in zip((*self.buckets, math.inf), counts):
                cumulative += bucket
                le = f'le="{_format_value(bound)}"'
                lines.append(f"{self.name}_bucket{_label_text(self.labelnames, key, le)} {cumulative}")
            labels = _label_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{labels} {_format_value(total)}")
            lines.append(f"{self.name}_count{labels} {count}")
        return lines


class Registry:
    """The metrics of one process, rendered together for ``/metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise MetricError(f"metric {metric.name} is registered twice")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        """Every metric as exposition text, ending in a newline."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(line + "\n" for metric in metrics for line in metric.render())


def _resident_bytes() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ServiceMetrics:
    """The metrics every strandwatch service exports about itself.

    Components update them directly (``metrics.points_in.inc(n, stage="bus")``)
    or, for the pollers, feed every published batch to :meth:`observe_batch`,
    which turns the sources' own ``strandwatch_source`` health points into
    poll duration and success per source and target.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.poll_duration = r.histogram(
            "strandwatch_poll_duration_seconds", "Time one source took to poll one target.", ("source", "target"))
        self.poll_up = r.gauge(
            "strandwatch_poll_up", "1 if the last poll of the target succeeded, else 0.", ("source", "target"))
        self.polls = r.counter(
            "strandwatch_polls_total", "Polls of a target by result (ok, failed, skipped).",
            ("source", "target", "result"))
        self.points_in = r.counter(
            "strandwatch_points_in_total", "Points taken in, by stage (collected, received).", ("stage",))
        self.points_out = r.counter(
            "strandwatch_points_out_total", "Points handed on, by stage (published, stored).", ("stage",))
        self.queue_depth = r.gauge("strandwatch_queue_depth", "Batches waiting in an in-memory queue.", ("queue",))
        self.spool_depth = r.gauge("strandwatch_spool_depth", "Messages waiting in the on-disk spool.", ("spool",))
        self.detector_lag = r.gauge(
            "strandwatch_detector_lag_seconds", "Wall time minus the newest sample time the detector has processed.")
        self.dropped = r.counter(
            "strandwatch_dropped_messages_total", "Messages refused or lost, by reason.", ("reason",))
        self.resident_memory = r.gauge("process_resident_memory_bytes", "Resident memory of this process.")
        self.resident_memory.set_function(_resident_bytes)
        self.start_time = r.gauge("process_start_time_seconds", "When this process started (Unix time).")
        self.start_time.set(time.time())

    def observe_batch(self, batch: Iterable[Point]) -> None:
        """Count a batch as collected and record the poll results its health points carry."""
        count = 0
        for point in batch:
            count += 1
            if point.measurement != COLLECTOR_HEALTH:
                continue
            source = point.tags.get("source", "")
            target = point.tags.get("target", source)
            fields = point.fields
            if fields.get("skipped"):
                self.polls.inc(source=source, target=target, result="skipped")
                continue
            up = 1 if fields.get("up") == 1 else 0
            self.poll_up.set(up, source=source, target=target)
            self.polls.inc(source=source, target=target, result="ok" if up else "failed")
            duration = fields.get("duration_seconds")
            if isinstance(duration, (int, float)) and not isinstance(duration, bool):
                self.poll_duration.observe(float(duration), source=source, target=target)
        self.points_in.inc(count, stage="collected")
