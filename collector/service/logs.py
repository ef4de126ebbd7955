"""Logging for the long-running services: text or JSON lines on stderr, secrets redacted.

``configure_logging(level="INFO", json_lines=False, secrets=[...])`` installs
one handler on the root logger. Every record passes a
:class:`RedactingFilter` before it is formatted, so no secret reaches the
journal or a log shipper, whichever module logged it:

- the configured secret values (an SNMP community, the MQTT password, the
  InfluxDB token; add more later with :func:`register_secrets`) are replaced
  wherever they appear;
- anything shaped like ``community=...``, ``password: ...``, ``token=...``,
  ``auth_key=...``, ``Authorization: Token ...`` or the password in
  ``scheme://user:password@host`` is replaced too, so a secret nobody
  registered (one from a peer's error message) is caught by its shape.

Exception tracebacks are formatted and redacted the same way. JSON lines
carry ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` and
``exception`` when there is one: what journald, Loki or Elasticsearch ingest
without a parser.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TextIO

__all__ = [
    "JsonFormatter",
    "REDACTED",
    "RedactingFilter",
    "configure_logging",
    "redact",
    "register_secrets",
    "secret_values",
]

REDACTED = "***"
MIN_SECRET_LENGTH = 3
"""Shorter registered values are not redacted by value: replacing every 'ab' would garble the logs."""

SECRET_KEY = re.compile(
    r"(?:community|password|passwd|passphrase|secret|token|api[_-]?key|auth[_-]?key|priv[_-]?key|key[_-]?password)",
    re.IGNORECASE,
)
"""Names of settings and parameters whose values are secrets."""

_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w.-]*" + SECRET_KEY.pattern + r"[\w-]*)"
    r"(?P<sep>['\"]?\s*[=:]\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&'\")\]}]+)",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(r"(?P<key>\bAuthorization:?\s*(?:Token|Bearer|Basic)\s+)(?P<value>\S+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<key>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<value>[^@\s/]+)(?=@)", re.IGNORECASE)

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _quote_aware(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the ``secrets`` values and anything secret-shaped replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: one secret may contain another
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    text = _KEY_VALUE.sub(_quote_aware, text)
    text = _AUTHORIZATION.sub(lambda m: m.group("key") + REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m.group("key") + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments merged in) and traceback with secrets redacted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if isinstance(s, str) and s)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(self._secrets)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must still be logged, not crash the caller
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
            record.exc_info = None  # formatters would otherwise format the raw traceback again
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


_installed: RedactingFilter | None = None


def configure_logging(
    level: str | int = "INFO",
    json_lines: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> RedactingFilter:
    """Send every logger's records to ``stream`` (default stderr), redacted, as text or JSON lines.

    Replaces handlers installed before (a second call reconfigures). Returns
    the filter, whose ``add()`` registers secrets learned later (a reload).
    """
    global _installed
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        level = resolved
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _installed = redactor
    return redactor


def register_secrets(secrets: Iterable[str]) -> None:
    """Redact these values from now on (no effect before :func:`configure_logging`)."""
    if _installed is not None:
        _installed.add(secrets)


def secret_values(settings: object) -> set[str]:
    """The string values of every secret-named setting in ``settings``, found recursively.

    Walks dataclasses, mappings and sequences (an ``SnmpConfig``'s targets, a
    ``ServiceConfig``'s MQTT and InfluxDB sections, a parsed YAML document)
    and collects the values of fields whose names look secret (``community``,
    ``password``, ``token``, ``auth_key``...), so the caller need not list them.
    """
    found: set[str] = set()
    seen: set[int] = set()

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, str):
            if key and SECRET_KEY.search(key) and not key.endswith(("_file", "_env", "_protocol")):
                found.add(value)
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name), field.name)
        elif isinstance(value, Mapping):
            for name, item in value.items():
                walk(item, str(name))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item, key)

    walk(settings)
    return {value for value in found if value}
