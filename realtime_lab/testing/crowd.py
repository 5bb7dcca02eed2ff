"""A crowd of simulated clients for lessons and the dashboard's controls.

``crowd = await Crowd(server).start(20)`` connects 20 reconnecting lab clients
to ``server`` through a :class:`~realtime_lab.testing.FaultProxy` (so the crowd's
connections can be cut, stalled or slowed), subscribes them to one presence
channel, and keeps some traffic going: ``rate`` publishes per second from random
members and, every ``state_every`` seconds, one member changes its presence
state. Everything runs on the current event loop (the kernel's, in a notebook)::

    crowd.proxy.cut()            # a reconnect storm: every client reconnects
    crowd.proxy.bandwidth = 500  # a slow network: queues grow, slow consumers
    await server.restart()       # 1001, then everyone comes back
    await crowd.stop()           # close every client and the proxy

The clients are :class:`realtime_lab.client.Client` objects (``crowd.clients``),
so they report delivery latency to a recording server by themselves (receipts).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, Protocol

from realtime_lab.client import Backoff, Client, ClientState
from realtime_lab.errors import RealtimeLabError
from realtime_lab.testing.fault_proxy import FaultProxy


class Listening(Protocol):
    """What a crowd needs of a server (a LabServer): the port it listens on."""

    @property
    def port(self) -> int: ...

NAMES = ("ada", "bob", "cleo", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea")


class Crowd:
    """Simulated, reconnecting clients of one channel, behind a fault proxy.

    Args:
        server: the running server (its port is the proxy's target across restarts).
        channel: the channel every client joins (presence on by default).
        rate: publishes per second, all clients together (0: none).
        state_every: seconds between presence state changes (0: never).
        states: the presence states to pick from.
        backoff: the clients' reconnect backoff (short, so storms are quick to watch).
        seed: seed of the crowd's random choices and of the clients' jitter.
    """

    def __init__(self, server: Listening, *, channel: str = "classroom", rate: float = 5.0,
                 state_every: float = 2.0, states: tuple[str, ...] = ("online", "away", "busy"),
                 backoff: Backoff | None = None, seed: int = 0) -> None:
        self.server = server
        self.channel = channel
        self.rate = rate
        self.state_every = state_every
        self.states = states
        self.backoff = backoff or Backoff(initial=0.2, factor=2, max_delay=2.0)
        self.rng = random.Random(seed)
        self.seed = seed
        self.clients: list[Client] = []
        self.proxy: FaultProxy | None = None
        self.published = 0
        self._readers: dict[Client, asyncio.Task[None]] = {}
        self._traffic: asyncio.Task[None] | None = None
        self._made = 0

    @property
    def size(self) -> int:
        """Clients in the crowd (open or reconnecting)."""
        return len(self.clients)

    @property
    def open(self) -> int:
        """Clients connected and subscribed right now."""
        return sum(c.state is ClientState.OPEN for c in self.clients)

    @property
    def reconnects(self) -> int:
        """Reconnections after a lost connection, all clients together."""
        return sum(c.reconnects for c in self.clients)

    async def start(self, n: int = 10, *, timeout: float = 30.0) -> Crowd:
        """Add ``n`` clients (connected and subscribed when this returns); return self."""
        if self.proxy is None:
            self.proxy = await FaultProxy(self.server.port).start()
        new = [self._client() for _ in range(n)]
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(self._join(c) for c in new))
        if self._traffic is None or self._traffic.done():
            self._traffic = asyncio.get_running_loop().create_task(self._run())
        return self

    def _client(self) -> Client:
        i = self._made
        self._made += 1
        user = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i // len(NAMES)))
        assert self.proxy is not None
        return Client(self.proxy.url(), user=user, reconnect=True, backoff=self.backoff,
                      seed=self.seed * 100_003 + i, connect_timeout=5)

    async def _join(self, client: Client) -> None:
        await client.connect()
        await client.subscribe(self.channel)
        self.clients.append(client)
        self._readers[client] = asyncio.get_running_loop().create_task(self._read(client))

    async def _read(self, client: Client) -> None:
        """Drain what the client receives (a client that never reads is a slow consumer)."""
        with contextlib.suppress(RealtimeLabError, asyncio.CancelledError):
            async for _ in client:
                pass

    async def stop(self, n: int | None = None) -> int:
        """Close ``n`` clients (all when None; with all, the proxy too); return how many."""
        chosen = self.clients if n is None else self.clients[-n:] if n > 0 else []
        chosen = list(chosen)
        for client in chosen:
            self.clients.remove(client)
            task = self._readers.pop(client, None)
            if task is not None:
                task.cancel()
        await asyncio.gather(*(c.close() for c in chosen), return_exceptions=True)
        if not self.clients:
            if self._traffic is not None:
                self._traffic.cancel()
                self._traffic = None
            if n is None and self.proxy is not None:
                await self.proxy.stop()
                self.proxy = None
        return len(chosen)

    async def wait_open(self, timeout: float = 30.0) -> None:
        """Until every client is connected and subscribed again (after a fault)."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(c.wait_open() for c in list(self.clients)))

    async def _run(self) -> None:
        """Publish ``rate`` messages a second and change a state every ``state_every`` s."""
        loop = asyncio.get_running_loop()
        next_state = loop.time() + self.state_every
        while True:
            await asyncio.sleep(1 / self.rate if self.rate > 0 else 0.5)
            ready = [c for c in self.clients if c.state is ClientState.OPEN]
            if not ready:
                continue
            with contextlib.suppress(RealtimeLabError, OSError):  # a fault mid-send: skip it
                if self.rate > 0:
                    self.published += 1
                    await self.rng.choice(ready).publish(self.channel, {"n": self.published})
                if self.state_every > 0 and loop.time() >= next_state:
                    next_state = loop.time() + self.state_every
                    await self.rng.choice(ready).send(  # no reply awaited: never blocks
                        {"type": "presence", "channel": self.channel,
                         "state": self.rng.choice(self.states)})

    def describe(self) -> dict[str, Any]:
        proxy = self.proxy
        return {"clients": self.size, "open": self.open, "reconnects": self.reconnects,
                "published": self.published,
                "proxy": None if proxy is None else {
                    "stalled": proxy.stalled, "delay": proxy.delay,
                    "bandwidth": proxy.bandwidth, "cuts": proxy.cuts}}
