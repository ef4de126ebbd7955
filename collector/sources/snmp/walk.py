"""Walk several table columns at once with GETBULK through pysnmp.

Walking each column on its own costs one round trip per ``max_repetitions``
rows per column. Here every request carries one varbind per column still
being walked, each starting from the last OID that column returned, so a
table of 12 columns and 40 rows takes two requests instead of 24. A column
is finished when the agent answers with an OID outside it or endOfMibView.
Scalars ride on the first request as non-repeaters: asking for the OID just
before an instance (``sysUpTime`` for ``sysUpTime.0``) returns the instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
)
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from collector.sources.snmp.ifmib import Oid

_MISSING = (EndOfMibView, NoSuchObject, NoSuchInstance)


class SnmpRequestError(Exception):
    """An agent did not answer, answered with an error, or answered nonsense."""


class BulkSession:
    """GETBULK requests to one agent through a shared :class:`SnmpEngine`.

    Counts requests and varbinds so callers can report the work a poll took.
    """

    def __init__(
        self,
        engine: SnmpEngine,
        auth: CommunityData | UsmUserData,
        transport: UdpTransportTarget,
    ) -> None:
        self.engine = engine
        self.auth = auth
        self.transport = transport
        self.context = ContextData()
        self.requests = 0
        self.varbinds = 0

    async def bulk(self, non_repeaters: int, max_repetitions: int, oids: list[Oid]) -> list[tuple[Oid, Any]]:
        """One GETBULK; returns (oid, pysnmp value) pairs in wire order."""
        error_indication, error_status, error_index, varbinds = await bulk_cmd(
            self.engine,
            self.auth,
            self.transport,
            self.context,
            non_repeaters,
            max_repetitions,
            *(ObjectType(ObjectIdentity(oid)) for oid in oids),
            lookupMib=False,
        )
        self.requests += 1
        if error_indication:
            raise SnmpRequestError(str(error_indication))
        if error_status:
            raise SnmpRequestError(f"agent answered {error_status.prettyPrint()} at varbind {int(error_index)}")
        self.varbinds += len(varbinds)
        return [(name.asTuple(), value) for name, value in varbinds]


@dataclass
class WalkResult:
    """Rows per column, ``{column name: {row index: value}}``, and scalar values by name."""

    columns: dict[str, dict[int, Any]] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)


async def walk_columns(
    session: BulkSession,
    columns: Mapping[str, Oid],
    max_repetitions: int,
    scalars: Mapping[str, Oid] | None = None,
    expected_rows: int | None = None,
) -> WalkResult:
    """Walk single-index table ``columns`` (name to column OID) side by side.

    ``scalars`` maps names to the OID just before the wanted instance; a
    scalar the agent does not have is left out of the result.
    ``expected_rows`` (the row count of the previous poll) trims the last
    request to the rows still missing plus one to see each column end,
    instead of ``max_repetitions`` varbinds per column that mostly belong to
    the next column: decoding them is most of a poll's CPU time.
    """
    result = WalkResult(columns={name: {} for name in columns})
    cursor: dict[str, Oid] = dict(columns)
    pending_scalars = dict(scalars or {})
    rows_seen = 0
    while cursor or pending_scalars:
        names = list(cursor)
        scalar_names = list(pending_scalars)
        repetitions = max_repetitions
        if expected_rows is not None and rows_seen <= expected_rows:
            repetitions = min(max_repetitions, expected_rows - rows_seen + 1)
        varbinds = await session.bulk(
            len(scalar_names),
            repetitions,
            [pending_scalars[name] for name in scalar_names] + [cursor[name] for name in names],
        )
        for name, (oid, value) in zip(scalar_names, varbinds):
            if oid[:-1] == pending_scalars[name] and not isinstance(value, _MISSING):
                result.scalars[name] = value
        pending_scalars.clear()
        repeated = varbinds[len(scalar_names) :]
        if names and not repeated:
            raise SnmpRequestError("agent answered a GETBULK with no varbinds")
        finished: set[str] = set()
        for position, (oid, value) in enumerate(repeated):
            name = names[position % len(names)]
            if name in finished:
                continue
            base = columns[name]
            if isinstance(value, _MISSING) or oid[: len(base)] != base:
                finished.add(name)
                continue
            if oid <= cursor[name]:
                raise SnmpRequestError(f"agent returned {'.'.join(map(str, oid))} out of order while walking {name}")
            cursor[name] = oid
            if len(oid) == len(base) + 1:
                result.columns[name][oid[-1]] = value
        for name in finished:
            del cursor[name]
        rows_seen = max(len(rows) for rows in result.columns.values()) if result.columns else 0
    return result
