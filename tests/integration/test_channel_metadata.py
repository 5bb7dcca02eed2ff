"""Channel metadata: counts and a custom dict, from Python, hooks and HTTP; sent on subscribe."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from realtime_lab import LabServer, ServerOptions
from realtime_lab.core import Hub
from realtime_lab.core.hooks import Hooks
from realtime_lab.errors import BadChannel

TOKEN = "meta-token"


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(api_token=TOKEN, subscribe_channel_info=True)


async def fetch(server: LabServer, path: str, **kwargs: Any) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(server.http_url + path, raise_error=False,
                                         request_timeout=5, **kwargs)


async def patch(server: LabServer, name: str, body: Any, token: str = TOKEN) -> HTTPResponse:
    return await fetch(server, f"/api/channels/{name}", method="PATCH", body=json.dumps(body),
                       headers={"Authorization": f"Bearer {token}"})


async def test_get_one_channel_counts_and_metadata(server: LabServer, connect) -> None:
    assert (await fetch(server, "/api/channels/nowhere")).code == 404
    a, b = await connect(user="a"), await connect(user="b")
    await a.subscribe("room")
    await b.subscribe("room")
    server.publish("room", 1)
    server.set_channel_metadata("room", {"topic": "maths"})
    info = json.loads((await fetch(server, "/api/channels/room")).body)
    assert info["subscribers"] == 2 and info["members"] == 2 and info["messages"] == 1
    assert info["metadata"] == {"topic": "maths"} and info["created_at"] > 0


async def test_patch_metadata_and_subscribe_info(server: LabServer, connect) -> None:
    assert (await patch(server, "room", {"metadata": {"x": 1}}, token="wrong")).code == 401
    assert (await patch(server, "room", {"nope": 1})).code == 400
    response = await patch(server, "room", {"metadata": {"topic": "maths", "level": 2}})
    assert response.code == 200 and json.loads(response.body)["metadata"] == {
        "topic": "maths", "level": 2}
    await patch(server, "room", {"metadata": {"level": None}})  # null deletes a key
    client = await connect(user="a")
    reply = await client.subscribe("room")
    assert reply["meta"] == {"topic": "maths"}
    assert reply["info"]["subscribers"] == 1 and reply["info"]["metadata"] == {"topic": "maths"}
    await patch(server, "room", {"metadata": {"new": True}, "replace": True})
    assert server.channel_info("room")["metadata"] == {"new": True}  # type: ignore[index]



@pytest.mark.parametrize("value", ["1e400", "18446744073709551616", '"\\ud800"'])
async def test_patch_metadata_outside_the_data_model_is_400(server: LabServer,
                                                            value: str) -> None:
    """Issue 13: before, 1e400 was stored and the reply (and every subscribe with channel
    info) failed to encode: 500. Now 400 bad_value, and nothing is stored."""
    response = await fetch(server, "/api/channels/room", method="PATCH",
                           body=f'{{"metadata": {{"x": {value}}}}}',
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.code == 400, response.body
    assert json.loads(response.body)["error"] == "bad_value"
    assert server.channel_info("room") is None  # nothing stored


def test_metadata_outlives_the_channel_and_hooks_set_it() -> None:
    hub = Hub(ServerOptions(), hooks=Hooks(on_subscribe=lambda s, ch: {"by": "hook"}))
    assert hub.channel_info("kept") is None
    hub.set_channel_metadata("kept", {"owner": "ada"})
    assert hub.channel_info("kept")["metadata"] == {"owner": "ada"}  # type: ignore[index]
    with pytest.raises(BadChannel):
        hub.set_channel_metadata("bad name", {})
    hub.clear_channel_metadata("kept")
    assert hub.channel_info("kept") is None
