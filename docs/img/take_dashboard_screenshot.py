"""Retake docs/img/dashboard.png: a real dashboard in Voila, in Debian's Chromium.

    .venv/bin/python docs/img/take_dashboard_screenshot.py [--seconds 70]

Voila runs a notebook that starts a server, records it and shows its dashboard;
this script clicks "+10 clients" three times (a crowd of 30 that publishes 20
messages a second and changes presence states), cuts every connection half-way
(a reconnect storm the charts and the event log show), lets the charts fill their
60 s window, and saves the whole dashboard as one picture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img" / "dashboard.png"
CELLS = [
    "import realtime_lab\n"
    "server = await realtime_lab.serve(port=0)\n"
    "rec = server.record()  # the latency chart: the lab clients' receipts\n"
    "dash = server.dashboard(interval=0.5)\n"
    "dash.controls.crowd.rate = 20  # publishes per second, the whole crowd\n"
    "dash.controls.crowd.state_every = 1.0",
    "dash",
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_voila(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [],
                     "execution_count": None, "source": src} for i, src in enumerate(CELLS)]}
    (folder / "dashboard.ipynb").write_text(json.dumps(nb))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(folder / name.lower())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "dashboard.ipynb", "--no-browser",
         "--Voila.ip=127.0.0.1", f"--port={port}"],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("voila did not start within 60 s")


async def shoot(port: int, seconds: float) -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is missing: apt-get install chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1800})
        await page.goto(f"http://127.0.0.1:{port}/", timeout=90_000)
        await page.wait_for_selector(".rtl-dashboard .rtl-controls", timeout=90_000)
        for size in (10, 20, 30):
            await page.click(".rtl-control-add")
            await page.locator(".rtl-controls-status").filter(
                has_text=f"{size} clients, {size} open").wait_for(timeout=30_000)
        await page.wait_for_timeout(seconds / 2 * 1000)
        await page.click(".rtl-control-cut")  # a reconnect storm half-way
        await page.wait_for_timeout(seconds / 2 * 1000)
        await page.locator(".rtl-dashboard").screenshot(path=str(OUT))
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=70.0,
                        help="seconds of traffic before the picture (default 70)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        proc, port = start_voila(Path(folder))
        try:
            asyncio.run(shoot(port, args.seconds))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
