"""Experiment controls for the dashboard: simulated clients, network faults, a restart.

The buttons drive a :class:`~realtime_lab.testing.Crowd` (reconnecting lab clients
behind a :class:`~realtime_lab.testing.FaultProxy`) and the server itself, so a
teacher can start a class of clients, cut every connection (a reconnect storm),
stall them (half-open connections, found by the heartbeat), slow their network
(queues grow, slow consumers are closed) or restart the server (1001, everyone
comes back) and watch the charts react. Every button has a coroutine behind it
(``await controls.cut()``...) that lessons and tests call directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any, Protocol

from realtime_lab.errors import require
from realtime_lab.testing.crowd import Crowd

widgets: Any = require("ipywidgets", "notebook")

SLOW_BANDWIDTH = 2000  # bytes per second per connection


class Restartable(Protocol):
    """What the controls need of a server (a LabServer): its port, and a restart."""

    @property
    def port(self) -> int: ...

    async def restart(self) -> object: ...


class Controls(widgets.VBox):  # type: ignore[misc]
    """Buttons and their coroutines: add/stop clients, cut, stall, slow, delay, restart.

    Args:
        server: the running LabServer.
        crowd: the simulated clients to drive (a new :class:`Crowd` by default).
        step: clients added by the "+ clients" button.
    """

    def __init__(self, server: Restartable, *, crowd: Crowd | None = None, step: int = 10) -> None:
        self.server = server
        self.crowd = crowd or Crowd(server)
        self.step = step
        self.actions: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.status = widgets.HTML()
        self.status.add_class("rtl-controls-status")
        buttons = [
            self._button(f"+{step} clients", "add", lambda: self.add(step), "success"),
            self._button("stop clients", "stop", self.stop_clients, ""),
            self._button("cut all", "cut", self.cut, "danger"),
            self._button("stall", "stall", self.stall, "warning"),
            self._button("resume", "resume", self.resume, ""),
            self._button("slow link", "slow", self.slow, "warning"),
            self._button("restart server", "restart", self.restart, "danger"),
        ]
        self.delay = widgets.IntSlider(value=0, min=0, max=500, step=50,
                                       description="delay ms", continuous_update=False)
        self.delay.observe(lambda change: self._launch("delay", lambda: self.set_delay(
            change["new"] / 1000)), names="value")
        super().__init__([widgets.HBox(buttons), widgets.HBox([self.delay, self.status])])
        self.add_class("rtl-controls")
        self.update_status()

    def _button(self, label: str, key: str, action: Callable[[], Awaitable[Any]],
                style: str) -> Any:
        button = widgets.Button(description=label, button_style=style,
                                layout=widgets.Layout(width="auto"))
        button.add_class(f"rtl-control-{key}")
        button.on_click(lambda _: self._launch(key, action))
        return button

    def _launch(self, key: str, action: Callable[[], Awaitable[Any]]) -> None:
        """Run a button's coroutine on the kernel's loop; failures go to the status line."""
        async def run() -> None:
            try:
                await action()
            except Exception as exc:  # noqa: BLE001 - shown to the user, not raised
                self.update_status(f"{key} failed: {type(exc).__name__}: {exc}")

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:
            self.update_status(f"{key}: no running event loop")
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ actions

    async def add(self, n: int = 10) -> None:
        """Start ``n`` more simulated clients (connected and subscribed on return)."""
        self._did(f"+{n} clients")
        await self.crowd.start(n)
        self.update_status()

    async def stop_clients(self) -> None:
        """Close every simulated client (their presence leaves; the proxy closes)."""
        self._did("stop clients")
        await self.crowd.stop()
        self.update_status()

    async def cut(self) -> int:
        """Cut every connection through the proxy: a reconnect storm. Returns how many."""
        self._did("cut")
        cut = self.crowd.proxy.cut() if self.crowd.proxy is not None else 0
        self.update_status()
        return cut

    async def stall(self) -> None:
        """Forward nothing, close nothing: half-open connections the heartbeat will find."""
        self._did("stall")
        if self.crowd.proxy is not None:
            self.crowd.proxy.stall()
        self.update_status()

    async def resume(self) -> None:
        """Undo stall, slow link and delay (stalled connections are cut: they were dead)."""
        self._did("resume")
        proxy = self.crowd.proxy
        if proxy is not None:
            proxy.resume()
            proxy.bandwidth = None
            proxy.delay = 0.0
        self.update_status()

    async def slow(self, bandwidth: float = SLOW_BANDWIDTH) -> None:
        """Limit every proxied connection to ``bandwidth`` bytes/s (a slow consumer)."""
        self._did(f"slow link {bandwidth:g} B/s")
        if self.crowd.proxy is not None:
            self.crowd.proxy.bandwidth = bandwidth
        self.update_status()

    async def set_delay(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every chunk, both ways."""
        self._did(f"delay {seconds * 1000:.0f} ms")
        if self.crowd.proxy is not None:
            self.crowd.proxy.delay = seconds
        self.update_status()

    async def restart(self) -> None:
        """Restart the server on the same port: clients get 1001 and come back."""
        self._did("restart")
        await self.server.restart()
        self.update_status()

    def _did(self, what: str) -> None:
        self.actions.append(what)

    def update_status(self, message: str = "") -> None:
        info = self.crowd.describe()
        proxy = info["proxy"] or {}
        flags = [name for name, on in (("stalled", proxy.get("stalled")),
                                       ("slow", proxy.get("bandwidth"))) if on]
        text = (f"{info['clients']} clients, {info['open']} open, {info['reconnects']} "
                f"reconnects{'; ' + ', '.join(flags) if flags else ''}")
        if message:
            text += f" — {message}"
        self.status.value = f'<span class="rtl-controls-text">{escape(text)}</span>'

    async def aclose(self) -> None:
        """Stop the simulated clients and any action still running."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.crowd.stop()
