"""The observable state of a client: current state, history, listeners and watchers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from realtime_lab.client.states import ClientState, StateChange

log = logging.getLogger("realtime_lab.client")

HISTORY_SIZE = 1000

StateListener = Callable[[StateChange], object]


class StateMachine:
    """Records every transition and tells listeners and ``state_changes()`` watchers."""

    user: str | None
    session: Any

    def __init__(self) -> None:
        self.state = ClientState.IDLE
        self.history: deque[StateChange] = deque(maxlen=HISTORY_SIZE)
        self._listeners: list[StateListener] = []
        self._watchers: list[asyncio.Queue[StateChange | None]] = []
        self._open_event = asyncio.Event()

    def on_state(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(change)`` on every transition; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def state_changes(self) -> AsyncIterator[StateChange]:
        """Yield transitions from now on; ends after ``CLOSED``."""
        queue: asyncio.Queue[StateChange | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while (change := await queue.get()) is not None:
                yield change
                if change.state is ClientState.CLOSED:
                    return
        finally:
            self._watchers.remove(queue)

    def _set_state(self, state: ClientState, **details: Any) -> StateChange:
        change = StateChange(state, self.state, time.monotonic(), **details)
        self.state = state
        self.history.append(change)
        if state is ClientState.OPEN:
            self._open_event.set()
        else:
            self._open_event.clear()
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("state listener %r failed", listener)
        for queue in self._watchers:
            queue.put_nowait(change)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %s: %s", self.user or self.session, change)
        return change
