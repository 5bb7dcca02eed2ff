"""Bad static paths are refused with a 4xx, quietly: no 500, no ERROR traceback (issue 13, 9).

``/static/%00`` used to reach ``os.path.realpath`` with a NUL byte inside
Tornado's StaticFileHandler: a ``ValueError``, answered 500 with an ERROR
traceback per request, so any client could fill the log.
"""

from __future__ import annotations

import logging

import pytest
from tornado.httpclient import AsyncHTTPClient

from realtime_lab import LabServer

BAD_PATHS = [
    "/static/%00",
    "/static/a%00b",
    "/static/realtime-lab.js%00.png",
    "/static/%00/../realtime-lab.js",
    "/static/%ff",
    "/static/%c0%ae%c0%ae/",
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e",
    "/static/" + "a" * 5000,
    "/static/x\\..\\y",
    "/static/",
    "/static/%01%02%7f",
    "/%00",
    "/api/channels/%00",
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_bad_static_path_is_refused_quietly(server: LabServer, path: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    response = await AsyncHTTPClient().fetch(server.http_url + path, raise_error=False,
                                             request_timeout=5)
    assert response.code in (400, 403, 404), (path, response.code)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


async def test_good_static_file_still_served(server: LabServer) -> None:
    response = await AsyncHTTPClient().fetch(server.http_url + "/static/realtime-lab.js",
                                             request_timeout=5)
    assert response.code == 200 and b"WebSocket" in response.body
