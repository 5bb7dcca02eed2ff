"""``realtime-lab serve --pusher-app APP_ID:KEY:SECRET`` with the real Pusher SDK."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pusher
import pytest

from realtime_lab.cli import _options, build_parser, main
from realtime_lab.pusher import PusherApp


def test_pusher_app_flags_become_options() -> None:
    args = build_parser().parse_args(["serve", "--pusher-app", "1:key-a:s1",
                                      "--pusher-app", "2:key-b:s2",
                                      "--pusher-webhook", "http://127.0.0.1:9/hook"])
    assert _options(args).pusher_apps == ("1:key-a:s1", "2:key-b:s2")
    assert _options(args).pusher_webhooks == ("http://127.0.0.1:9/hook",)
    assert _options(build_parser().parse_args(["serve"])).pusher_apps == ()


def test_a_malformed_app_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--pusher-app", "1:key-without-secret"]) == 2
    err = capsys.readouterr().err
    assert "APP_ID:KEY:SECRET" in err and "key-without-secret" not in err


def test_serve_answers_the_pusher_sdk_and_stops() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_lab.cli", "serve", "--port", "0",
         "--pusher-app", "77:cli-key:cli-secret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"\(HTTP http://127\.0\.0\.1:(\d+)\)", first)
        assert match, f"unexpected first line: {first!r}"
        second = proc.stdout.readline()
        assert "/app/{key}" in second and "cli-key" in second and "cli-secret" not in second
        app = PusherApp("77", "cli-key", "cli-secret")
        client = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret,
                               host="127.0.0.1", port=int(match.group(1)), ssl=False, timeout=5)
        assert client.channels_info() == {"channels": {}}
        assert client.trigger("news", "hello", {"a": 1}) == {}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
