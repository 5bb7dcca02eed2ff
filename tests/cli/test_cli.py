"""The command line: options map onto ServerOptions, and `serve` runs and stops cleanly."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

import realtime_lab
from realtime_lab.cli import _options, build_parser, main


def test_serve_flags_become_server_options() -> None:
    args = build_parser().parse_args([
        "serve", "--port", "0", "--allowed-origin", "https://a.example",
        "--allowed-origin", "https://*.b.example", "--token-secret", "s3cret",
        "--max-connections", "10", "--max-connections-per-ip", "3", "--idle-timeout", "30",
        "--no-client-publish", "--api-token", "tok", "--metrics",
    ])
    opts = _options(args)
    assert opts.allowed_origins == ("https://a.example", "https://*.b.example")
    assert opts.token_secret == "s3cret"
    assert (opts.max_connections, opts.max_connections_per_ip) == (10, 3)
    assert opts.idle_timeout == 30 and not opts.client_publish and opts.api_token == "tok"
    assert opts.metrics and not _options(build_parser().parse_args(["serve"])).metrics


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


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"realtime-lab {realtime_lab.__version__} (tornado ")


def test_python_dash_m_realtime_lab_is_the_same_command() -> None:
    done = subprocess.run([sys.executable, "-m", "realtime_lab", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"realtime-lab {realtime_lab.__version__} ")
    done = subprocess.run([sys.executable, "-m", "realtime_lab", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: python -m realtime_lab serve" in done.stdout


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = subparsers(parser)
    assert set(commands) == {"serve", "demo"}
    for name, p in [("realtime-lab", parser), *commands.items()]:
        for action in p._actions:
            if action.option_strings:
                assert action.help and action.help != argparse.SUPPRESS, (
                    f"{name} {'/'.join(action.option_strings)} has no help text")


def test_help_texts_are_plain_text() -> None:
    parser = build_parser()
    for p in [parser, *subparsers(parser).values()]:
        text = p.format_help()
        assert "`" not in text, f"reStructuredText or Markdown in --help:\n{text}"
        assert p.description and p.description.strip()


def test_metrics_without_prometheus_client_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    assert main(["serve", "--port", "0", "--metrics"]) == 2
    assert "pip install 'realtime_lab[prometheus]'" in capsys.readouterr().err


def test_edge_flags_become_server_options() -> None:
    """The limits on what enters at the edge (issue 13) have flags."""
    defaults = _options(build_parser().parse_args(["serve"]))
    assert (defaults.handshake_timeout, defaults.http_body_timeout,
            defaults.max_http_header_bytes) == (10.0, 10.0, 65536)
    assert defaults.allowed_hosts is None and defaults.max_message_fragments == 65536
    assert defaults.close_flush_timeout == 10.0
    opts = _options(build_parser().parse_args([
        "serve", "--handshake-timeout", "3", "--http-body-timeout", "4.5",
        "--max-http-header-bytes", "8192", "--allowed-host", "rt.example.com",
        "--allowed-host", "*.example.org", "--max-message-fragments", "100",
        "--close-flush-timeout", "2.5",
    ]))
    assert opts.close_flush_timeout == 2.5
    assert opts.max_message_fragments == 100
    assert opts.allowed_hosts == ("rt.example.com", "*.example.org")
    assert (opts.handshake_timeout, opts.http_body_timeout,
            opts.max_http_header_bytes) == (3.0, 4.5, 8192)
