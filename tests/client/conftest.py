"""Fixtures for failure scenarios: a server that can restart on its port, a fault proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from realtime_lab import ServerOptions
from realtime_lab.testing import FaultProxy, RestartableServer

FAST_HEARTBEAT = ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3)


@pytest.fixture
def lab_options() -> ServerOptions:
    return FAST_HEARTBEAT


@pytest.fixture
async def lab(lab_options: ServerOptions) -> AsyncIterator[RestartableServer]:
    async with RestartableServer(lab_options) as srv:
        yield srv


@pytest.fixture
async def proxy(lab: RestartableServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(lab.port) as fault_proxy:
        yield fault_proxy
