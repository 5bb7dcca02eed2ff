"""GcFreezer (realtime_lab/gc_freeze.py): freeze at start, after growth; refresh after a halving.

The freeze is process-wide, so every test unfreezes at the end (``GcFreezer.stop``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from realtime_lab import ServerOptions
from realtime_lab.cli import build_parser
from realtime_lab.gc_freeze import GcFreezer
from realtime_lab.server import LabServer


class Count:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_start_freezes_and_later_objects_are_not_frozen(unfrozen: None) -> None:
    count = Count()
    freezer = GcFreezer(count)
    freezer.start()
    frozen = gc.get_freeze_count()
    assert frozen > 0 and freezer.freezes == 1
    kept = [[i] for i in range(1000)]  # new tracked objects: young, not frozen
    assert gc.get_freeze_count() == frozen
    freezer.check()  # no growth in connections: nothing happens
    assert freezer.freezes == 1 and gc.get_freeze_count() == frozen
    freezer.stop()
    assert gc.get_freeze_count() == 0 and not freezer.active
    del kept


def test_growth_by_a_quarter_freezes_again(unfrozen: None) -> None:
    count = Count()
    count.n = 1000
    freezer = GcFreezer(count)
    freezer.start()
    count.n = 1200  # +20 %: not yet
    freezer.check()
    assert freezer.freezes == 1
    kept = [[i] for i in range(1000)]
    before = gc.get_freeze_count()
    count.n = 1250
    freezer.check()
    assert freezer.freezes == 2 and freezer.frozen_at == 1250
    assert gc.get_freeze_count() >= before + 1000  # the new objects are frozen now
    freezer.stop()
    del kept


def test_small_counts_need_at_least_the_floor_of_growth(unfrozen: None) -> None:
    count = Count()
    freezer = GcFreezer(count)
    freezer.start()
    count.n = 99
    freezer.check()
    assert freezer.freezes == 1
    count.n = 100
    freezer.check()
    assert freezer.freezes == 2
    freezer.stop()


def test_a_halving_unfreezes_collects_cycles_and_freezes_again(unfrozen: None) -> None:
    count = Count()
    count.n = 1000
    freezer = GcFreezer(count)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    freezer.start()  # the cycle is alive: frozen
    del a, b  # now garbage, but frozen: a collection does not see it
    assert not any(type(o) is Node for o in gc.garbage)
    assert sum(1 for o in gc.get_objects() if type(o) is Node) == 0  # frozen are not listed
    count.n = 400
    freezer.check()
    assert freezer.refreshes == 1 and freezer.frozen_at == 400
    gc.unfreeze()
    assert sum(1 for o in gc.get_objects() if type(o) is Node) == 0  # collected by the refresh
    freezer.stop()


def test_check_does_nothing_when_not_started(unfrozen: None) -> None:
    count = Count()
    count.n = 10_000
    freezer = GcFreezer(count)
    freezer.check()
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0


def test_option_default_off_and_cli_flag() -> None:
    assert ServerOptions().gc_freeze is False
    parser = build_parser()
    assert parser.parse_args(["serve"]).gc_freeze is False
    assert parser.parse_args(["serve", "--gc-freeze"]).gc_freeze is True


async def test_server_freezes_while_running_and_unfreezes_on_stop(unfrozen: None) -> None:
    server = LabServer(ServerOptions(gc_freeze=True))
    await server.start()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        await server.stop()
    assert gc.get_freeze_count() == 0


async def test_server_without_the_option_does_not_freeze(unfrozen: None) -> None:
    server = LabServer(ServerOptions())
    await server.start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await server.stop()
