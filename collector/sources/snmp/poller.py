"""The SNMP source: polls switches' IF-MIB counters, and vendor congestion counters, into points.

Per target and poll, one multi-column GETBULK walk reads ifOperStatus, the
ifXTable Counter64 octet and unicast packet counters, the ifTable Counter32
discard and error counters, ifCounterDiscontinuityTime and sysUpTime.0.
ifName, ifAlias and ifHighSpeed rarely change, so they join the walk only on
the first poll, every ``static_refresh_polls`` polls after, and at once when
an unknown ifIndex shows up or sysUpTime goes backwards (a restarted agent may
renumber its interfaces). Interfaces without ifHCInOctets/ifHCOutOctets get
the Counter32 ifInOctets/ifOutOctets instead; agents without ifName get
ifDescr as the interface name. Both fallbacks are learned on the first poll
that needs them and kept for that target.

The tables of the device's vendor profiles (chosen by sysObjectID, read on
refresh polls; see :mod:`vendor_profiles`) are walked after IF-MIB, one walk
per table. A table or column the agent lacks is skipped until the next
refresh, so it costs nothing on the polls in between.

Every point names the fields its agent served as Counter32 in
``counter32_fields`` (comma-separated), leaving out ifIn/OutDiscards and
ifIn/OutErrors, which are Counter32 on every device: a reader computing rates
wraps those at 2^32 and everything else at 2^64.

Targets are polled concurrently (at most ``concurrency`` at once), each under
its own deadline. A target that does not answer, answers too slowly or
answers garbage costs only its own deadline: it yields a ``strandwatch_source``
point with ``up=0`` and a logged warning; collect() never raises for it. After
a failure the target is left out of polls for ``backoff_initial`` seconds,
doubling per further failure up to ``backoff_max``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from collector.schema import INTERFACE, FieldValue, Point, health_point
from collector.sources.snmp import ber, ifmib
from collector.sources.snmp.config import SnmpConfig, SnmpTarget
from collector.sources.snmp.session import Session, SnmpClient, pysnmp_auth
from collector.sources.snmp.vendor_profiles import ProfileTable, VendorProfile, load_profiles, select_profiles
from collector.sources.snmp.walk import Index, WalkResult, walk_columns

log = logging.getLogger(__name__)

BACKOFF_TOLERANCE = 0.05
"""A backed-off target is retried when at most this share of its delay is left: polls come at a
steady interval with some jitter, and a retry due in a millisecond should not wait a whole interval."""


def _static_values(column: str, values: dict[Index, ber.Value]) -> dict[Index, FieldValue]:
    """A static column's values as fields: strings for the text columns, ints for the rest (others dropped)."""
    if column in ifmib.STRING_COLUMNS:
        return {index: value.decode("utf-8", "replace") for index, value in values.items() if isinstance(value, bytes)}
    return {index: value for index, value in values.items() if isinstance(value, int)}


@dataclass
class _TargetState:
    """What the source remembers about one target between polls."""

    target: SnmpTarget
    session: Session | None = None
    static: dict[str, dict[Index, FieldValue]] | None = None
    known_indexes: frozenset[Index] = frozenset()
    polls_since_static: int = 0
    last_uptime: int | None = None
    octet_fallback: bool = False
    discontinuity_absent: bool = False
    sys_object_id: tuple[int, ...] | None = None
    tables: tuple[ProfileTable, ...] = ()
    table_rows: dict[str, int] = field(default_factory=dict)
    absent_tables: set[str] = field(default_factory=set)
    consecutive_failures: int = 0
    retry_at: float = 0.0
    retry_delay: float = 0.0
    last_attempt: float | None = None


