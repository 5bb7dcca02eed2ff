"""The command line: options map onto ServerOptions, and `serve` runs and stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from realtime_lab.cli import _options, build_parser, main


def test_serve_flags_become_server_options() -> None:
    args = build_parser().parse_args([
        "serve", "--port", "0", "--allowed-origin", "https://a.example",
        "--allowed-origin", "https://*.b.example", "--token-secret", "s3cret",
        "--max-connections", "10", "--max-connections-per-ip", "3", "--idle-timeout", "30",
        "--no-client-publish", "--api-token", "tok",
    ])
    opts = _options(args)
    assert opts.allowed_origins == ("https://a.example", "https://*.b.example")
    assert opts.token_secret == "s3cret"
    assert (opts.max_connections, opts.max_connections_per_ip) == (10, 3)
    assert opts.idle_timeout == 30 and not opts.client_publish and opts.api_token == "tok"


def test_bad_option_combination_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--certfile", "cert.pem"]) == 2
    assert "certfile and keyfile go together" in capsys.readouterr().err


def test_serve_runs_answers_health_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_lab.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the process prints its URL once it listens
        match = re.search(r"\(HTTP (http://127\.0\.0\.1:\d+)\)", line)
        assert match, f"unexpected first line: {line!r}"
        with urllib.request.urlopen(match.group(1) + "/health", timeout=10) as resp:
            assert json.load(resp)["status"] == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
