"""The SNMP source: polls switches' IF-MIB counters into ``interface`` points.

Per target and poll, one multi-column GETBULK walk reads ifOperStatus, the
ifXTable Counter64 octet and unicast packet counters, the ifTable Counter32
discard and error counters, and sysUpTime.0. ifName, ifAlias and ifHighSpeed
rarely change, so they join the walk only on the first poll, every
``static_refresh_polls`` polls after, and at once when an unknown ifIndex
shows up or sysUpTime goes backwards (a restarted agent may renumber its
interfaces). Interfaces without ifHCInOctets/ifHCOutOctets get the Counter32
ifInOctets/ifOutOctets instead; agents without ifName get ifDescr as the
interface name. Both fallbacks are learned on the first poll that needs them
and kept for that target.

Targets are polled concurrently (at most ``concurrency`` at once), each under
its own deadline. A target that does not answer, answers too slowly or
answers garbage costs only its own deadline: it yields a ``strandwatch_source``
point with ``up=0`` and a logged warning; collect() never raises for it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_AUTH_NONE,
    USM_PRIV_CBC56_DES,
    USM_PRIV_CBC168_3DES,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    USM_PRIV_NONE,
    CommunityData,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
)

from collector.schema import COLLECTOR_HEALTH, INTERFACE, FieldValue, Point
from collector.sources.snmp import ifmib
from collector.sources.snmp.config import SnmpConfig, SnmpConfigError, SnmpTarget
from collector.sources.snmp.walk import BulkSession, WalkResult, walk_columns

log = logging.getLogger(__name__)

_AUTH = {
    "none": USM_AUTH_NONE,
    "md5": USM_AUTH_HMAC96_MD5,
    "sha": USM_AUTH_HMAC96_SHA,
    "sha224": USM_AUTH_HMAC128_SHA224,
    "sha256": USM_AUTH_HMAC192_SHA256,
    "sha384": USM_AUTH_HMAC256_SHA384,
    "sha512": USM_AUTH_HMAC384_SHA512,
}
_PRIV = {
    "none": USM_PRIV_NONE,
    "des": USM_PRIV_CBC56_DES,
    "3des": USM_PRIV_CBC168_3DES,
    "aes": USM_PRIV_CFB128_AES,
    "aes128": USM_PRIV_CFB128_AES,
    "aes192": USM_PRIV_CFB192_AES,
    "aes256": USM_PRIV_CFB256_AES,
}


def _auth_data(target: SnmpTarget) -> CommunityData | UsmUserData:
    if target.version == "2c":
        return CommunityData(target.community, mpModel=1)
    if target.priv_protocol != "none" and importlib.util.find_spec("cryptography") is None:
        raise SnmpConfigError(
            f"target {target.name!r}: priv_protocol: {target.priv_protocol} needs the Python package"
            " 'cryptography' (>= 43), which is not installed"
        )
    return UsmUserData(
        target.user,
        authKey=target.auth_key,
        privKey=target.priv_key,
        authProtocol=_AUTH[target.auth_protocol],
        privProtocol=_PRIV[target.priv_protocol],
    )


def _plain(column: str, value: Any) -> FieldValue:
    """pysnmp value to a field value: strings for the text columns, ints for the rest."""
    if column in ifmib.STRING_COLUMNS:
        return value.asOctets().decode("utf-8", "replace")
    return int(value)


@dataclass
class _TargetState:
    """What the source remembers about one target between polls."""

    target: SnmpTarget
    auth: CommunityData | UsmUserData
    transport: UdpTransportTarget | None = None
    static: dict[str, dict[int, FieldValue]] | None = None
    known_indexes: frozenset[int] = frozenset()
    polls_since_static: int = 0
    last_uptime: int | None = None
    octet_fallback: bool = False


class SnmpSource:
    """Polls IF-MIB interface counters from SNMP agents; the ``snmp`` source."""

    name = "snmp"

    def __init__(self, config: SnmpConfig) -> None:
        self.config = config
        self._states = [_TargetState(target, _auth_data(target)) for target in config.targets]
        self._engine: SnmpEngine | None = None
        self._slots = asyncio.Semaphore(config.concurrency)

    @classmethod
    def from_targets(cls, targets: list[SnmpTarget], **options: int) -> SnmpSource:
        """Shortcut for ``SnmpSource(SnmpConfig(tuple(targets), **options))``."""
        return cls(SnmpConfig(tuple(targets), **options))

    async def collect(self, time_ns: int) -> list[Point]:
        """Poll every target once; interface points plus one health point per target."""
        if self._engine is None:
            self._engine = SnmpEngine()
        batches = await asyncio.gather(*(self._poll_guarded(state, time_ns) for state in self._states))
        return [point for batch in batches for point in batch]

    async def close(self) -> None:
        """Close the engine's sockets; a later collect() starts a fresh engine."""
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
            for state in self._states:
                state.transport = None

    async def _poll_guarded(self, state: _TargetState, time_ns: int) -> list[Point]:
        target = state.target
        async with self._slots:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(target.deadline):
                    points = await self._poll(state, time_ns)
                up = 1
            except TimeoutError:
                log.warning(
                    "snmp target %s (%s:%d): no complete answer within its %.1f s deadline",
                    target.name, target.host, target.port, target.deadline,
                )
                points, up = [], 0
            except Exception as exc:  # one broken agent must not stop the others
                log.warning(
                    "snmp target %s (%s:%d): %s: %s", target.name, target.host, target.port, type(exc).__name__, exc
                )
                points, up = [], 0
            duration = time.perf_counter() - started
        health = Point(
            COLLECTOR_HEALTH,
            {"source": self.name, "target": target.name},
            {"up": up, "duration_seconds": duration, "points": len(points)},
            time_ns,
        )
        return [*points, health]

    async def _poll(self, state: _TargetState, time_ns: int) -> list[Point]:
        target = state.target
        assert self._engine is not None
        if state.transport is None:
            state.transport = await UdpTransportTarget.create(
                (target.host, target.port), timeout=target.timeout, retries=target.retries
            )
        session = BulkSession(self._engine, state.auth, state.transport)
        refresh = state.static is None or state.polls_since_static >= self.config.static_refresh_polls
        wanted = list(ifmib.DYNAMIC_COLUMNS)
        if state.octet_fallback:
            wanted += ifmib.OCTET_FALLBACK.values()
        if refresh:
            wanted += _STATIC_WALK
        expected_rows = len(state.known_indexes) if state.static is not None else None
        result = await walk_columns(
            session, _oids(wanted), target.max_repetitions, {"sysUpTime": ifmib.SYS_UPTIME}, expected_rows
        )
        uptime = int(result.scalars["sysUpTime"]) if "sysUpTime" in result.scalars else None
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
            rows = _rows(result)

        if refresh:
            state.static = {
                column: {index: _plain(column, value) for index, value in result.columns[column].items()}
                for column in _STATIC_WALK
            }
            state.known_indexes = frozenset(rows)
            state.polls_since_static = 1
        else:
            state.polls_since_static += 1
        state.last_uptime = uptime
        log.debug("snmp target %s: %d requests, %d varbinds", target.name, session.requests, session.varbinds)
        return _interface_points(state, result, rows, uptime, time_ns)


