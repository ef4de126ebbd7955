"""Raw counters to per-second rates, one series at a time, without spikes.

Devices report counters that only grow, until they do not: a Counter32 wraps at
2^32, a switch reboots (sysUpTime goes back, every counter restarts from 0), an
operator clears a NIC's counters, a poll is missed, a sample is delivered twice.
A naive ``diff()`` turns each of these into a negative or absurdly large rate,
and a detector fed such spikes reports congestion that never happened. The rules
here, applied per series (one switch port, one NIC port, one netdev):

- a decrease of a Counter32 field (IF-MIB's, and those a point lists in its
  ``counter32_fields``) that fits a wrap (the wrapped increase is below
  ``MAX_WRAP_INCREASE``) is a wrap: the increase is ``new + 2^32 - old``;
- a decrease of any other counter, a Counter32 decrease too large to be a wrap,
  sysUpTime going back (unless it wrapped itself) or ifCounterDiscontinuityTime
  changing is a reset: the interval is dropped for every counter of that sample
  and the new values are the new baseline;
- the rate is the increase over the time actually elapsed since the series' last
  sample that had the field, so a missed poll gives the mean rate over two
  intervals; an interval longer than the maximum gap is dropped;
- samples of one series at one timestamp are merged (the last non-null value of
  each field wins), so redelivered or split lines do not make zero intervals.

Everything is vectorised with numpy over the sorted frame: a million rows take
well under a second per field.
"""

from __future__ import annotations

import ctypes
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from detector.compiled import jit

COUNTER32_FIELDS = frozenset({
    "ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors",
    "ifInOctets", "ifOutOctets", "ifInUcastPkts", "ifOutUcastPkts",
})
"""IF-MIB ifTable columns that exist only as 32-bit counters."""

WRAP32 = float(2**32)
MAX_WRAP_INCREASE = float(2**31)
"""A Counter32 decrease is read as a wrap only when the wrapped increase is below
half the counter's range; a larger one is more likely a restart from 0."""

COUNTER32_LIST = "counter32_fields"
UPTIME_FIELD = "sysUpTime"
DISCONTINUITY_FIELD = "ifCounterDiscontinuityTime"
TIMETICKS_PER_SECOND = 100.0
GAP_FACTOR = 4.0
"""Without an explicit ``max_gap_s``, intervals longer than this many typical
sampling intervals (the frame's median) are dropped."""

INTERVAL = "interval_s"
TIME = "time"


class RatesError(ValueError):
    """The frame lacks what rates need; the message names the column."""