class SnmpSource:
    """Polls interface counters from SNMP agents; the ``snmp`` source.

    ``use_pysnmp_for_v2c`` and ``use_pysnmp_for_v3`` send those through
    pysnmp instead of the built-in codec and USM: much slower (about 60 µs
    per varbind instead of 1), for comparisons or to step around a problem.
    SNMPv3 with DES, 3DES or AES keys that need extension always uses pysnmp.
    """

    name = "snmp"

    def __init__(
        self, config: SnmpConfig, *, use_pysnmp_for_v2c: bool = False, use_pysnmp_for_v3: bool = False
    ) -> None:
        self.config = config
        for target in config.targets:
            pysnmp_auth(target)  # refuses SNMPv3 privacy without 'cryptography' now, not at the first poll
        self.profiles: dict[str, VendorProfile] = load_profiles(config.profile_dirs)
        self._client = SnmpClient(use_pysnmp_for_v2c=use_pysnmp_for_v2c, use_pysnmp_for_v3=use_pysnmp_for_v3)
        self._states = [_TargetState(target) for target in config.targets]
        self._slots = asyncio.Semaphore(config.concurrency)

    @classmethod
    def from_targets(cls, targets: list[SnmpTarget], **options: object) -> SnmpSource:
        """Shortcut for ``SnmpSource(SnmpConfig(tuple(targets), **options))``."""
        return cls(SnmpConfig(tuple(targets), **options))  # type: ignore[arg-type]

    async def collect(self, time_ns: int) -> list[Point]:
        """Poll every target that is due; its points plus one health point per target polled or skipped.

        A target with its own ``interval`` is left out (no points at all) until that interval has
        passed; one in backoff after failures gets only a health point with ``skipped=1``.
        """
        now = time.monotonic()
        due = [state for state in self._states if self._due(state, now)]
        batches = await asyncio.gather(*(self._poll_guarded(state, time_ns, now) for state in due))
        return [point for batch in batches for point in batch]

    async def close(self) -> None:
        """Close the sockets; a later collect() opens fresh ones."""
        await self._client.close()
        for state in self._states:
            state.session = None

    def _due(self, state: _TargetState, now: float) -> bool:
        interval = state.target.interval
        if interval is None or state.last_attempt is None:
            return True
        return now - state.last_attempt >= interval - self.config.interval / 2

    async def _poll_guarded(self, state: _TargetState, time_ns: int, now: float) -> list[Point]:
        target = state.target
        if now < state.retry_at - BACKOFF_TOLERANCE * state.retry_delay:
            log.debug("snmp target %s: in backoff for %.1f s more", target.name, state.retry_at - now)
            return [self._health(state, time_ns, 0, 0.0, 0, skipped=True)]
        async with self._slots:
            started = time.perf_counter()
            state.last_attempt = time.monotonic()
            problem = None
            try:
                async with asyncio.timeout(target.deadline):
                    points = await self._poll(state, time_ns)
            except TimeoutError:
                problem = f"no complete answer within its {target.deadline:.1f} s deadline"
            except Exception as exc:  # one broken agent must not stop the others
                problem = f"{type(exc).__name__}: {exc}"
            duration = time.perf_counter() - started
        if problem is None:
            if state.consecutive_failures:
                log.info("snmp target %s: answering again after %d failed polls", target.name,
                         state.consecutive_failures)
            state.consecutive_failures, state.retry_at, state.retry_delay = 0, 0.0, 0.0
            return [*points, self._health(state, time_ns, 1, duration, len(points))]
        state.consecutive_failures += 1
        state.retry_delay = min(
            self.config.backoff_initial * 2 ** (state.consecutive_failures - 1), self.config.backoff_max
        )
        state.retry_at = state.last_attempt + state.retry_delay
        state.session = None  # resolve the host again next time
        log.warning(
            "snmp target %s (%s:%d): %s (failure %d in a row); next try in %.0f s",
            target.name, target.host, target.port, problem, state.consecutive_failures, state.retry_delay,
        )
        return [self._health(state, time_ns, 0, duration, 0)]

    def _health(
        self, state: _TargetState, time_ns: int, up: int, duration: float, points: int, *, skipped: bool = False
    ) -> Point:
        failure: dict[str, FieldValue] = {} if up else {
            "consecutive_failures": state.consecutive_failures,
            "retry_in_seconds": max(0.0, state.retry_at - time.monotonic()),
            "skipped": int(skipped),
        }
        return health_point(self.name, state.target.name, time_ns, up=bool(up), duration_s=duration, points=points,
                            **failure)

    async def _poll(self, state: _TargetState, time_ns: int) -> list[Point]:
        target = state.target
        if state.session is None:
            state.session = await self._client.session(target)
        session = state.session
        requests, varbinds = session.requests, session.varbinds
        refresh = state.static is None or state.polls_since_static >= self.config.static_refresh_polls
        wanted = list(ifmib.DYNAMIC_COLUMNS)
        if state.octet_fallback:
            wanted += ifmib.OCTET_FALLBACK.values()
        if refresh or not state.discontinuity_absent:
            wanted.append(ifmib.DISCONTINUITY)
        if refresh:
            wanted += _STATIC_WALK
        scalars = {"sysUpTime": ifmib.SYS_UPTIME}
        if refresh:
            scalars["sysObjectID"] = ifmib.SYS_OBJECT_ID
        expected_rows = len(state.known_indexes) if state.static is not None else None
        result = await walk_columns(session, _oids(wanted), target.max_repetitions, scalars, expected_rows)
        uptime = result.scalars.get("sysUpTime")
        uptime = uptime if isinstance(uptime, int) else None
        rows = _rows(result)

        follow_up: list[str] = []
        if not state.octet_fallback and any(
            index not in result.columns[hc] for hc in ifmib.OCTET_FALLBACK for index in rows
        ):
            state.octet_fallback = True
            follow_up += ifmib.OCTET_FALLBACK.values()
        restarted = uptime is not None and state.last_uptime is not None and uptime < state.last_uptime
        if not refresh and (restarted or not state.known_indexes.issuperset(rows)):
            refresh = True
            follow_up += _STATIC_WALK
        if follow_up:
            extra = await walk_columns(session, _oids(follow_up), target.max_repetitions, expected_rows=len(rows))
            result.columns.update(extra.columns)
            result.types.update(extra.types)
            rows = _rows(result)
        if ifmib.DISCONTINUITY in wanted:
            state.discontinuity_absent = not result.columns[ifmib.DISCONTINUITY]

        if refresh:
            state.static = {column: _static_values(column, result.columns[column]) for column in _STATIC_WALK}
            state.known_indexes = frozenset(rows)
            state.polls_since_static = 1
            sys_object_id = result.scalars.get("sysObjectID")
            if isinstance(sys_object_id, tuple) and sys_object_id != state.sys_object_id:
                state.sys_object_id = sys_object_id
                chosen = select_profiles(self.profiles, sys_object_id)
                state.tables = tuple(table for profile in chosen for table in profile.tables)
                log.debug("snmp target %s: sysObjectID %s, profiles %s", target.name,
                          ".".join(map(str, sys_object_id)), [profile.name for profile in chosen])
            elif state.sys_object_id is None and not state.tables:
                state.tables = tuple(t for p in select_profiles(self.profiles, None) for t in p.tables)
            state.absent_tables.clear()
        else:
            state.polls_since_static += 1
        state.last_uptime = uptime

        points = _interface_points(state, result, rows, uptime, time_ns)
        if state.tables:
            points += await self._profile_points(state, session, points, uptime, time_ns)
        log.debug("snmp target %s: %d requests, %d varbinds", target.name, session.requests - requests,
                  session.varbinds - varbinds)
        return points

    async def _profile_points(
        self, state: _TargetState, session: Session, interfaces: list[Point], uptime: int | None, time_ns: int
    ) -> list[Point]:
        """Walk the profile tables; add their fields to ``interfaces`` and return their own points."""
        extra = _ExtraFields(interfaces)
        for table in state.tables:
            if table.name in state.absent_tables:
                continue
            walked = await walk_columns(
                session, table.column_oids, state.target.max_repetitions, expected_rows=state.table_rows.get(table.name)
            )
            row_count = max(map(len, walked.columns.values()))
            if not row_count:
                state.absent_tables.add(table.name)
                continue
            state.table_rows[table.name] = row_count
            extra.add_table(state.target, table, walked, uptime, time_ns)
        return extra.finish()


