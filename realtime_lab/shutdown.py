"""Graceful stop on SIGTERM and SIGINT, for the command line.

A container runtime, systemd and ``kill`` send SIGTERM; Ctrl-C sends SIGINT.
Both should end ``realtime-lab serve`` the same way: stop listening, close every
client with 1001 (going away), write what was recorded, exit with status 0.
Python's default SIGTERM action ends the process at once (clients see the TCP
connection drop, 1006), so the command line turns both signals into an
:class:`asyncio.Event` the main coroutine waits on.

A second signal while the graceful stop runs cancels the main task: the stop is
cut short (``ShutdownSignals.forced``) rather than ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import TracebackType

log = logging.getLogger("realtime_lab.shutdown")

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """SIGTERM and SIGINT as an event, while the ``with`` block runs on the event loop.

    ``async with ShutdownSignals() as shutdown: ... await shutdown.wait()``. The
    handlers are the loop's own (``loop.add_signal_handler``); where the loop has
    none (Windows) nothing is installed and Ctrl-C keeps raising
    KeyboardInterrupt, which ``asyncio.run`` turns into a cancellation.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None  # the first stop signal
        self.forced = False  # a second signal cancelled the main task
        self._event = asyncio.Event()
        self._installed: list[signal.Signals] = []
        self._task: asyncio.Task[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def event(self) -> asyncio.Event:
        """Set by the first stop signal."""
        return self._event

    async def wait(self) -> signal.Signals | None:
        """Wait for the first stop signal and return it."""
        await self._event.wait()
        return self.received

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
            log.info("%s received: stopping (send it again to stop at once)", sig.name)
            self._event.set()
        elif self._task is not None and self._loop is not None and not self.forced:
            self.forced = True
            log.warning("%s received again: stopping without waiting", sig.name)
            # call_soon: after the wake-up the first signal scheduled, so the cancel
            # lands inside the graceful stop rather than before it starts
            self._loop.call_soon(self._task.cancel)

    async def __aenter__(self) -> ShutdownSignals:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in self.signals:
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # no loop signal handlers here
                continue
            self._installed.append(sig)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._loop is not None
        for sig in self._installed:
            with contextlib.suppress(RuntimeError):
                self._loop.remove_signal_handler(sig)
        self._installed.clear()
