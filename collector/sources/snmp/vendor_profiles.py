"""Vendor profiles: extra SNMP tables (congestion counters beyond IF-MIB), as data files.

A profile is one YAML file (see ``profiles/`` beside this module and the
README) naming the devices it applies to by sysObjectID prefix and the tables
to walk::

    name: arista
    description: Arista EOS per-priority PFC (ARISTA-PFC-MIB)
    sys_object_id: [1.3.6.1.4.1.30065]      # prefixes; "any" applies to every device
    tables:
      - name: aristaPfcPriorityTable
        entry: 1.3.6.1.4.1.30065.3.11.1.1.1  # the table's Entry OID
        index: [ifIndex, prio]               # one integer arc per index component
        columns:                             # field name: column number under the entry
          aristaPfcPriorityRequests: 3

A device gets every generic profile (``sys_object_id: any``) plus the one
vendor profile with the longest sysObjectID prefix matching it. Tables whose
index starts with ``ifIndex`` add fields to that interface's ``interface``
point; further index components go into the field name
(``aristaPfcPriorityRequests_prio3``). A table with ``measurement: <name>``
makes points of its own instead: tags ``agent_host``, ``ifName`` and
``ifIndex`` (when the index starts with ifIndex) and one tag per other index
component; fields are the columns. Values are stored raw; a column served as
Counter32 is named in the point's ``counter32_fields``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from collector.schema import INTERFACE
from collector.sources.snmp import ifmib

Oid = tuple[int, ...]

BUILTIN_DIR = Path(__file__).parent / "profiles"
IF_INDEX = "ifIndex"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_FIELDS = frozenset(ifmib.COLUMNS) | {"sysUpTime", "counter32_fields"}
_RESERVED_TAGS = frozenset({"agent_host", "ifName", IF_INDEX})


class ProfileError(ValueError):
    """A profile file that cannot be used: the message names the file, the key and the problem."""


@dataclass(frozen=True)
class ProfileTable:
    """One table of a profile: where it is, how its rows are indexed, and which columns become fields."""

    name: str
    entry: Oid
    index: tuple[str, ...]
    columns: Mapping[str, int]
    measurement: str = INTERFACE

    @property
    def column_oids(self) -> dict[str, Oid]:
        """Field name to column OID, for :func:`walk_columns`."""
        return {field: self.entry + (number,) for field, number in self.columns.items()}

    @property
    def by_interface(self) -> bool:
        """Whether rows belong to an interface (the index starts with ifIndex)."""
        return self.index[0] == IF_INDEX


@dataclass(frozen=True)
class VendorProfile:
    """A profile file: ``sys_object_ids`` empty means every device."""

    name: str
    description: str
    sys_object_ids: tuple[Oid, ...]
    tables: tuple[ProfileTable, ...]
    source: str

    @property
    def generic(self) -> bool:
        return not self.sys_object_ids


def parse_oid(text: object, where: str) -> Oid:
    """``1.3.6.1...`` (a leading dot allowed) as a tuple; errors name ``where``."""
    if not isinstance(text, str) or not re.fullmatch(r"\.?\d+(\.\d+)+", text.strip()):
        raise ProfileError(f"{where}: must be a dotted numeric OID such as 1.3.6.1.4.1.30065, got {text!r}")
    return tuple(int(arc) for arc in text.strip().lstrip(".").split("."))


def _table(entry: Any, where: str) -> ProfileTable:
    if not isinstance(entry, Mapping):
        raise ProfileError(f"{where}: must be a mapping with name, entry, index and columns")
    unknown = sorted(set(entry) - {"name", "entry", "index", "columns", "measurement"})
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {unknown}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}.name: must be a non-empty string")
    oid = parse_oid(entry.get("entry"), f"{where}.entry")
    index = entry.get("index")
    if not isinstance(index, list) or not index or not all(isinstance(i, str) and _NAME.match(i) for i in index):
        raise ProfileError(f"{where}.index: must be a list of index component names, such as [ifIndex, prio]")
    if len(set(index)) != len(index) or IF_INDEX in index[1:]:
        raise ProfileError(f"{where}.index: names must be distinct, and ifIndex can only come first")
    measurement = entry.get("measurement", INTERFACE)
    if not isinstance(measurement, str) or not _NAME.match(measurement):
        raise ProfileError(f"{where}.measurement: must be a measurement name, got {measurement!r}")
    if measurement == INTERFACE and index[0] != IF_INDEX:
        raise ProfileError(f"{where}: a table not indexed by ifIndex needs a measurement of its own")
    if measurement != INTERFACE and _RESERVED_TAGS & set(index[1:] if index[0] == IF_INDEX else index):
        raise ProfileError(f"{where}.index: {sorted(_RESERVED_TAGS)} are tags the poller sets")
    columns = entry.get("columns")
    if not isinstance(columns, Mapping) or not columns:
        raise ProfileError(f"{where}.columns: must map field names to column numbers")
    for field, number in columns.items():
        if not isinstance(field, str) or not _NAME.match(field):
            raise ProfileError(f"{where}.columns: {field!r} is not a valid field name")
        if field in _RESERVED_FIELDS:
            raise ProfileError(f"{where}.columns.{field}: is a field the IF-MIB poll already sets")
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ProfileError(f"{where}.columns.{field}: must be a column number >= 1, got {number!r}")
    return ProfileTable(name, oid, tuple(index), dict(columns), measurement)


def parse_profile(document: Any, source: str) -> VendorProfile:
    """A profile from its parsed YAML; ``source`` names it in errors."""
    if not isinstance(document, Mapping):
        raise ProfileError(f"{source}: must be a mapping with name, sys_object_id and tables")
    unknown = sorted(set(document) - {"name", "description", "sys_object_id", "tables"})
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {unknown}")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProfileError(f"{source}: name: must be a simple name such as arista, got {name!r}")
    description = document.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{source}: description: must be a string")
    matches = document.get("sys_object_id")
    if matches == "any":
        prefixes: tuple[Oid, ...] = ()
    elif isinstance(matches, list) and matches:
        prefixes = tuple(parse_oid(m, f"{source}: sys_object_id[{i}]") for i, m in enumerate(matches))
    else:
        raise ProfileError(f"{source}: sys_object_id: must be 'any' or a list of sysObjectID prefixes")
    tables = document.get("tables")
    if not isinstance(tables, list) or not tables:
        raise ProfileError(f"{source}: tables: must be a non-empty list")
    parsed = tuple(_table(entry, f"{source}: tables[{i}]") for i, entry in enumerate(tables))
    names = [table.name for table in parsed]
    if len(set(names)) != len(names):
        raise ProfileError(f"{source}: tables: duplicate table names")
    fields = [(t.measurement, f) for t in parsed for f in t.columns]
    if len(set(fields)) != len(fields):
        raise ProfileError(f"{source}: tables: the same field appears in two tables of one measurement")
    return VendorProfile(name, description, prefixes, parsed, source)


def load_profiles(dirs: Iterable[str | Path] = ()) -> dict[str, VendorProfile]:
    """The built-in profiles, then every ``*.yaml`` in ``dirs`` (a later profile of the same name wins)."""
    profiles: dict[str, VendorProfile] = {}
    for folder in (BUILTIN_DIR, *map(Path, dirs)):
        if not folder.is_dir():
            raise ProfileError(f"{folder}: profile folder does not exist")
        for path in sorted(folder.glob("*.yaml")):
            try:
                document = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise ProfileError(f"{path}: cannot read profile: {exc}") from None
            profile = parse_profile(document, str(path))
            profiles[profile.name] = profile
    return profiles


def select_profiles(profiles: Mapping[str, VendorProfile], sys_object_id: Oid | None) -> list[VendorProfile]:
    """The profiles for a device: every generic one, plus the vendor profile with the longest matching prefix."""
    chosen = [profile for profile in profiles.values() if profile.generic]
    best: tuple[int, VendorProfile] | None = None
    if sys_object_id is not None:
        for profile in profiles.values():
            for prefix in profile.sys_object_ids:
                if sys_object_id[: len(prefix)] == prefix and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), profile)
    if best is not None:
        chosen.append(best[1])
    return chosen
