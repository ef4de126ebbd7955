"""The IF-MIB and SNMPv2-MIB objects the SNMP source reads, by their MIB names."""

from __future__ import annotations

Oid = tuple[int, ...]

IF_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 2, 1, 1, 2)
SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3)
SYS_NAME: Oid = (1, 3, 6, 1, 2, 1, 1, 5)
"""Scalars without their ``.0`` instance: a GETBULK non-repeater on one returns its ``.0``."""

COLUMNS: dict[str, Oid] = {
    "ifDescr": IF_ENTRY + (2,),
    "ifOperStatus": IF_ENTRY + (8,),
    "ifInOctets": IF_ENTRY + (10,),
    "ifInDiscards": IF_ENTRY + (13,),
    "ifInErrors": IF_ENTRY + (14,),
    "ifOutOctets": IF_ENTRY + (16,),
    "ifOutDiscards": IF_ENTRY + (19,),
    "ifOutErrors": IF_ENTRY + (20,),
    "ifName": IFX_ENTRY + (1,),
    "ifHCInOctets": IFX_ENTRY + (6,),
    "ifHCInUcastPkts": IFX_ENTRY + (7,),
    "ifHCOutOctets": IFX_ENTRY + (10,),
    "ifHCOutUcastPkts": IFX_ENTRY + (11,),
    "ifHighSpeed": IFX_ENTRY + (15,),
    "ifAlias": IFX_ENTRY + (18,),
    "ifCounterDiscontinuityTime": IFX_ENTRY + (19,),
}

STATIC_COLUMNS = ("ifName", "ifAlias", "ifHighSpeed")
"""Columns that change only when someone reconfigures the switch: cached between polls."""

DYNAMIC_COLUMNS = (
    "ifOperStatus",
    "ifHCInOctets",
    "ifHCOutOctets",
    "ifHCInUcastPkts",
    "ifHCOutUcastPkts",
    "ifInDiscards",
    "ifOutDiscards",
    "ifInErrors",
    "ifOutErrors",
)
"""Columns read on every poll."""

DISCONTINUITY = "ifCounterDiscontinuityTime"
"""Read on every poll where the agent has it: sysUpTime when an interface's counters last restarted
(a line card swap, a cleared counter). A change tells the reader to restart that port's rate baseline."""

ALWAYS_COUNTER32 = frozenset({"ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"})
"""Columns the data contract defines as Counter32 (IF-MIB has no 64-bit version): every reader knows
their width, so points do not list them in ``counter32_fields``."""

OCTET_FALLBACK = {"ifHCInOctets": "ifInOctets", "ifHCOutOctets": "ifOutOctets"}
"""Counter32 octet columns read for interfaces that lack the ifXTable Counter64 ones."""

NAME_FALLBACK = "ifDescr"
"""The interface name for agents without ifName (no ifXTable at all)."""

STRING_COLUMNS = frozenset({"ifName", "ifAlias", "ifDescr"})
