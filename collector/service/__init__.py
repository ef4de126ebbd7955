"""Running strandwatch for months: health and self-metrics, logging, signals, reload.

- :mod:`~collector.service.health`: :class:`HealthServer` (``/healthz``,
  ``/readyz``, ``/metrics``), readiness checks :func:`tcp_check` and
  :func:`directory_writable_check`.
- :mod:`~collector.service.metrics`: :class:`Registry` of counters, gauges and
  histograms; :class:`ServiceMetrics`, the metrics every service exports.
- :mod:`~collector.service.logs`: :func:`configure_logging` (text or JSON
  lines, secrets redacted), :func:`secret_values`, :func:`register_secrets`.
- :mod:`~collector.service.signals`: :class:`ShutdownSignals` (first SIGTERM
  or SIGINT drains, a second forces, SIGHUP reloads) and :func:`run_service`.
- :mod:`~collector.service.reload`: :class:`SourceSet`, sources swapped
  between polls on reload, and :func:`snmp_source_set`.
- :mod:`~collector.service.publish`: :func:`poll_loop` and
  :func:`serve_publishing`, the publishing poll loop of ``collect snmp`` and
  ``agent``; :func:`line_protocol_sink` for ``--output``.
"""

from __future__ import annotations

from collector.service.health import CheckResult, HealthServer, directory_writable_check, tcp_check
from collector.service.logs import configure_logging, redact, register_secrets, secret_values
from collector.service.metrics import Registry, ServiceMetrics
from collector.service.publish import line_protocol_sink, poll_loop, serve_publishing
from collector.service.reload import SourceSet, snmp_source_set
from collector.service.signals import EXIT_FORCED, ForcedExit, ShutdownSignals, run_service

__all__ = [
    "CheckResult",
    "EXIT_FORCED",
    "ForcedExit",
    "HealthServer",
    "Registry",
    "ServiceMetrics",
    "ShutdownSignals",
    "SourceSet",
    "configure_logging",
    "line_protocol_sink",
    "poll_loop",
    "directory_writable_check",
    "redact",
    "register_secrets",
    "run_service",
    "secret_values",
    "serve_publishing",
    "snmp_source_set",
    "tcp_check",
]
