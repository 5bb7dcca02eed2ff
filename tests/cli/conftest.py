"""A real ``python -m realtime_lab`` process for the command-line tests."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

URL_LINE = re.compile(r"(ws://127\.0\.0\.1:\d+/ws) \(HTTP (http://127\.0\.0\.1:\d+)\)")


class CliProcess:
    """``python -m realtime_lab ARGS`` with pipes; ``start()`` waits for its URL line."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime_lab", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, env=env)
        self.output = ""  # stdout read so far
        self.ws_url = self.http_url = ""

    def read_until(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read stdout until ``pattern`` matches what was read; fail after ``timeout``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        eof = False
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (match := pattern.search(self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or eof:
                    self.proc.poll()
                    raise AssertionError(f"no {pattern.pattern!r} within {timeout} s; "
                                         f"exit={self.proc.returncode} stdout={self.output!r} "
                                         f"stderr={self.stderr_if_exited()!r}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    eof = not chunk
                    self.output += chunk.decode(errors="replace")
        return match

    def start(self, timeout: float = 60.0) -> CliProcess:
        match = self.read_until(URL_LINE, timeout)
        self.ws_url, self.http_url = match.group(1), match.group(2)
        return self

    def all_output(self) -> str:
        """Everything the process wrote to stdout (it must have exited)."""
        assert self.proc.stdout is not None and self.proc.poll() is not None
        self.output += self.proc.stdout.read().decode(errors="replace")
        return self.output

    def stderr_if_exited(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def cli_process() -> Iterator[type[CliProcess]]:
    """``cli_process("serve", "--port", "0").start()``; every process is killed at the end."""
    started: list[CliProcess] = []

    class Tracked(CliProcess):
        def __init__(self, *args: str, cwd: Path | None = None) -> None:
            super().__init__(*args, cwd=cwd)
            started.append(self)

    yield Tracked
    for p in started:
        p.stop()