def _interface_points(
    state: _TargetState, result: WalkResult, rows: list[int], uptime: int | None, time_ns: int
) -> list[Point]:
    """One ``interface`` point per ifIndex: cached static columns plus this poll's values."""
    target = state.target
    static = state.static
    assert static is not None
    dynamic = [(column, result.columns[column]) for column in ifmib.DYNAMIC_COLUMNS]
    fallback = [
        (hc, column, result.columns.get(column, {})) for hc, column in ifmib.OCTET_FALLBACK.items()
    ]
    points = []
    for index in rows:
        name = static["ifName"].get(index) or static[ifmib.NAME_FALLBACK].get(index) or str(index)
        fields: dict[str, FieldValue] = {}
        for column in ("ifAlias", "ifHighSpeed"):
            if index in static[column]:
                fields[column] = static[column][index]
        for column, values in dynamic:
            if index in values:
                fields[column] = int(values[index])
        for hc, column, values in fallback:
            if hc not in fields and index in values:
                fields[column] = int(values[index])
        if uptime is not None:
            fields["sysUpTime"] = uptime
        tags = {**target.tags, "agent_host": target.name, "ifName": str(name), "ifIndex": str(index)}
        points.append(Point(INTERFACE, tags, fields, time_ns))
    return points


_STATIC_WALK = (*ifmib.STATIC_COLUMNS, ifmib.NAME_FALLBACK)
"""Walked together: ifDescr costs one column on refresh polls and names interfaces of agents without ifName."""


def _oids(columns: list[str] | tuple[str, ...]) -> dict[str, ifmib.Oid]:
    return {column: ifmib.COLUMNS[column] for column in columns}


def _rows(result: WalkResult) -> list[int]:
    """Every ifIndex that any per-poll column has, in order."""
    indexes: set[int] = set()
    for column in (*ifmib.DYNAMIC_COLUMNS, *ifmib.OCTET_FALLBACK.values()):
        indexes.update(result.columns.get(column, ()))
    return sorted(indexes)
