"""Walk several table columns at once with GETBULK.

Walking each column on its own costs one round trip per ``max_repetitions``
rows per column. Here every request carries one varbind per column still
being walked, each starting from the last OID that column returned, so a
table of 12 columns and 40 rows takes two requests instead of 24. A column
is finished when the agent answers with an OID outside it or endOfMibView.
Scalars ride on the first request as non-repeaters: asking for the OID just
before an instance (``sysUpTime`` for ``sysUpTime.0``) returns the instance.
Rows are keyed by their index, the OID arcs after the column (``(7,)`` for
ifIndex 7, ``(0, 48, 1)`` for an lldpRemTable row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from collector.sources.snmp import ber
from collector.sources.snmp.session import Oid, Session, SnmpRequestError

Index = tuple[int, ...]


@dataclass
class WalkResult:
    """What a walk found.

    ``columns``: ``{column name: {row index: value}}``; ``types``: the BER tag
    each column's values came with (Counter32, Counter64, ...), so the width
    of a counter travels with it; ``scalars``: scalar values by name.
    """

    columns: dict[str, dict[Index, ber.Value]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    scalars: dict[str, ber.Value] = field(default_factory=dict)


async def walk_columns(
    session: Session,
    columns: Mapping[str, Oid],
    max_repetitions: int,
    scalars: Mapping[str, Oid] | None = None,
    expected_rows: int | None = None,
) -> WalkResult:
    """Walk table ``columns`` (name to column OID) side by side.

    ``scalars`` maps names to the OID just before the wanted instance; a
    scalar the agent does not have is left out of the result.
    ``expected_rows`` (the row count of the previous poll) trims the last
    request to the rows still missing plus one to see each column end,
    instead of ``max_repetitions`` varbinds per column that mostly belong to
    the next column: decoding them would be wasted work.
    """
    result = WalkResult(columns={name: {} for name in columns})
    cursor: dict[str, Oid] = dict(columns)
    pending_scalars = dict(scalars or {})
    rows_seen = 0
    missing = ber.EXCEPTION_TAGS
    while cursor or pending_scalars:
        names = list(cursor)
        scalar_names = list(pending_scalars)
        repetitions = max_repetitions
        if expected_rows is not None and rows_seen <= expected_rows:
            repetitions = min(max_repetitions, expected_rows - rows_seen + 1)
        varbinds = await session.bulk(
            len(scalar_names),
            repetitions if names else 0,
            [pending_scalars[name] for name in scalar_names] + [cursor[name] for name in names],
        )
        for name, (oid, tag, value) in zip(scalar_names, varbinds):
            if oid[:-1] == pending_scalars[name] and tag not in missing:
                result.scalars[name] = value
        pending_scalars.clear()
        repeated = varbinds[len(scalar_names) :]
        if names and not repeated:
            raise SnmpRequestError("agent answered a GETBULK with no varbinds")
        width = len(names)
        finished: set[str] = set()
        for position, (oid, tag, value) in enumerate(repeated):
            name = names[position % width]
            if name in finished:
                continue
            base = columns[name]
            if tag in missing or oid[: len(base)] != base:
                finished.add(name)
                continue
            if oid <= cursor[name]:
                raise SnmpRequestError(f"agent returned {'.'.join(map(str, oid))} out of order while walking {name}")
            cursor[name] = oid
            if len(oid) > len(base):
                result.columns[name][oid[len(base) :]] = value
                result.types[name] = tag
        for name in finished:
            del cursor[name]
        rows_seen = max(map(len, result.columns.values())) if result.columns else 0
    return result