_STATIC_WALK = (*ifmib.STATIC_COLUMNS, ifmib.NAME_FALLBACK)
"""Walked together: ifDescr costs one column on refresh polls and names interfaces of agents without ifName."""

_PER_POLL = (*ifmib.DYNAMIC_COLUMNS, ifmib.DISCONTINUITY)


def _oids(columns: list[str] | tuple[str, ...]) -> dict[str, ifmib.Oid]:
    return {column: ifmib.COLUMNS[column] for column in columns}


def _rows(result: WalkResult) -> list[Index]:
    """Every ifIndex (as a one-arc index) that any per-poll column has, in order."""
    indexes: set[Index] = set()
    for column in (*ifmib.DYNAMIC_COLUMNS, *ifmib.OCTET_FALLBACK.values()):
        indexes.update(index for index in result.columns.get(column, ()) if len(index) == 1)
    return sorted(indexes)


def _interface_points(
    state: _TargetState, result: WalkResult, rows: list[Index], uptime: int | None, time_ns: int
) -> list[Point]:
    """One ``interface`` point per ifIndex: cached static columns plus this poll's values."""
    target = state.target
    static = state.static
    assert static is not None
    per_poll = [(column, result.columns[column]) for column in _PER_POLL if column in result.columns]
    fallback = [(hc, column, result.columns.get(column, {})) for hc, column in ifmib.OCTET_FALLBACK.items()]
    counter32 = {
        column
        for column, tag in result.types.items()
        if tag == ber.COUNTER32 and column not in ifmib.ALWAYS_COUNTER32
    }
    points = []
    for index in rows:
        name = static["ifName"].get(index) or static[ifmib.NAME_FALLBACK].get(index) or str(index[0])
        fields: dict[str, FieldValue] = {}
        for column in ("ifAlias", "ifHighSpeed"):
            if index in static[column]:
                fields[column] = static[column][index]
        for column, values in per_poll:
            value = values.get(index)
            if isinstance(value, int):
                fields[column] = value
        for hc, column, values in fallback:
            value = values.get(index)
            if hc not in fields and isinstance(value, int):
                fields[column] = value
        if uptime is not None:
            fields["sysUpTime"] = uptime
        wrapping = sorted(counter32.intersection(fields))
        if wrapping:
            fields["counter32_fields"] = ",".join(wrapping)
        tags = {**target.tags, "agent_host": target.name, "ifName": str(name), "ifIndex": str(index[0])}
        points.append(Point(INTERFACE, tags, fields, time_ns))
    return points


