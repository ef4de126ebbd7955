"""InfluxDB line protocol: points to text and back, the way Telegraf writes it.

Line protocol is what Telegraf pipelines and InfluxDB speak, so the collector
reads existing Telegraf output and writes text either accepts::

    measurement,tag=value,tag2=value2 field=1.5,count=3i,up=true,text="a \\"b\\"" 1700000000000000000

Escaping follows InfluxDB and Telegraf: in measurements a backslash escapes
``,`` and space; in tag keys, tag values and field keys it escapes ``,``,
``=`` and space; in string fields it escapes ``"`` and ``\\``. A backslash
before any other character is literal. Integers carry ``i`` (``u`` for
unsigned), booleans are ``t``/``true``/``True``/``TRUE`` (``f`` likewise),
anything else unquoted is a float. Timestamps are nanoseconds.

Parsing tries two fast paths first: ``str.split`` for lines without quotes or
backslashes (most Telegraf output) and one regex match for other one-line
entries. Whatever they are unsure of goes to a scanner, which also reads string
fields that span lines and words the error messages. All three accept exactly
the same lines (the tests check this on generated input).

``plain_point_count`` validates without building points: one regex over the
whole text for the common case of newline-terminated, timestamped lines
without escapes. What it accepts, ``parse`` accepts with one point per line;
what it is unsure of it leaves to ``parse``. Ingest uses it to check every
message and hand the text to InfluxDB as it came.
"""

from __future__ import annotations

import gc
import math
import numbers
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Literal

from collector.schema import FieldValue, Point

__all__ = ["LineProtocolError", "ParsedPoints", "encode", "parse", "parse_file", "plain_point_count"]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

_BOOLEANS = {
    "t": True, "T": True, "true": True, "True": True, "TRUE": True,
    "f": False, "F": False, "false": False, "False": False, "FALSE": False,
}


class LineProtocolError(ValueError):
    """A line that is not valid line protocol; says which input, which line and why."""

    def __init__(self, source: str, line_number: int, reason: str, line: str) -> None:
        self.source = source
        self.line_number = line_number
        self.reason = reason
        self.line = line
        shown = line if len(line) <= 160 else line[:157] + "..."
        super().__init__(f"{source}:{line_number}: {reason}: {shown!r}")


