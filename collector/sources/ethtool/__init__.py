"""RoCE PFC, ECN and drop counters from the NIC driver (``ethtool`` measurement).

Public API: :class:`EthtoolSource` (the source and its counter filter,
:data:`DEFAULT_COUNTER_INCLUDE` / :data:`DEFAULT_COUNTER_EXCLUDE`), the backend
seam :class:`EthtoolBackend` that a simulator implements, and
:class:`KernelEthtoolBackend`, which reads real NICs through ``SIOCETHTOOL``.
"""

from __future__ import annotations

from collector.sources.ethtool.backend import EthtoolBackend
from collector.sources.ethtool.kernel import KernelEthtoolBackend
from collector.sources.ethtool.source import DEFAULT_COUNTER_EXCLUDE, DEFAULT_COUNTER_INCLUDE, EthtoolSource

__all__ = [
    "DEFAULT_COUNTER_EXCLUDE",
    "DEFAULT_COUNTER_INCLUDE",
    "EthtoolBackend",
    "EthtoolSource",
    "KernelEthtoolBackend",
]