class _ExtraFields:
    """Profile-table values on their way into points: fields for interface points, or points of their own.

    Rebuilds each touched point's fields at the end so that ``sysUpTime`` and
    ``counter32_fields`` stay last and the Counter32 list covers the new fields.
    """

    def __init__(self, interfaces: list[Point]) -> None:
        self.interfaces = {int(point.tags["ifIndex"]): point for point in interfaces}
        self.own: dict[tuple[str, Index], Point] = {}
        self.fields: dict[int, dict[str, FieldValue]] = {}
        self.counter32: dict[int, set[str]] = {}
        self.touched: dict[int, Point] = {}

    def add_table(
        self, target: SnmpTarget, table: ProfileTable, walked: WalkResult, uptime: int | None, time_ns: int
    ) -> None:
        width = len(table.index)
        rest_names = table.index[1:] if table.by_interface else table.index
        for column, values in walked.columns.items():
            wraps = walked.types.get(column) == ber.COUNTER32
            for index, value in values.items():
                if len(index) != width or not isinstance(value, int):
                    continue
                if table.measurement == INTERFACE:
                    point = self.interfaces.get(index[0])
                    if point is None:
                        continue
                    field_name = column + "".join(f"_{n}{v}" for n, v in zip(rest_names, index[1:]))
                else:
                    key = (table.measurement, index)
                    point = self.own.get(key)
                    if point is None:
                        point = self.own[key] = self._table_point(target, table, index, uptime, time_ns)
                    field_name = column
                self.touched[id(point)] = point
                self.fields.setdefault(id(point), {})[field_name] = value
                if wraps:
                    self.counter32.setdefault(id(point), set()).add(field_name)

    def _table_point(
        self, target: SnmpTarget, table: ProfileTable, index: Index, uptime: int | None, time_ns: int
    ) -> Point:
        tags = {**target.tags, "agent_host": target.name}
        rest = index
        if table.by_interface:
            interface = self.interfaces.get(index[0])
            tags["ifName"] = interface.tags["ifName"] if interface is not None else str(index[0])
            tags["ifIndex"] = str(index[0])
            rest = index[1:]
        names = table.index[1:] if table.by_interface else table.index
        tags.update({name: str(value) for name, value in zip(names, rest)})
        fields: dict[str, FieldValue] = {} if uptime is None else {"sysUpTime": uptime}
        return Point(table.measurement, tags, fields, time_ns)

    def finish(self) -> list[Point]:
        """Write the collected fields into their points; the new points of the tables' measurements."""
        for key, point in self.touched.items():
            fields = point.fields
            uptime = fields.pop("sysUpTime", None)
            wrapping = set(str(fields.pop("counter32_fields", "")).split(",")) - {""}
            fields.update(self.fields[key])
            if uptime is not None:
                fields["sysUpTime"] = uptime
            wrapping |= self.counter32.get(key, set())
            if wrapping:
                fields["counter32_fields"] = ",".join(sorted(wrapping))
        return list(self.own.values())
