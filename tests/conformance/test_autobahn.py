"""Autobahn WebSocket conformance cases (through kosoku) against realtime_lab's /echo.

``make test`` runs groups 1-10 and cases 12.x.1-5 and 13.x.1-5 (permessage-deflate),
about a minute. ``make conformance`` (``RTL_CONFORMANCE=full``) runs all of 12 and 13.
No case may end FAILED (or ERROR); NON-STRICT and INFORMATIONAL are allowed and
counted. Verdict counts are printed and written to the report directory.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
from pathlib import Path

import pytest

import realtime_lab

pytest.importorskip("kosoku")

RUNNER = Path(__file__).with_name("kosoku_run.py")
BAD = {"FAILED", "ERROR", "WRONG CODE", "UNCLEAN"}


def case_ids(full: bool) -> list[str]:
    from kosoku.cases import CASES

    ids = [c for c in CASES if int(c.split(".")[0]) <= 10]
    for case in CASES:
        major, minor, number = (case.split(".") + ["0", "0"])[:3]
        if major in ("12", "13") and (full or int(number) <= 5):
            ids.append(case)
    return ids


async def run_kosoku(url: str, ids: list[str], outdir: Path, parallel: int) -> dict[str, dict]:
    args = [str(RUNNER), url, "-o", str(outdir), "-p", str(parallel)]
    for case in ids:
        args += ["-i", case]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    index = outdir / "index.json"
    assert index.exists(), out.decode(errors="replace")[-2000:]
    results: dict[str, dict] = {}
    for cases in json.loads(index.read_text()).values():
        results.update(cases)
    return results


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_autobahn_cases(tmp_path: Path) -> None:
    full = os.environ.get("RTL_CONFORMANCE") == "full"
    ids = case_ids(full)
    outdir = Path(os.environ.get("RTL_CONFORMANCE_DIR", tmp_path / "autobahn"))
    server = await realtime_lab.serve(port=0, conformance_echo=True)
    try:
        url = server.url.replace("/ws", "/echo")
        results = await run_kosoku(url, ids, outdir, parallel=2 if full else 1)
    finally:
        await server.stop()
    assert set(results) == set(ids)
    counts = collections.Counter(r["behavior"] for r in results.values())
    closes = collections.Counter(r["behaviorClose"] for r in results.values())
    summary = {"cases": len(results), "behavior": dict(counts), "behaviorClose": dict(closes),
               "not_ok": {c: [r["behavior"], r["behaviorClose"], r["remoteCloseCode"]]
                          for c, r in sorted(results.items())
                          if r["behavior"] != "OK" or r["behaviorClose"] != "OK"}}
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nAutobahn ({'full 12/13' if full else '1-10 + 12/13 sample'}): {summary}")
    bad = {c: v for c, v in summary["not_ok"].items() if v[0] in BAD or v[1] in BAD}
    assert not bad, bad


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_autobahn_cases_over_http2(tmp_path: Path) -> None:
    """The same cases through an RFC 6455-to-RFC 8441 bridge (h2_bridge.py): each client
    is an extended CONNECT stream of an h2c connection to the server's /echo."""
    from .h2_bridge import Bridge

    full = os.environ.get("RTL_CONFORMANCE") == "full"
    ids = case_ids(full)
    outdir = Path(os.environ.get("RTL_CONFORMANCE_DIR", tmp_path / "autobahn")) / "http2"
    server = await realtime_lab.serve(port=0, conformance_echo=True, http2=True)
    bridge = Bridge("127.0.0.1", server.port)
    try:
        port = await bridge.start()
        results = await run_kosoku(f"ws://127.0.0.1:{port}/echo", ids, outdir,
                                   parallel=2 if full else 1)
    finally:
        await bridge.stop()
        await server.stop()
    assert set(results) == set(ids)
    counts = collections.Counter(r["behavior"] for r in results.values())
    not_ok = {c: [r["behavior"], r["behaviorClose"], r["remoteCloseCode"]]
              for c, r in sorted(results.items())
              if r["behavior"] != "OK" or r["behaviorClose"] != "OK"}
    print(f"\nAutobahn over HTTP/2: {len(results)} cases, {dict(counts)}, not OK: {not_ok}")
    bad = {c: v for c, v in not_ok.items() if v[0] in BAD or v[1] in BAD}
    assert not bad, bad
