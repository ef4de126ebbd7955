"""SNMP source: switches' IF-MIB interface counters and vendor congestion counters, polled with GETBULK.

Public API: :class:`SnmpSource` (the ``snmp`` source), :class:`SnmpTarget`,
:class:`SnmpConfig`, :func:`load_config`, :func:`parse_config` and
:class:`SnmpConfigError`; :class:`SnmpClient` (GETBULK sessions: the built-in
v2c codec, pysnmp for SNMPv3); vendor profiles: :func:`load_profiles`,
:class:`VendorProfile`, :class:`ProfileError`. The command-line entry points
are in :mod:`collector.sources.snmp.cli`; LLDP topology discovery is
:mod:`collector.topology_discovery`. See README.md beside this file.
"""

from __future__ import annotations

from collector.sources.snmp.config import SnmpConfig, SnmpConfigError, SnmpTarget, load_config, parse_config
from collector.sources.snmp.poller import SnmpSource
from collector.sources.snmp.session import SnmpClient, SnmpRequestError
from collector.sources.snmp.vendor_profiles import ProfileError, VendorProfile, load_profiles

__all__ = [
    "ProfileError",
    "SnmpClient",
    "SnmpConfig",
    "SnmpConfigError",
    "SnmpRequestError",
    "SnmpSource",
    "SnmpTarget",
    "VendorProfile",
    "load_profiles",
    "load_config",
    "parse_config",
]
