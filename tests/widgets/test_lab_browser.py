"""JupyterLab in Chromium: open lesson 02, run its first cells, watch the dashboard move.

What ``make lab`` gives a newcomer, driven as a person would: JupyterLab serves a
copy of notebooks/02_channels_and_presence.ipynb headless; Chromium (Debian's,
through Playwright) opens it, runs the cells one by one with Shift+Enter up to
the one that brings a class of simulated students, and the dashboard in the
page shows them in its roster and its connections chart. Skipped without
chromium, except in CI (CI=true), where it fails. A screenshot lands in
tests/artifacts/lab-failure.png on failure; ``RTL_UPDATE_SCREENSHOT=1`` saves
docs/img/lesson02-jupyterlab.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .test_dashboard_browser import (
    ROOT,
    chromium,
    chromium_page,
    free_port,
    stop_group,
    wait_for_tcp,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

LESSON = ROOT / "notebooks" / "02_channels_and_presence.ipynb"
TOKEN = "rtl-test-token"


def cells_until(nb: dict[str, object], marker: str) -> int:
    """How many cells, from the top, up to and including the code cell containing ``marker``."""
    cells = nb["cells"]
    assert isinstance(cells, list)
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and marker in "".join(cell["source"]):
            return i + 1
    raise AssertionError(f"no cell with {marker!r} in {LESSON.name}")


#: User settings that keep dialogs from covering the notebook: on a busy machine
#: JupyterLab may open the notebook before it has listed the kernel specs and then asks
#: "Select Kernel" (the preferred kernel starts without asking with autoStartDefaultKernel),
#: and it asks whether to fetch Jupyter news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def write_lab_settings(folder: Path) -> Path:
    for name, values in LAB_SETTINGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """JupyterLab serving a copy of lesson 02; yields (url of the notebook, cells to run)."""
    chromium()
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        message = "JupyterLab is missing: pip install -e '.[test]' (or make lab)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    nb = json.loads(LESSON.read_text())
    for cell in nb["cells"]:  # a fresh notebook, as after "clear all outputs"
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    root = tmp_path / "lessons"
    root.mkdir()
    (root / "lesson.ipynb").write_text(json.dumps(nb))
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())
    env["JUPYTERLAB_SETTINGS_DIR"] = str(write_lab_settings(tmp_path / "lab-settings"))
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "lab-workspaces")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    port = free_port()
    log = (tmp_path / "jupyterlab.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_tcp(port, proc, timeout=120, name="jupyterlab")
        yield (f"http://127.0.0.1:{port}/lab/tree/lesson.ipynb?token={TOKEN}",
               cells_until(nb, "await dash.controls.add(8)"))
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture
async def lab_page(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    async with chromium_page(request, 1400, 900, "lab-failure.png") as page:
        yield page


async def test_lesson_02_in_jupyterlab_shows_the_class_arriving(
        jupyterlab: tuple[str, int], lab_page: object) -> None:
    from playwright.async_api import Page
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    page = lab_page
    assert isinstance(page, Page)
    url, cells = jupyterlab
    await page.goto(url, timeout=120_000)
    await page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # the kernel is up when the toolbar's status says idle
    await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                 timeout=120_000)
    notebook_cells = page.locator(".jp-Notebook .jp-Cell")
    for i in range(cells):  # Shift+Enter on each cell, as a person would
        cell = notebook_cells.nth(i)
        await cell.click()
        await page.keyboard.press("Escape")  # command mode: Shift+Enter runs the cell
        is_code = "jp-CodeCell" in (await cell.get_attribute("class") or "")
        for _attempt in range(3):
            await page.keyboard.press("Shift+Enter")
            if not is_code:
                break
            try:  # queued ([*]) or run ([n]): the kernel took it
                await cell.locator(".jp-InputPrompt").filter(
                    has_text=re.compile(r"\[(\*|\d+)\]")).wait_for(timeout=10_000)
                break
            except PlaywrightTimeout:
                await cell.click()  # a keypress lost while the page was busy: again
                await page.keyboard.press("Escape")
    dashboard = page.locator(".jp-OutputArea .rtl-dashboard")
    await dashboard.wait_for(timeout=60_000)
    # the class arrives: eight members in the roster, and the connections chart rises
    await page.wait_for_function(
        "() => document.querySelectorAll('.rtl-dashboard .rtl-presence "
        ".rtl-member[data-channel=\"classroom\"]').length === 8", timeout=60_000, polling=100)
    await page.wait_for_function(
        "() => Number(document.querySelector(\".rtl-dashboard svg[data-chart='connections']\")"
        ".dataset.last) >= 8", timeout=10_000, polling=100)
    # and it keeps moving by itself (the crowd chats): the throughput chart changes
    chart = page.locator(".rtl-dashboard svg[data-chart='throughput']")
    before = await chart.get_attribute("data-points")
    await page.wait_for_function(
        "(before) => document.querySelector(\".rtl-dashboard svg[data-chart='throughput']\")"
        ".dataset.points !== before", arg=before, timeout=5_000, polling=100)
    if os.environ.get("RTL_UPDATE_SCREENSHOT"):
        no_news = page.get_by_role("button", name="No", exact=True)
        if await no_news.count():
            await no_news.first.click()
        await page.keyboard.press("Control+b")  # hide the file browser
        await page.wait_for_timeout(3000)  # a few seconds of chart
        await dashboard.evaluate("e => e.scrollIntoView({block: 'start'})")
        await page.evaluate("window.scrollBy(0, -120)")
        await page.locator(".jp-WindowedPanel-outer").first.evaluate(
            "e => e.scrollBy(0, -140)")
        await page.screenshot(path=str(ROOT / "docs" / "img" / "lesson02-jupyterlab.png"))