def counter_rates(
    frame: pd.DataFrame,
    *,
    series: Sequence[str],
    counters: Sequence[str],
    gauges: Sequence[str] = (),
    counter32: Collection[str] = COUNTER32_FIELDS,
    max_gap_s: float | None = None,
    source: str = "frame",
) -> pd.DataFrame:
    """Per-second rates of ``counters`` for every series of a wide frame.

    ``frame`` has a ``time`` column (datetime64, UTC), the ``series`` tag columns
    and numeric field columns; counters or gauges it lacks are skipped, so one
    call serves sources that report different subsets. The result has one row
    per sample that closes an interval (a series' first sample opens one and is
    not returned): ``time`` (the interval's end), the series tags,
    ``interval_s`` (seconds since the series' previous sample), each counter as
    a rate per second (NaN where the interval was dropped) and each gauge's
    value at ``time`` (NaN where it is not a number).
    """
    if TIME not in frame.columns:
        raise RatesError(f"{source}: no '{TIME}' column")
    missing_tags = [tag for tag in series if tag not in frame.columns]
    if missing_tags:
        raise RatesError(f"{source}: missing series tag column(s) {', '.join(missing_tags)}")
    counters = [name for name in counters if name in frame.columns]
    if COUNTER32_LIST in frame.columns:
        # The SNMP source names the columns an agent served as Counter32 (vendor tables, octet fallbacks).
        lists = factorize_runs(frame[COUNTER32_LIST].dropna())[1]
        listed = {name for text in lists for name in str(text).split(",")}
        counter32 = frozenset(counter32) | (listed - {""})
    gauges = [name for name in gauges if name in frame.columns and name not in counters]
    markers = [name for name in (UPTIME_FIELD, DISCONTINUITY_FIELD) if name in frame.columns]
    columns = [TIME, *series, *dict.fromkeys([*counters, *gauges, *markers])]
    if frame.empty:
        return pd.DataFrame(columns=[TIME, *series, INTERVAL, *counters, *gauges])

    work = frame[columns]
    codes = group_codes([work[tag] for tag in series])
    times = _time_ns(work[TIME], source)
    order = series_order(codes, times)
    if order == UNSORTED:  # store reads come sorted already
        rows = np.lexsort((times, codes))
        codes, times = codes[rows], times[rows]
        work = work.iloc[rows]
        order = series_order(codes, times)
    work = work.reset_index(drop=True)
    if order == REPEATED:
        work = work.assign(_code=codes).groupby(["_code", TIME], sort=True, dropna=False).last()
        work = work.reset_index()
        codes = work.pop("_code").to_numpy()
        times = _time_ns(work[TIME], source)
    same_series, row_dt = _series_steps(codes, times)
    if max_gap_s is None:
        typical = np.nanmedian(row_dt) if np.isfinite(row_dt).any() else np.nan
        max_gap_s = GAP_FACTOR * typical if np.isfinite(typical) else np.inf

    values = {name: _numeric(work[name], source) for name in counters}
    reset = np.zeros(len(work), dtype=bool)
    if UPTIME_FIELD in markers:
        reset |= _uptime_went_back(_numeric(work[UPTIME_FIELD], source), codes, times)
    if DISCONTINUITY_FIELD in markers:
        reset |= _changed(_numeric(work[DISCONTINUITY_FIELD], source), codes)
    kept = _ClosingRows(same_series)
    block = FloatBlock([INTERVAL, *counters, *gauges], len(kept.index))
    kept.take(row_dt, out=block[INTERVAL])
    # Most counters have a value in every row: their previous value is the row before (within the series),
    # so one pass takes their differences instead of gathers by row position. Their increases go straight
    # into the result's rows, to be divided once every reset is known, instead of all being held at full
    # length until then (the NIC rates of an 8 h window of 1,024 ports peaked at 0.85 GiB, now 0.58).
    increases, valid = {}, {}
    for name, column in values.items():
        if np.isnan(column).any():
            valid[name] = _previous_valid(column, codes)
            increases[name], went_down = _increases(column, valid[name], name in counter32)
            reset |= went_down
        else:
            _dense_increases_into(column, same_series, name in counter32, block[name], reset)
    epoch = np.cumsum(reset)

    dense_elapsed = None
    for name, column in values.items():
        if name in valid:
            span = _usable_spans(valid[name], times, epoch, max_gap_s)
            kept.take(_rate(len(column), increases.pop(name), span), out=block[name])
        else:
            if dense_elapsed is None:
                dense_elapsed = kept.take(_dense_elapsed(same_series, row_dt, epoch, max_gap_s))
            block[name] /= dense_elapsed
    for name in gauges:
        # A gauge some pipeline stored as text ("up") is not a number the detector can use.
        kept.take(pd.to_numeric(work[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan), out=block[name])
    return block.frame({TIME: utc_times(kept.take(times)), **{tag: work[tag].array.take(kept.index) for tag in series}})


IN_ORDER, REPEATED, UNSORTED = 0, 1, 2
"""How :func:`series_order` finds rows: by series, then time, each (series, time) once; so, but with a
(series, time) repeated; out of that order."""


@jit
def series_order(codes: np.ndarray, times: np.ndarray) -> int:
    """How rows of series ``codes`` at ``times`` are ordered (:data:`IN_ORDER`, :data:`REPEATED` or
    :data:`UNSORTED`), in one pass."""
    order = IN_ORDER
    for row in range(1, len(codes)):
        if codes[row] < codes[row - 1] or (codes[row] == codes[row - 1] and times[row] < times[row - 1]):
            return UNSORTED
        if codes[row] == codes[row - 1] and times[row] == times[row - 1]:
            order = REPEATED
    return order


@jit
def _series_steps(codes: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of rows in series order, whether it continues the row before's series and the seconds since
    that row (NaN where not)."""
    same_series = np.zeros(len(codes), dtype=np.bool_)
    row_dt = np.full(len(codes), np.nan)
    for row in range(1, len(codes)):
        if codes[row] == codes[row - 1]:
            same_series[row] = True
            row_dt[row] = (times[row] - times[row - 1]) / 1e9
    return same_series, row_dt


class _ClosingRows:
    """The rows that close an interval: every row of a series but its first.

    Series come as runs of rows, so where they are long the rows are copied run by run,
    a contiguous copy each: 3x faster than a gather by row numbers at millions of rows.
    """

    MIN_RUN = 64
    """Runs shorter than this on average are gathered by row numbers (a copy per run would cost more)."""

    def __init__(self, same_series: np.ndarray) -> None:
        self.index = np.flatnonzero(same_series)
        firsts = np.flatnonzero(~same_series)
        if len(same_series) < self.MIN_RUN * max(len(firsts), 1):
            self.runs = None
        else:
            ends = [*firsts[1:].tolist(), len(same_series)]
            # A series' first row at ``first``, the ``position``-th series: its kept rows land at ``first - position``.
            self.runs = [(first + 1, end, first - position)
                         for position, (first, end) in enumerate(zip(firsts.tolist(), ends))]

    def take(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``values[index]``, into ``out`` where given."""
        if self.runs is None:
            return np.take(values, self.index, out=out)
        if out is None:
            out = np.empty(len(self.index), dtype=values.dtype)
        for start, end, to in self.runs:
            out[to:to + end - start] = values[start:end]
        return out


def in_order(*keys: np.ndarray) -> bool:
    """Whether the rows are sorted by these keys (by the first, then the next among equals), in one pass."""
    if not len(keys) or len(keys[0]) < 2:
        return True
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        step = np.diff(key)
        if (tied & (step < 0)).any():
            return False
        tied &= step == 0
    return True


def utc_times(ns: np.ndarray) -> pd.DatetimeIndex:
    """Nanoseconds since the epoch as UTC times: ``pd.to_datetime(ns, utc=True)`` without its per-value parse."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")


def nanoseconds(times) -> np.ndarray:
    """Datetimes (a column, an index or an array) as integer nanoseconds since the epoch: :func:`utc_times` undone.

    Times held in nanoseconds come as a read-only view of their own memory, not a copy.
    """
    index = pd.DatetimeIndex(times)
    stamps = (index if index.unit == "ns" else index.as_unit("ns")).asi8.view()
    stamps.flags.writeable = False
    return stamps


def grid_step_ns(step_s: float) -> int:
    """The grid's interval in whole nanoseconds: every grid time is a multiple of it."""
    return int(round(step_s * 1e9))


def grid_codes(ns: np.ndarray, step_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(ns, sort=True)`` of times on a grid of ``step_ns``: each time's code and the distinct times."""
    codes, times = grid_codes_apart([ns], step_ns)
    return codes[0], times


def grid_codes_apart(arrays: Sequence[np.ndarray], step_ns: int) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`grid_codes` of the arrays' times together, as of their concatenation, each array's codes apart.

    Grid times lie whole steps apart, so a time's slot is arithmetic and the
    distinct times are the occupied slots, in order: no hash table of millions of
    entries, and no concatenation. Times off the grid, or too sparse on it, are
    factorized by pandas (NaT's code: -1).
    """
    arrays = [np.asarray(ns, dtype=np.int64) for ns in arrays]
    total = sum(len(ns) for ns in arrays)
    low = min((ns.min() for ns in arrays if len(ns)), default=None)
    if low is not None and step_ns > 0 and low != np.iinfo(np.int64).min:  # NaT: pandas' code -1
        occupied = np.zeros(2 * total, dtype=bool)
        codes = [np.empty(len(ns), dtype=np.int64) for ns in arrays]
        spans = [_grid_slots(ns, low, step_ns, slots, occupied) for ns, slots in zip(arrays, codes)]
        if min(spans) >= 0:
            occupied = occupied[:max(spans)]
            present = np.flatnonzero(occupied)
            if len(present) < len(occupied):
                rank = np.cumsum(occupied) - 1
                codes = [rank[slots] for slots in codes]
            return codes, low + step_ns * present
    bounds = np.cumsum([0, *(len(ns) for ns in arrays)])
    all_codes, uniques = pd.factorize(np.concatenate(arrays).view("datetime64[ns]"), sort=True)
    codes = [all_codes[first:last] for first, last in zip(bounds[:-1], bounds[1:])]
    return codes, np.asarray(uniques, dtype="datetime64[ns]").view(np.int64)


@jit
def _grid_slots(ns: np.ndarray, low: int, step_ns: int, slots: np.ndarray, occupied: np.ndarray) -> int:
    """Into ``slots`` each time's slot (whole steps since ``low``), marked in ``occupied``, in one pass.

    Returns the highest slot + 1, or -1 where a time is off the grid or beyond ``occupied``.
    """
    span = 0
    offset, slot = -step_ns, -1  # the slot before the first
    for row in range(len(ns)):
        previous, offset = offset, ns[row] - low
        if offset == previous + step_ns:  # a series' next poll: no division
            slot += 1
        else:
            slot = offset // step_ns
            if slot * step_ns != offset:
                return -1
        if slot >= len(occupied):
            return -1
        slots[row] = slot
        occupied[slot] = True
        span = max(span, slot + 1)
    return span


def key_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(keys, sort=True)`` of integer keys, negative ones missing (code -1): codes and the keys present.

    Keys that span no more than a few times their count are marked on a table, so
    there is no hash table of millions of entries; sparser ones are sorted.
    """
    valid = keys >= 0
    if not valid.any():
        return np.full(len(keys), -1, dtype=np.int64), np.empty(0, dtype=np.int64)
    span = int(keys.max()) + 1
    if span > 4 * len(keys):
        present, inverse = np.unique(keys[valid], return_inverse=True)
        codes = np.full(len(keys), -1, dtype=np.int64)
        codes[valid] = inverse
        return codes, present.astype(np.int64)
    marked = np.zeros(span, dtype=bool)
    marked[keys[valid]] = True
    present = np.flatnonzero(marked)
    if len(present) == span and valid.all():
        return keys, present  # every key from 0 up is there: each key is its own code
    rank = np.cumsum(marked) - 1
    return np.where(valid, rank[np.where(valid, keys, 0)], -1), present


def _time_ns(column: pd.Series, source: str) -> np.ndarray:
    try:
        stamps = pd.to_datetime(column, utc=True)
    except (TypeError, ValueError) as error:
        raise RatesError(f"{source}: column '{TIME}' is not a time: {error}") from error
    return nanoseconds(stamps)


def factorize_runs(
    values: pd.Series | np.ndarray, sort: bool = False, use_na_sentinel: bool = True,
) -> tuple[np.ndarray, pd.Index | np.ndarray]:
    """``pd.factorize`` of values that come in runs of equal ones, as a store read's tags do.

    Only the first value of each run is hashed: a million rows of a few thousand series
    hash a few thousand strings instead of a million. Codes and uniques are ``pd.factorize``'s
    (first appearance order, or sorted; NaN a value of its own without ``use_na_sentinel``).
    """
    codes, uniques = factorize_runs_apart([values], sort, use_na_sentinel)
    return codes[0], uniques


def factorize_runs_apart(
    columns: Sequence[pd.Series | np.ndarray], sort: bool = False, use_na_sentinel: bool = True,
) -> tuple[list[np.ndarray], pd.Index | np.ndarray]:
    """:func:`factorize_runs` of the columns' values together, as of their concatenation, each column's
    codes apart (no concatenation of millions of rows)."""
    runs = [value_runs(values) for values in columns]
    heads = [heads for _, heads in runs]
    all_heads = pd.concat(heads, ignore_index=True) if isinstance(heads[0], pd.Series) else np.concatenate(heads)
    head_codes, uniques = pd.factorize(all_heads, sort=sort, use_na_sentinel=use_na_sentinel)
    bounds = np.cumsum([0, *(len(starts) for starts, _ in runs)])
    codes = [np.repeat(head_codes[first:last], np.diff(np.append(starts, len(values))))
             for (starts, _), first, last, values in zip(runs, bounds[:-1], bounds[1:], columns)]
    return codes, uniques


def value_runs(values: pd.Series | np.ndarray) -> tuple[np.ndarray, pd.Series | np.ndarray]:
    """Where each run of equal values starts, and its value (every row a run of its own where values do not
    compare to a bool, as pd.NA does)."""
    changes = _changes([values])
    starts = np.flatnonzero(np.concatenate(([True], changes))) if changes is not None else np.arange(len(values))
    return starts, values.iloc[starts] if isinstance(values, pd.Series) else values[starts]


def all_distinct(codes: np.ndarray, size: int) -> bool:
    """Whether no code (0 .. size - 1) repeats: a mark per code on a table of ``size``, no hash table."""
    seen = np.zeros(size, dtype=bool)
    seen[codes] = True
    return np.count_nonzero(seen) == len(codes)


def sorted_positions(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's position in the sorted, distinct ``axis``, -1 where it is not there."""
    if len(axis) == 0:
        return np.full(len(values), -1)
    at = np.minimum(np.searchsorted(axis, values), len(axis) - 1)
    return np.where(axis[at] == values, at, -1)


def distinct_rows(frame: pd.DataFrame, columns: Sequence[str] | None = None, keep: str = "first") -> pd.DataFrame:
    """``frame.drop_duplicates(columns, keep=keep)``, hashing only the rows where a run of equal values starts (ends).

    The first (last) occurrence of a value is always where a run of it starts (ends),
    so the same rows come out; a store read's millions of rows have a few thousand runs.
    """
    columns = list(frame.columns) if columns is None else list(columns)
    changes = _changes([frame[column] for column in columns])
    if changes is None:
        return frame.drop_duplicates(columns, keep=keep)
    edges = np.concatenate(([True], changes)) if keep == "first" else np.concatenate((changes, [True]))
    return frame.iloc[np.flatnonzero(edges)].drop_duplicates(columns, keep=keep)


def _changes(columns: Sequence[pd.Series | np.ndarray]) -> np.ndarray | None:
    """Per row after the first, whether any column's value differs from the row before.

    None for fewer than two rows, or for values whose equality is not a bool (pd.NA).
    """
    if not columns or len(columns[0]) < 2:
        return None
    changes = np.zeros(len(columns[0]) - 1, dtype=bool)
    for column in columns:
        array = column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column)
        try:
            changes |= array[1:] != array[:-1] if array.dtype.kind in "biufcmM" else _object_changes(array)
        except TypeError:
            return None
    return changes


def _object_changes(values: np.ndarray) -> np.ndarray:
    """``values[1:] != values[:-1]`` for Python objects, comparing only those that are not the same object.

    A store read's tag column holds one string object row after row (readers intern tag
    values or repeat one per series), so comparing addresses first leaves a few thousand
    string comparisons instead of millions. A missing value counts as equal to itself, as
    it does in ``pd.factorize``.
    """
    values = np.ascontiguousarray(values, dtype=object)
    addresses = np.ctypeslib.as_array((ctypes.c_size_t * len(values)).from_address(values.ctypes.data))
    changes = addresses[1:] != addresses[:-1]
    differ = np.flatnonzero(changes)
    changes[differ] = values[differ + 1] != values[differ]
    return changes


def _group_key(columns: Sequence[pd.Series]) -> tuple[np.ndarray, np.ndarray, list]:
    """Per row its key's number (first appearance order), the distinct keys as combined codes, and per
    column its distinct values (a combined code is ``((c0 * n1) + c1) * n2 + c2 ...`` of the columns'
    ``pd.factorize`` codes).

    Only the rows where any column's value changes are hashed and combined: a store read's
    millions of rows have a few thousand such runs.
    """
    rows = len(columns[0]) if columns else 0
    changes = _changes(columns)
    starts = np.flatnonzero(np.concatenate(([True], changes))) if changes is not None else np.arange(rows)
    key = np.zeros(len(starts), dtype=np.int64)
    uniques_per_column = []
    for column in columns:
        heads = column.iloc[starts] if isinstance(column, pd.Series) else np.asarray(column)[starts]
        codes, uniques = pd.factorize(heads, use_na_sentinel=False)
        key = key * len(uniques) + codes
        uniques_per_column.append(uniques)
    head_codes, distinct = pd.factorize(key)
    return np.repeat(head_codes, np.diff(np.append(starts, rows))), distinct, uniques_per_column


def group_codes(columns: Sequence[pd.Series]) -> np.ndarray:
    """Per row, its group's number: ``groupby(columns, sort=False, dropna=False).ngroup()``, without hashing every row."""
    return _group_key(columns)[0]


def _numeric(column: pd.Series, source: str) -> np.ndarray:
    if column.dtype == np.float64:
        return column.to_numpy()
    converted = pd.to_numeric(column, errors="coerce")
    if converted.isna().all() and column.notna().any():
        raise RatesError(f"{source}: field '{column.name}' holds no numbers")
    return converted.to_numpy(dtype=float, na_value=np.nan)


def _previous_valid(column: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of non-null values and, for each, the position of the series' previous non-null value (-1)."""
    positions = np.flatnonzero(~np.isnan(column))
    previous = np.full(len(positions), -1)
    if len(positions) > 1:
        continues = codes[positions[1:]] == codes[positions[:-1]]
        previous[1:] = np.where(continues, positions[:-1], -1)
    return positions, previous


def _increases(
    column: np.ndarray, valid: tuple[np.ndarray, np.ndarray], is_counter32: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Increase since the series' previous value (NaN where none) and rows where the counter restarted."""
    increase = np.full(len(column), np.nan)
    went_down = np.zeros(len(column), dtype=bool)
    positions, previous = valid
    has_previous = previous >= 0
    here, before = positions[has_previous], previous[has_previous]
    delta = column[here] - column[before]
    if is_counter32:
        wrapped = delta + WRAP32
        is_wrap = (delta < 0) & (column[before] < WRAP32) & (wrapped < MAX_WRAP_INCREASE)
        delta = np.where(is_wrap, wrapped, delta)
    restarted = delta < 0
    went_down[here[restarted]] = True
    increase[here] = np.where(restarted, np.nan, delta)
    return increase, went_down


@jit
def _dense_increases_into(
    column: np.ndarray, same_series: np.ndarray, is_counter32: bool, out: np.ndarray, reset: np.ndarray,
) -> None:
    """:func:`_increases` of a column with a value in every row: the same numbers from the row before.

    The increases of the rows that close an interval go into ``out`` in row order (NaN
    where the counter went down), and those rows are marked in ``reset``: one pass per
    column instead of a difference, masks and a copy into the result (4x faster at millions of rows).
    """
    kept = 0
    for row in range(1, len(column)):
        if not same_series[row]:
            continue
        before = column[row - 1]
        delta = column[row] - before
        if is_counter32 and delta < 0 and before < WRAP32 and delta + WRAP32 < MAX_WRAP_INCREASE:
            delta = delta + WRAP32
        if delta < 0:
            reset[row] = True
            out[kept] = np.nan
        else:
            out[kept] = delta
        kept += 1


def _dense_elapsed(same_series: np.ndarray, row_dt: np.ndarray, epoch: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Per row, the seconds a dense counter's increase there spans (:func:`_usable_spans`), NaN where it makes no rate.

    Dividing an increase by it gives the rate, and NaN where the interval is dropped, in one pass per counter.
    """
    same_epoch = np.zeros(len(epoch), dtype=bool)
    same_epoch[1:] = epoch[1:] == epoch[:-1]
    usable = same_series & same_epoch & (row_dt > 0) & (row_dt <= max_gap_s)
    return np.where(usable, row_dt, np.nan)


def _uptime_went_back(uptime: np.ndarray, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """sysUpTime decreased, unless the 32-bit TimeTicks value itself wrapped."""
    went_back = np.zeros(len(uptime), dtype=bool)
    if np.isnan(uptime).any():
        positions, previous = _previous_valid(uptime, codes)
        has_previous = previous >= 0
        here, before = positions[has_previous], previous[has_previous]
        fell = uptime[here] < uptime[before]
        here, before = here[fell], before[fell]
    else:  # a value in every row: the previous one is the row before, within the series
        before = np.flatnonzero((uptime[1:] < uptime[:-1]) & (codes[1:] == codes[:-1]))
        here = before + 1
    delta = uptime[here] - uptime[before]
    elapsed_ticks = (times[here] - times[before]) / 1e9 * TIMETICKS_PER_SECOND
    tick_wrap = np.abs(delta + WRAP32 - elapsed_ticks) <= 0.5 * elapsed_ticks + TIMETICKS_PER_SECOND
    went_back[here[~tick_wrap]] = True
    return went_back


def _changed(marker: np.ndarray, codes: np.ndarray) -> np.ndarray:
    changed = np.zeros(len(marker), dtype=bool)
    positions, previous = _previous_valid(marker, codes)
    has_previous = previous >= 0
    here, before = positions[has_previous], previous[has_previous]
    changed[here[marker[here] != marker[before]]] = True
    return changed


def _usable_spans(
    valid: tuple[np.ndarray, np.ndarray], times: np.ndarray, epoch: np.ndarray, max_gap_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose increase since the previous value makes a rate, and the seconds between the two."""
    positions, previous = valid
    has_previous = previous >= 0
    here, before = positions[has_previous], previous[has_previous]
    elapsed = (times[here] - times[before]) / 1e9
    usable = (epoch[here] == epoch[before]) & (elapsed > 0) & (elapsed <= max_gap_s)
    return here[usable], elapsed[usable]


def _rate(rows: int, increase: np.ndarray, span: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rate = np.full(rows, np.nan)
    here, elapsed = span
    rate[here] = increase[here] / elapsed
    return rate


class DistinctKeys:
    """The distinct keys of a frame's rows (one value per column) and each row's key.

    Frames at scale hold millions of rows of a few thousand series: :meth:`map` calls
    its lookup once per distinct key instead of once per row.
    """

    def __init__(self, columns: Sequence[pd.Series]) -> None:
        self.inverse, distinct, uniques_per_column = _group_key(columns)
        self.keys: list[tuple] = []
        for combined in distinct.tolist():
            parts = []
            for uniques in reversed(uniques_per_column):
                combined, code = divmod(combined, len(uniques))
                parts.append(uniques[code])
            self.keys.append(tuple(reversed(parts)))

    def map(self, lookup) -> pd.api.extensions.ExtensionArray:
        """``lookup(*key)`` per row, typed as pandas types a column of these values (str where they are text)."""
        return self.per_row([lookup(*key) for key in self.keys])

    def per_row(self, values: Sequence) -> pd.api.extensions.ExtensionArray:
        """A value per distinct key (in the order of ``keys``) for every row, typed as :meth:`map` types it."""
        column = np.empty(len(self.keys), dtype=object)
        for position, value in enumerate(values):
            column[position] = value  # one by one: a tuple value must not be spread over positions
        return pd.Series(column).array.take(self.inverse)


def map_keys(columns: Sequence[pd.Series], lookup) -> pd.api.extensions.ExtensionArray:
    """``lookup(*key)`` for every row's key (one value per column), computed once per distinct key."""
    if not columns or not len(columns[0]):
        return pd.Series([], dtype=object).array
    return DistinctKeys(columns).map(lookup)


def map_series(series: pd.Series, mapping: dict) -> tuple[pd.Series, np.ndarray]:
    """``series.map(mapping)`` looked up once per distinct value (the same result, with its dtype), and its
    ``notna()`` per row, also from the distinct values: a scan of millions of strings holds the GIL."""
    codes, uniques = factorize_runs(series, use_na_sentinel=False)
    mapped = pd.Series(uniques, dtype=series.dtype).map(mapping)
    return (pd.Series(mapped.array.take(codes), index=series.index, name=series.name),
            mapped.notna().to_numpy()[codes])


def row_sums(frame: pd.DataFrame, names: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
    """Per row, the sum of these columns where any has a value there (NaN where none has, or no names).

    The numbers of ``frame[names].sum(axis=1, min_count=1)`` to the last bit (a sum starts
    from +0.0 and adds the columns in order), in one pass, without copying the columns into
    a block. Written into ``out`` where given.
    """
    total = np.empty(len(frame)) if out is None else out
    if len(total) != len(frame):
        raise ValueError(f"row_sums: out has {len(total)} rows, the frame {len(frame)}")
    if not names:
        total[:] = np.nan
        return total
    _row_sums(tuple(np.ascontiguousarray(frame[name].to_numpy(dtype=float)) for name in names), total)
    return total


@jit
def _row_sums(columns: tuple, out: np.ndarray) -> None:
    for row in range(len(out)):
        total = 0.0
        seen = False
        for values in columns:
            value = values[row]
            if value == value:
                total += value
                seen = True
        out[row] = total if seen else np.nan


class FloatBlock:
    """Float columns computed in place into one block, then joined to time and tag columns as a frame.

    At millions of rows each temporary array is memory the kernel must map and zero:
    writing a column straight into its row of the block spares the temporary and its
    copy, and the frame is built around the block without copying it.
    """

    def __init__(self, names: Sequence[str], rows: int) -> None:
        self.names = list(names)
        self.values = np.empty((len(self.names), rows))

    def __getitem__(self, name: str) -> np.ndarray:
        """The row of column ``name``, to write into."""
        return self.values[self.names.index(name)]

    def __setitem__(self, name: str, values: np.ndarray | float) -> None:
        self.values[self.names.index(name)] = values

    def frame(self, leading: Mapping[str, object], trailing: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
        """The ``leading`` columns (time, tags), then a float column per row of the block, then the ``trailing``
        columns (columns of another frame with the same rows, taken as they are); nothing is copied.

        A frame built from a dict of columns copies them all into one block, and ``insert``
        copies what it inserts: at millions of rows those copies cost as much as the rates.
        """
        first = pd.DataFrame({name: values.array if isinstance(values, pd.Series) else values
                              for name, values in leading.items()}, copy=False)
        parts = [first, pd.DataFrame(self.values.T, columns=self.names, copy=False)]
        parts.extend(column.rename(name) for name, column in (trailing or {}).items())
        return pd.concat(parts, axis=1)
