"""Stop and reload signals for the long-running services, the way uvicorn handles them.

- The first SIGTERM or SIGINT asks for a graceful stop: ``stop`` is set, the
  service finishes what it accepted (the poll under way, the batches on the
  bus, the spool), flushes and returns.
- A second one forces the exit: the task that installed the handlers is
  cancelled and sees :class:`ForcedExit`; :func:`run_service` then leaves
  with status 130 without waiting for anything (a source stuck in a driver
  call, a broker that does not answer). If cancelling does not unwind within
  ``force_exit_after_s`` (code that swallows cancellation, a worker thread
  that blocks interpreter shutdown), the process exits anyway.
- SIGHUP calls ``on_reload`` (re-read the configuration; see
  :mod:`collector.service.reload`); the service keeps running.

The handlers are asyncio loop signal handlers, so they run on the event loop
between callbacks, never in the middle of a write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

__all__ = ["EXIT_FORCED", "ForcedExit", "ShutdownSignals", "run_service"]

log = logging.getLogger(__name__)

EXIT_FORCED = 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ForcedExit(Exception):
    """A second stop signal arrived while the service was draining."""


class ShutdownSignals:
    """The stop event, the forced flag and the reload callback of one service.

    ``name`` prefixes the log messages ("agent: SIGTERM: finishing the current
    poll, then stopping (again to stop now)"); ``draining`` says what the
    service does after the first signal. ``install()`` must run inside the
    task that a second signal should cancel (normally the service's main
    coroutine); ``uninstall()`` restores the default handlers.
    """

    def __init__(
        self,
        name: str = "strandwatch",
        draining: str = "draining and flushing, then stopping",
        stop: asyncio.Event | None = None,
        on_reload: Callable[[], object] | None = None,
        force_exit_after_s: float = 5.0,
    ) -> None:
        self.name = name
        self.draining = draining
        self.stop = stop if stop is not None else asyncio.Event()
        self.on_reload = on_reload
        self.force_exit_after_s = force_exit_after_s
        self.forced = False
        self.reloads = 0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed: list[int] = []

    def install(self, *, reload: bool = True) -> ShutdownSignals:
        """Handle SIGTERM and SIGINT (and SIGHUP when ``reload``) on the running loop.

        Outside the main thread asyncio cannot handle signals: that is logged
        at debug level and the service runs without them (the embedding
        program sets ``stop`` itself).
        """
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        wanted = [*STOP_SIGNALS, signal.SIGHUP] if reload else list(STOP_SIGNALS)
        for signum in wanted:
            handler = self._on_reload if signum == signal.SIGHUP else self._on_stop
            try:
                self._loop.add_signal_handler(signum, handler, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                log.debug("%s: cannot handle %s here (not the main thread)", self.name, signal.Signals(signum).name)
                continue
            self._installed.append(signum)
        return self

    def uninstall(self) -> None:
        if self._loop is not None:
            for signum in self._installed:
                self._loop.remove_signal_handler(signum)
        self._installed.clear()

    def request_stop(self) -> None:
        """What the first stop signal does, for callers that stop the service themselves."""
        self.stop.set()

    def _on_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info("%s: %s: %s (again to stop now)", self.name, name, self.draining)
            self.stop.set()
            return
        log.warning("%s: second %s: stopping now", self.name, name)
        self.forced = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        backstop = threading.Timer(self.force_exit_after_s, _exit_now)
        backstop.daemon = True
        backstop.start()

    def _on_reload(self, signum: int) -> None:
        if self.stop.is_set():
            log.info("%s: SIGHUP while stopping: not reloading", self.name)
            return
        if self.on_reload is None:
            log.info("%s: SIGHUP: nothing to reload in this service", self.name)
            return
        self.reloads += 1
        log.info("%s: SIGHUP: reloading the configuration", self.name)
        try:
            self.on_reload()
        except Exception as error:  # a broken reload keeps the running configuration
            log.error("%s: reload failed, keeping the running configuration: %s", self.name, error)


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_FORCED)


def run_service(
    main: Callable[[ShutdownSignals], Awaitable[int | None]],
    name: str = "strandwatch",
    draining: str = "draining and flushing, then stopping",
    force_exit_after_s: float = 5.0,
) -> int:
    """Run ``main(signals)`` on a fresh event loop with the handlers installed; its exit status.

    ``main`` watches ``signals.stop`` and returns once it has drained; it may
    set ``signals.on_reload``. A second stop signal ends the process with
    status 130 at once, flushing stdout and stderr but nothing else.
    """

    async def supervised() -> int:
        signals = ShutdownSignals(name, draining, force_exit_after_s=force_exit_after_s).install()
        try:
            status = await main(signals)
        except asyncio.CancelledError:
            if signals.forced:
                raise ForcedExit(f"{name}: stopped by a second signal") from None
            raise
        finally:
            signals.uninstall()
        if signals.forced:
            raise ForcedExit(f"{name}: stopped by a second signal")
        return int(status or 0)

    loop = asyncio.new_event_loop()
    try:
        status = loop.run_until_complete(supervised())
    except ForcedExit:
        logging.shutdown()
        _exit_now()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    return status
