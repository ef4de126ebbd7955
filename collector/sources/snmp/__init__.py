"""SNMP source: IF-MIB interface counters of switches, polled with GETBULK.

Public API: :class:`SnmpSource` (the ``snmp`` source), :class:`SnmpTarget`,
:class:`SnmpConfig`, :func:`load_config`, :func:`parse_config` and
:class:`SnmpConfigError`. See README.md beside this file.
"""

from __future__ import annotations

from collector.sources.snmp.config import SnmpConfig, SnmpConfigError, SnmpTarget, load_config, parse_config
from collector.sources.snmp.poller import SnmpSource

__all__ = ["SnmpConfig", "SnmpConfigError", "SnmpSource", "SnmpTarget", "load_config", "parse_config"]
