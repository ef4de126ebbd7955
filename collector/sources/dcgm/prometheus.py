"""The Prometheus text exposition format (version 0.0.4), parsed into samples.

What dcgm-exporter serves at ``/metrics``::

    # HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
    # TYPE DCGM_FI_DEV_GPU_UTIL gauge
    DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-...",modelName="NVIDIA H100 80GB HBM3"} 97 1767225600000

A sample is a metric name, optional labels in braces, a value and an optional
timestamp (milliseconds). Label values are quoted with ``\\\\``, ``\\"`` and ``\\n``
as their only escapes. Values are Go floats, ``NaN``, ``+Inf`` and ``-Inf``
included. ``# HELP`` and ``# TYPE`` lines describe a metric; any other line
starting with ``#`` is a comment. Parsing is strict, as Prometheus is: the
first malformed line fails the whole scrape, with an error that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["PrometheusFormatError", "Sample", "Scrape", "parse_text"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])")
_TIMESTAMP = re.compile(r"-?\d+")
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


class PrometheusFormatError(ValueError):
    """A line that is not valid exposition text; names the input, the line and the problem."""

    def __init__(self, source: str, line_number: int, reason: str, line: str) -> None:
        self.source = source
        self.line_number = line_number
        self.reason = reason
        shown = line if len(line) <= 160 else line[:157] + "..."
        super().__init__(f"{source}:{line_number}: {reason}: {shown!r}")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: name, labels, value, and the timestamp in ms if the line had one."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(slots=True)
class Scrape:
    """The samples of one exposition in order, with the TYPE and HELP of each metric that had them."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        escaped = _ESCAPES.get(match.group(1))
        if escaped is None:
            raise ValueError(f"label value has an unknown escape \\{match.group(1)}")
        return escaped

    return _ESCAPE.sub(replace, value)


def _parse_labels(text: str, start: int) -> tuple[dict[str, str], int]:
    """The labels of ``{...}`` opening at ``text[start]``, and the index after ``}``."""
    labels: dict[str, str] = {}
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t":
            position += 1
        if position < len(text) and text[position] == "}":
            return labels, position + 1
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"malformed label at column {position + 1}")
        name = match.group(1)
        if name in labels:
            raise ValueError(f"label {name!r} appears twice")
        labels[name] = _unescape(match.group(2))
        position = match.end()
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "}":
            raise ValueError(f"expected ',' or '}}' at column {position + 1}")


def _parse_value(text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"value {text!r} is not a number")
    return float(text)


def _parse_sample(line: str) -> Sample:
    match = _METRIC_NAME.match(line)
    if match is None:
        raise ValueError("a sample must start with a metric name")
    name = match.group()
    position = match.end()
    if position < len(line) and line[position] not in " \t{":
        raise ValueError(f"unexpected {line[position]!r} after the metric name")
    while position < len(line) and line[position] in " \t":
        position += 1
    labels: dict[str, str] = {}
    if position < len(line) and line[position] == "{":
        labels, position = _parse_labels(line, position)
    rest = line[position:].split()
    if not rest:
        raise ValueError("the sample has no value")
    if len(rest) > 2:
        raise ValueError("text after the timestamp")
    value = _parse_value(rest[0])
    timestamp = None
    if len(rest) == 2:
        if not _TIMESTAMP.fullmatch(rest[1]):
            raise ValueError(f"timestamp {rest[1]!r} is not an integer of milliseconds")
        timestamp = int(rest[1])
    return Sample(name, labels, value, timestamp)


def _parse_descriptor(body: str, scrape: Scrape) -> None:
    """A ``# HELP`` or ``# TYPE`` line (``body`` after the ``#``); other comments are ignored."""
    parts = body.split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return
    keyword, name = parts[0], parts[1]
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"{keyword} names an invalid metric {name!r}")
    text = parts[2].strip() if len(parts) == 3 else ""
    if keyword == "TYPE":
        if text not in _TYPES:
            raise ValueError(f"unknown metric type {text!r}")
        if name in scrape.types:
            raise ValueError(f"second TYPE line for {name}")
        scrape.types[name] = text
    else:
        scrape.helps[name] = text.replace("\\n", "\n").replace("\\\\", "\\")


def parse_text(text: str, source: str = "<scrape>") -> Scrape:
    """Every sample of an exposition; :class:`PrometheusFormatError` at the first bad line."""
    scrape = Scrape()
    for line_number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line:
            continue
        try:
            if line[0] == "#":
                _parse_descriptor(line[1:], scrape)
            else:
                scrape.samples.append(_parse_sample(line))
        except ValueError as error:
            raise PrometheusFormatError(source, line_number, str(error), raw) from None
    return scrape