class ParsedPoints(list[Point]):
    """The points of a parse, plus the errors of the lines skipped with ``errors="skip"``."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[LineProtocolError] = []


# --- encoding ---------------------------------------------------------------

# Line protocol cannot carry these characters in names; Telegraf writes them as
# two-character sequences, and so do we.
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}
_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL_ESCAPES})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL_ESCAPES})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


@lru_cache(maxsize=1 << 16)
def _escape_measurement(name: str) -> str:
    if not name:
        raise ValueError("empty measurement name")
    if name[0] == "#":
        raise ValueError(f"measurement {name!r} starts with '#', which reads as a comment")
    if name[-1] == "\\":
        raise ValueError(f"measurement {name!r} ends with a backslash, which line protocol cannot carry")
    return name.translate(_MEASUREMENT_ESCAPES)


@lru_cache(maxsize=1 << 16)
def _escape_key(key: str) -> str:
    if not key:
        raise ValueError("empty tag or field key")
    if key[-1] == "\\":
        raise ValueError(f"{key!r} ends with a backslash, which line protocol cannot carry")
    return key.translate(_KEY_ESCAPES)


def _encode_value(value: FieldValue) -> str | None:
    """The text of one field value; None for NaN and infinities, which InfluxDB cannot store."""
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return f"{value}i"
        if INT64_MAX < value <= UINT64_MAX:
            return f"{value}u"
        raise ValueError(f"integer {value} is outside the int64 and uint64 ranges")
    if kind is str:
        return '"' + value.translate(_STRING_ESCAPES) + '"'
    if kind is bool:
        return "true" if value else "false"
    # Subclasses and numpy scalars (numpy.float64 subclasses float but reprs differently).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return _encode_value(int(value))
    if isinstance(value, numbers.Real):
        return _encode_value(float(value))
    if isinstance(value, str):
        return _encode_value(str(value))
    raise ValueError(f"unsupported field value type {type(value).__name__}")


# Escaped names, cached: a collector writes the same series and field names at every poll.
_FIELD_PREFIXES: dict[str, str] = {}
_SERIES_HEADS: dict[tuple, str] = {}
_CACHE_LIMIT = 1 << 16


def _field_prefix(key: str) -> str:
    """``key=`` with ``key`` escaped."""
    prefix = _FIELD_PREFIXES.get(key)
    if prefix is None:
        if len(_FIELD_PREFIXES) >= _CACHE_LIMIT:
            _FIELD_PREFIXES.clear()
        prefix = _FIELD_PREFIXES[key] = _escape_key(key) + "="
    return prefix


def _series_head(measurement: str, tags: dict[str, str]) -> str:
    """Measurement and tags as line protocol: escaped, tags sorted, empty tag values left out."""
    cache_key = (measurement, *tags.items())
    head = _SERIES_HEADS.get(cache_key)
    if head is None:
        head = _escape_measurement(measurement)
        # Sorted tags are what InfluxDB indexes fastest; empty values mean "no tag".
        head += "".join(f",{_escape_key(key)}={_escape_key(tags[key])}" for key in sorted(tags) if tags[key] != "")
        if len(_SERIES_HEADS) >= _CACHE_LIMIT:
            _SERIES_HEADS.clear()
        _SERIES_HEADS[cache_key] = head
    return head


def _encode_point(point: Point) -> str:
    fields = []
    append = fields.append
    prefixes = _FIELD_PREFIXES
    for key, value in point.fields.items():
        prefix = prefixes.get(key) or _field_prefix(key)
        kind = type(value)
        # Integers and finite floats, nearly every value, without a call to _encode_value.
        if kind is int and INT64_MIN <= value <= INT64_MAX:
            append(f"{prefix}{value}i")
        elif kind is float and value - value == 0.0:
            append(prefix + float.__repr__(value))
        else:
            text = _encode_value(value)
            if text is not None:
                append(prefix + text)
    if not fields:
        return ""
    tags = point.tags
    head = _SERIES_HEADS.get((point.measurement, *tags.items())) or _series_head(point.measurement, tags)
    return f"{head} {','.join(fields)} {int(point.time_ns)}\n"


def encode(points: Iterable[Point]) -> str:
    """Line protocol for ``points``, one newline-terminated line each.

    NaN and infinite float fields are left out and points left without fields
    are skipped, as Telegraf does. Names line protocol cannot carry (empty,
    ending in a backslash, a measurement starting with ``#``) raise ValueError
    naming the point.
    """
    lines = []
    for point in points:
        try:
            lines.append(_encode_point(point))
        except ValueError as error:
            raise ValueError(f"cannot encode {point!r}: {error}") from None
    return "".join(lines)


# --- parsing ----------------------------------------------------------------

class _NotSimple(Exception):
    """Raised by a fast path for any line it does not handle; the scanner decides."""


def _decimal(text: str) -> bool:
    """Whether ``text`` is ``-?[0-9]+``; int() alone also takes "+1", "1_0", spaces and other digits."""
    if text[:1] == "-":
        text = text[1:]
    return text.isascii() and text.isdigit()


_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _convert_value(text: str) -> FieldValue:
    """An unquoted field value; ValueError saying what is wrong with it."""
    last = text[-1]
    if last == "i":
        digits = text[:-1]
        if not _decimal(digits):
            raise ValueError(f"invalid integer {text!r}")
        value = int(digits)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {text!r} out of int64 range")
        return value
    if last == "u":
        digits = text[:-1]
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"invalid unsigned integer {text!r}")
        value = int(digits)
        if value > UINT64_MAX:
            raise ValueError(f"unsigned integer {text!r} out of uint64 range")
        return value
    boolean = _BOOLEANS.get(text)
    if boolean is not None:
        return boolean
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"invalid field value {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"float {text!r} out of range")
    return value


def _timestamp(text: str) -> int:
    if not _decimal(text):
        raise ValueError(f"invalid timestamp {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"timestamp {text!r} out of int64 range")
    return value


# What the fast path accepts as a field set: the value forms of line protocol,
# with integers short enough to need no range check. All-integer field sets
# (counters, the common case) have their own pattern so they convert in bulk.
_SIMPLE_INTEGER = r"-?[0-9]{1,18}+i"
_SIMPLE_VALUE = (
    rf"(?:{_SIMPLE_INTEGER}|[0-9]{{1,19}}+u|true|True|TRUE|false|False|FALSE|[tTfF]"
    r"|-?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][-+]?[0-9]++)?)"
)
_SIMPLE_INTEGER_FIELDS = re.compile(rf"[^=,]++={_SIMPLE_INTEGER}(?:,[^=,]++={_SIMPLE_INTEGER})*+")
_SIMPLE_FIELDS = re.compile(rf"[^=,]++={_SIMPLE_VALUE}(?:,[^=,]++={_SIMPLE_VALUE})*+")


def _convert_valid(text: str) -> FieldValue:
    """A value _SIMPLE_FIELDS has already checked."""
    last = text[-1]
    if last == "i" or last == "u":
        return int(text[:-1])
    boolean = _BOOLEANS.get(text)
    if boolean is not None:
        return boolean
    value = float(text)
    if value - value != 0.0:  # too large: inf
        raise _NotSimple
    return value


def _parse_simple(
    line: str, default_time_ns: int, series_cache: dict[str, tuple[str, dict[str, str]]]
) -> Point | None:
    """Parse a line without quotes or backslashes; _NotSimple for anything unusual.

    ``series_cache`` maps the measurement-and-tags text to its parsed form: in
    Telegraf output the same series recur at every timestamp.
    """
    if not line or line[0] == "#":
        return None
    parts = line.split(" ")
    if len(parts) == 3:
        key, field_text, stamp = parts
        if not (stamp.isdigit() and stamp.isascii()) or len(stamp) > 19:
            raise _NotSimple
        time_ns = int(stamp)
        if time_ns > INT64_MAX:
            raise _NotSimple
    elif len(parts) == 2:
        key, field_text = parts
        time_ns = default_time_ns
    else:
        raise _NotSimple

    series = series_cache.get(key)
    if series is None:
        tag_parts = key.split(",")
        measurement = tag_parts[0]
        if not measurement:
            raise _NotSimple
        tags = {}
        for pair in tag_parts[1:]:
            tag_key, _, tag_value = pair.partition("=")
            if not tag_key or not tag_value or "=" in tag_value:
                raise _NotSimple
            tags[tag_key] = tag_value
        series = series_cache[key] = (measurement, tags)

    if _SIMPLE_INTEGER_FIELDS.fullmatch(field_text):
        flat = field_text[:-1].replace("i,", "=").split("=")
        fields = dict(zip(flat[0::2], map(int, flat[1::2])))
    elif _SIMPLE_FIELDS.fullmatch(field_text):
        flat = field_text.replace(",", "=").split("=")
        fields = dict(zip(flat[0::2], map(_convert_valid, flat[1::2])))
    else:
        raise _NotSimple
    return Point(series[0], dict(series[1]), fields, time_ns)


# The scanner's tokens. A backslash escapes only the characters listed for each
# kind of name; elsewhere it is literal (so "\\," is a literal backslash and an
# escaped comma, as in InfluxDB). A space right after a backslash is therefore
# always escaped, which is what lets _SERIES find where the tags end.
_SERIES = r"(?:[^\\ ]++|\\ |\\)++"
_MEASUREMENT = re.compile(r"(?:[^\\, ]++|\\[, ]|\\)++")
_NAME = r"(?:[^\\,= ]++|\\[,= ]|\\)++"
_TAG = re.compile(rf"({_NAME})=({_NAME})")
_FIELD_KEY = re.compile(_NAME)
_STRING = re.compile(r'"((?:[^"\\]++|\\.)*+)"', re.DOTALL)
_UNQUOTED = re.compile(r"[^ ,]++")
_SPACES = re.compile(r" *+")
_SERIES_TEXT = re.compile(_SERIES)
_MEASUREMENT_UNESCAPE = re.compile(r"\\([, ])")
_NAME_UNESCAPE = re.compile(r"\\([,= ])")
_STRING_UNESCAPE = re.compile(r'\\([\\"])')

# One-line entries with quotes or backslashes: the whole line in one match,
# then its fields in one findall.
_FIELD = rf'{_NAME}=(?:"(?:[^"\\]++|\\.)*+"|[^ ,"]++)'
_ESCAPED_LINE = re.compile(rf"({_SERIES}) ++({_FIELD}(?:,{_FIELD})*+)(?: ++([^ ]++))? *+")
_ESCAPED_FIELD = re.compile(rf'({_NAME})=(?:"((?:[^"\\]++|\\.)*+)"|([^ ,"]++))')


def _unescape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(r"\1", text) if "\\" in text else text


class _SyntaxError(ValueError):
    """A problem at ``offset`` in the text being scanned."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def _parse_series(text: str) -> tuple[str, dict[str, str]]:
    """Measurement and tags from the text before the fields (escaped spaces included)."""
    match = _MEASUREMENT.match(text)
    if not match:
        raise _SyntaxError(0, f"expected a measurement name, found {text[:1]!r}")
    measurement = _unescape(_MEASUREMENT_UNESCAPE, match.group())
    tags: dict[str, str] = {}
    pos = match.end()
    while pos < len(text):
        if text[pos] != ",":
            raise _SyntaxError(pos, f"unexpected {text[pos]!r} after {'tag' if tags else 'measurement'}")
        match = _TAG.match(text, pos + 1)
        if not match:
            raise _SyntaxError(pos + 1, "expected tag key=value")
        tags[_unescape(_NAME_UNESCAPE, match.group(1))] = _unescape(_NAME_UNESCAPE, match.group(2))
        pos = match.end()
    return measurement, tags


def _parse_escaped(
    line: str, default_time_ns: int, series_cache: dict[str, tuple[str, dict[str, str]]]
) -> Point | None:
    """Parse a one-line entry that has quotes or backslashes; _NotSimple when unsure."""
    if not line or line[0] == "#":
        return None
    match = _ESCAPED_LINE.fullmatch(line)
    if not match:
        raise _NotSimple
    series_text, field_text, stamp = match.groups()
    try:
        series = series_cache.get(series_text)
        if series is None:
            series = series_cache[series_text] = _parse_series(series_text)
        fields: dict[str, FieldValue] = {}
        for key, string, unquoted in _ESCAPED_FIELD.findall(field_text):
            if "\\" in key:
                key = _NAME_UNESCAPE.sub(r"\1", key)
            if unquoted:
                fields[key] = _convert_value(unquoted)
            else:
                fields[key] = _STRING_UNESCAPE.sub(r"\1", string) if "\\" in string else string
        time_ns = default_time_ns if stamp is None else _timestamp(stamp)
    except ValueError:
        raise _NotSimple from None
    return Point(series[0], dict(series[1]), fields, time_ns)


class _Scanner:
    """Parses one entry of ``text`` starting at ``start``; reports problems with their column.

    An entry is one line, unless a string field holds newlines: then it runs on
    to the line where the string closes.
    """

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.start = start
        self._set_line_end(start)

    def _set_line_end(self, position: int) -> None:
        newline = self.text.find("\n", position)
        self.end = len(self.text) if newline < 0 else newline
        # Content stops before a CR of a CRLF line ending.
        self.content_end = self.end - 1 if self.end > position and self.text[self.end - 1] == "\r" else self.end

    def fail(self, position: int, reason: str) -> ValueError:
        line_start = self.text.rfind("\n", 0, position) + 1
        return ValueError(f"column {position - line_start + 1}: {reason}")

    def parse(self, default_time_ns: int) -> Point | None:
        text = self.text
        pos = _SPACES.match(text, self.start, self.content_end).end()
        if pos == self.content_end or text[pos] == "#":
            return None

        match = _SERIES_TEXT.match(text, pos, self.content_end)
        try:
            measurement, tags = _parse_series(match.group())
        except _SyntaxError as error:
            raise self.fail(pos + error.offset, error.reason) from None
        pos = match.end()
        if pos == self.content_end:
            raise self.fail(pos, "no fields")
        pos = _SPACES.match(text, pos, self.content_end).end()

        fields: dict[str, FieldValue] = {}
        while True:
            match = _FIELD_KEY.match(text, pos, self.content_end)
            if not match:
                found = repr(text[pos]) if pos < self.content_end else "end of line"
                raise self.fail(pos, f"expected field key=value, found {found}")
            key = _unescape(_NAME_UNESCAPE, match.group())
            pos = match.end()
            if pos == self.content_end or text[pos] != "=":
                raise self.fail(pos, f"expected '=' after field key {key!r}")
            pos += 1
            if pos == self.content_end:
                raise self.fail(pos, f"missing value for field {key!r}")
            if text[pos] == '"':
                match = _STRING.match(text, pos)
                if not match:
                    raise self.fail(pos, f"unterminated string value for field {key!r}")
                fields[key] = _unescape(_STRING_UNESCAPE, match.group(1))
                pos = match.end()
                if pos > self.content_end:
                    self._set_line_end(pos)
            else:
                match = _UNQUOTED.match(text, pos, self.content_end)
                if not match:
                    raise self.fail(pos, f"missing value for field {key!r}")
                try:
                    fields[key] = _convert_value(match.group())
                except ValueError as error:
                    raise self.fail(pos, f"field {key!r}: {error}") from None
                pos = match.end()
            if pos < self.content_end and text[pos] == ",":
                pos += 1
                continue
            break

        time_ns = default_time_ns
        if pos < self.content_end:
            if text[pos] != " ":
                raise self.fail(pos, f"unexpected {text[pos]!r} after field {key!r}")
            pos = _SPACES.match(text, pos, self.content_end).end()
            if pos < self.content_end:
                match = _UNQUOTED.match(text, pos, self.content_end)
                if not match:
                    raise self.fail(pos, f"unexpected {text[pos]!r} where the timestamp belongs")
                try:
                    time_ns = _timestamp(match.group())
                except ValueError as error:
                    raise self.fail(pos, str(error)) from None
                pos = _SPACES.match(text, match.end(), self.content_end).end()
                if pos < self.content_end:
                    raise self.fail(pos, "unexpected text after the timestamp")
        return Point(measurement, tags, fields, time_ns)


# Plain lines: names without spaces, control characters, quotes, backslashes or
# '=' (so nothing needs unescaping); values whose range needs no check (at most
# 18-digit integers, floats far from overflowing: at most 200 digits and an
# exponent below +100, strings without newlines); a
# timestamp below 2**63; a newline at the end of every line.
_PLAIN_NAME = r'[^\x00-\x20,"\\=]++'
_PLAIN_VALUE = (
    r"(?:-?[0-9]{1,18}i|(?:[0-9]{1,19}|1[0-7][0-9]{18})u"
    r"|-?(?:[0-9]{1,200}(?:\.[0-9]*+)?|\.[0-9]{1,200})(?:[eE](?:-[0-9]{1,3}|\+?[0-9]{1,2}))?"
    r'|true|True|TRUE|false|False|FALSE|[tTfF]|"(?:[^"\\\n]++|\\[^\n])*+")'
)
_PLAIN_LINE = (
    rf'[^\x00-\x20,"\\=#][^\x00-\x20,"\\=]*+(?:,{_PLAIN_NAME}={_PLAIN_NAME})*+'
    rf" {_PLAIN_NAME}={_PLAIN_VALUE}(?:,{_PLAIN_NAME}={_PLAIN_VALUE})*+"
    r" (?:[0-9]{1,18}|[1-8][0-9]{18})\n"
)
_PLAIN_TEXT = re.compile(rf"(?:{_PLAIN_LINE})*+")


def plain_point_count(text: str) -> int | None:
    """How many points ``text`` holds if every line is plain and timestamped; None when unsure.

    A count means ``parse(text)`` succeeds with exactly that many points, each
    with the timestamp its line carries, and nothing in the text needs
    unescaping: it can be stored as it is. None means only ``parse`` can say
    (escapes, comments, blank lines, missing timestamps, or an error).
    """
    if _PLAIN_TEXT.fullmatch(text) is None:
        return None
    return text.count("\n")


def parse(
    text: str,
    *,
    source_name: str = "<input>",
    default_time_ns: int | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> ParsedPoints:
    """Points of line protocol ``text``, in order.

    Lines without a timestamp get ``default_time_ns`` (now, if not given).
    Blank lines and ``#`` comments are skipped. A malformed line raises
    LineProtocolError naming ``source_name``, the line number and the problem;
    with ``errors="skip"`` it is skipped instead and its error kept in the
    result's ``errors`` list.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    if default_time_ns is None:
        default_time_ns = time.time_ns()
    # Each point is a new GC-tracked object; letting the cyclic collector walk
    # the growing result over and over costs a quarter of the parse time, and
    # parsing creates no cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, source_name, default_time_ns, errors)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse(text: str, source_name: str, default_time_ns: int, errors: str) -> ParsedPoints:
    result = ParsedPoints()
    append = result.append
    series_cache: dict[str, tuple[str, dict[str, str]]] = {}
    lines = text.split("\n")
    count = len(lines)
    index = 0
    offset = 0  # where lines[index] starts in text
    while index < count:
        line = lines[index]
        simple = _parse_simple if '"' not in line and "\\" not in line else _parse_escaped
        try:
            point = simple(line[:-1] if line[-1:] == "\r" else line, default_time_ns, series_cache)
        except _NotSimple:
            pass
        else:
            if point is not None:
                append(point)
            offset += len(line) + 1
            index += 1
            continue
        scanner = _Scanner(text, offset)
        try:
            point = scanner.parse(default_time_ns)
        except ValueError as error:
            problem = LineProtocolError(source_name, index + 1, str(error), line)
            if errors == "raise":
                raise problem from None
            result.errors.append(problem)
            offset += len(line) + 1
            index += 1
            continue
        if point is not None:
            append(point)
        # A string field with newlines spans several lines.
        index += text.count("\n", offset, scanner.end) + 1
        offset = scanner.end + 1
    return result


def parse_file(
    path: str | Path,
    *,
    default_time_ns: int | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> ParsedPoints:
    """parse() the UTF-8 file at ``path``; errors name the file."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line_end = data.find(b"\n", error.start)
        line = data[line_start : None if line_end < 0 else line_end].decode("utf-8", "replace")
        raise LineProtocolError(str(path), line_number, "not valid UTF-8", line) from None
    return parse(text, source_name=str(path), default_time_ns=default_time_ns, errors=errors)
