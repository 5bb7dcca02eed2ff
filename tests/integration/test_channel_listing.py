"""Channels that need authorization are not listed to anonymous HTTP requests (issue 13, 8).

With ``token_secret`` set, ``GET /api/channels`` and ``GET /api/channels/{name}``
used to show ``private-*`` and ``presence-*`` names, counts and metadata to anyone.
They are now seen only by requests carrying ``Authorization: Bearer <api_token>``;
to others such a channel does not exist (left out of lists, 404 alone).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

import realtime_lab
from realtime_lab import LabServer, ServerOptions, sign_channel_token
from realtime_lab.broker import InMemoryBus
from realtime_lab.core.security import make_token

SECRET = "connect-secret"
API = "api-token"
CHANNELS = ["lobby", "presence-room", "private-deals"]


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(token_secret=SECRET, api_token=API)


async def get(server: LabServer, path: str, token: str | None = None) -> HTTPResponse:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await AsyncHTTPClient().fetch(server.http_url + path, headers=headers,
                                         raise_error=False, request_timeout=5)


def names(response: HTTPResponse) -> list[str]:
    assert response.code == 200, response.body
    return [c["name"] for c in json.loads(response.body)["channels"]]


async def subscribe_all(server: LabServer) -> Any:
    client = await realtime_lab.connect(server.url + "?token=" + make_token(SECRET, "ada"))
    for name in CHANNELS:
        auth = (lambda session, channel: sign_channel_token(SECRET, session, channel)
                ) if name != "lobby" else None
        await client.subscribe(name, auth=auth)
    server.set_channel_metadata("private-deals", {"owner": "ada"})
    return client


async def test_private_channels_are_hidden_without_the_api_token(server: LabServer) -> None:
    client = await subscribe_all(server)
    try:
        assert names(await get(server, "/api/channels")) == ["lobby"]
        assert names(await get(server, "/api/channels", token="wrong")) == ["lobby"]
        assert names(await get(server, "/api/channels", token=API)) == sorted(CHANNELS)
        for name in ("presence-room", "private-deals"):
            hidden = await get(server, f"/api/channels/{name}")
            assert hidden.code == 404, hidden.body  # the same answer as for no channel at all
            assert json.loads(hidden.body) == {"error": "not_found",
                                               "message": f"no channel {name!r}"}
            shown = await get(server, f"/api/channels/{name}", token=API)
            assert shown.code == 200 and json.loads(shown.body)["name"] == name
        info = json.loads((await get(server, "/api/channels/private-deals", token=API)).body)
        assert info["metadata"] == {"owner": "ada"}
        assert (await get(server, "/api/channels/lobby")).code == 200
    finally:
        await client.close()


async def test_cluster_view_hides_private_channels_without_the_api_token() -> None:
    server = await realtime_lab.serve(port=0, broker=InMemoryBus(), token_secret=SECRET,
                                      api_token=API)
    client = await subscribe_all(server)
    try:
        assert names(await get(server, "/api/channels")) == ["lobby"]
        assert names(await get(server, "/api/channels", token=API)) == sorted(CHANNELS)
        cluster = json.loads((await get(server, "/api/cluster")).body)
        assert cluster["channels"] == ["lobby"]
        cluster = json.loads((await get(server, "/api/cluster", token=API)).body)
        assert cluster["channels"] == sorted(CHANNELS)
    finally:
        await client.close()
        await server.stop()
