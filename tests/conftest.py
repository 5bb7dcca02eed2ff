"""Shared fixtures: a server on 127.0.0.1 port 0 and a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import realtime_lab
from realtime_lab import Client, LabServer, ServerOptions


@pytest.fixture
def options() -> ServerOptions:
    """Override in a test module to start the server with other options."""
    return ServerOptions()


@pytest.fixture
async def server(options: ServerOptions) -> AsyncIterator[LabServer]:
    srv = await realtime_lab.serve(port=0, options=options)
    try:
        yield srv
    finally:
        await srv.stop()


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect(server: LabServer) -> AsyncIterator[ClientFactory]:
    """``await connect(user="ada")`` opens a client to the test server; all close at the end."""
    clients: list[Client] = []

    async def factory(**kwargs: object) -> Client:
        client = await realtime_lab.connect(server.url, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
