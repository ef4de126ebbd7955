"""``/healthz``, ``/readyz`` and ``/metrics`` over HTTP: the service's own health, stdlib only.

- ``/healthz``: 200 while the process's event loop answers (liveness: a
  supervisor restarts the process when it stops answering).
- ``/readyz``: 200 when every registered check passes, else 503; the body
  lists each check as ``[+]name ok`` or ``[-]name failed: reason`` (the
  Kubernetes convention), and ``?verbose`` is implied. Components register
  their checks: the MQTT publisher ``lambda: publisher.connected``, the
  ingest process a write probe of its store. A check is a callable returning
  true/false (or an awaitable of one); raising counts as failing, with the
  exception as the reason, and each check runs under a deadline.
- ``/metrics``: the :class:`~collector.service.metrics.Registry` in the
  Prometheus text format.

The server binds 127.0.0.1 by default: the endpoints tell anyone who can
reach them about the deployment, so exposing them is a deliberate choice.
Requests are untrusted input: the request head is capped at 8 KiB and must
arrive within a few seconds; every answer closes the connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from collector.service.metrics import Registry

__all__ = [
    "Check",
    "CheckResult",
    "HealthServer",
    "directory_writable_check",
    "tcp_check",
]

log = logging.getLogger(__name__)

Check = Callable[[], "bool | Awaitable[bool]"]
"""A readiness check: true when the dependency it guards is usable."""

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT_S = 5.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    reason: str = ""


class HealthServer:
    """The health and metrics endpoints of one service.

    ``port=0`` picks a free port (read ``port`` after ``start()``). Use as
    ``async with HealthServer(registry) as server:`` or ``start()``/``close()``.
    """

    def __init__(self, registry: Registry | None = None, host: str = "127.0.0.1", port: int = 9464,
                 check_timeout_s: float = 2.0) -> None:
        self.registry = registry if registry is not None else Registry()
        self.host = host
        self.port = port
        self.check_timeout_s = check_timeout_s
        self._checks: dict[str, Check] = {}
        self._server: asyncio.Server | None = None

    def add_check(self, name: str, check: Check) -> None:
        """Register a readiness check under ``name`` (replacing one of the same name)."""
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"readiness check name {name!r} must be non-empty without spaces")
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        self._checks.pop(name, None)

    async def readiness(self) -> list[CheckResult]:
        """Run every check concurrently, each under ``check_timeout_s``."""
        names = list(self._checks)
        return list(await asyncio.gather(*(self._run_check(name, self._checks[name]) for name in names)))

    async def _run_check(self, name: str, check: Check) -> CheckResult:
        try:
            async with asyncio.timeout(self.check_timeout_s):
                outcome = check()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        except TimeoutError:
            return CheckResult(name, False, f"no answer within {self.check_timeout_s:g} s")
        except Exception as error:
            return CheckResult(name, False, f"{type(error).__name__}: {error}")
        return CheckResult(name, bool(outcome), "" if outcome else "check returned false")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_REQUEST_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health: serving /healthz, /readyz and /metrics on http://%s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body, head_only = await self._respond(reader)
        except Exception:  # a bug answering one request must not take the server down
            log.exception("health: answering a request failed")
            status, content_type, body, head_only = 500, "text/plain", b"internal error\n", False
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            writer.write(head if head_only else head + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, "text/plain", b"request head too slow\n", False
        except asyncio.LimitOverrunError:
            return 431, "text/plain", b"request head too large\n", False
        except asyncio.IncompleteReadError:
            return 400, "text/plain", b"incomplete request\n", False
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request line\n", False
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n", False
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return 200, "text/plain", b"ok\n", head_only
        if path == "/readyz":
            results = await self.readiness()
            lines = [f"[+]{r.name} ok" if r.ok else f"[-]{r.name} failed: {r.reason}" for r in results]
            ready = all(r.ok for r in results)
            lines.append("readyz check passed" if ready else "readyz check failed")
            return (200 if ready else 503), "text/plain", ("\n".join(lines) + "\n").encode(), head_only
        if path == "/metrics":
            return 200, METRICS_CONTENT_TYPE, self.registry.render().encode(), head_only
        return 404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n", head_only


def tcp_check(host: str, port: int, timeout_s: float = 1.0) -> Check:
    """A check that passes when ``host:port`` accepts a TCP connection (a broker or database is up)."""

    async def check() -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise ConnectionError(f"{host}:{port} did not accept a connection within {timeout_s:g} s") from None
        except OSError as error:
            raise ConnectionError(f"{host}:{port}: {error.strerror or error}") from None
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True

    return check


def directory_writable_check(directory: str | Path) -> Check:
    """A check that passes when a file can be created, written, synced and removed in ``directory``
    (the embedded store's or the spool's disk is writable and not full)."""
    directory = Path(directory)

    def probe() -> bool:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".strandwatch-ready-") as handle:
            handle.write(str(time.time()).encode())
            handle.flush()
            os.fsync(handle.fileno())
        return True

    async def check() -> bool:
        return await asyncio.to_thread(probe)

    return check

