"""Presence diffs merged per channel over a short window: one diff per channel per window.

Without batching a join storm of N members costs N*(N-1)/2 frames: every join goes
to every member already there, at once. :class:`PresenceBatcher` collects the
``presence_diff`` messages of each channel for ``presence_batch_window`` seconds
(50 ms by default) and sends one merged diff per channel when the window ends,
so the storm costs about one frame per member per window (docs/presence.md,
"Cost model"). A window of 0, or a hub no scheduler drives (unit tests), sends
each diff at once, as before.

A merged diff says where each member it names ended the window, absolutely (its
whole info in ``joins``, or its entry in ``leaves``), so applying it with the usual
rule (remove ``leaves``, then put ``joins``) gives the server's list whatever the
client already had:

* joined in the window: a join (no ``changed`` entry);
* joined and left in the window: nothing; but a leave when a member list (a
  ``presence_state`` or a page, :meth:`PresenceBatcher.synced`) went out in between,
  since its receiver may list the member: never a phantom member;
* there before and changed: its info in ``joins`` and the fields in ``changed``
  (every field that changed in the window; one that changed back is listed too);
* left and came back in the window: an update (like a reconnect within the grace
  period), ``changed`` naming every field the rejoin may have changed;
* there before and gone: a leave with the reason of its last leave.

A window's diff larger than ``max_bytes`` (``ServerOptions.page_bytes``, 64 KiB)
goes as several diffs of about that size, each member in one of them, so that a
storm of members with metadata never makes one frame near the slow-consumer bound.

The batcher knows nothing of channels or sessions: the hub gives it ``send`` (one
diff to a channel's local subscribers) and a :class:`~realtime_lab.core.ports.Scheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from realtime_lab.protocol import codec, messages

if TYPE_CHECKING:
    from realtime_lab.core.ports import Scheduler, Timer
    from realtime_lab.core.session import Session

#: ``send(channel, diff, exclude, text)``: one ``presence_diff`` to a channel's local
#: subscribers (``text``: its JSON when already encoded, else None).
#: A member's entry in a diff (its info, or a leave with its reason), as on the wire.
MemberInfo = dict[str, object]
SendDiff = Callable[[str, dict[str, object], "Session | None", "str | None"], None]

#: The fields a rejoin may change, with exact counts on the wire and without them.
REJOIN_FIELDS = ("connections", "state", "meta")
REJOIN_FIELDS_MINIMAL = ("state", "meta")



def _section(diff: dict[str, object], key: str) -> dict[str, MemberInfo]:
    """``diff[key]`` (``joins`` or ``leaves``: user -> entry), empty when absent."""
    return cast("dict[str, MemberInfo]", diff.get(key) or {})


@dataclass(slots=True)
class _Member:
    """One member's changes in the current window."""

    before: bool  # listed when the window began
    sync: int  # the channel's member lists sent when this entry was made
    info: MemberInfo | None = None  # its info now; None: not a member now
    leave: MemberInfo | None = None  # its last leave entry (with the reason)
    changed: set[str] = field(default_factory=set)
    rejoined: bool = False  # left and came back within the window


@dataclass(slots=True)
class _Channel:
    """One channel's changes in the current window, in the order members were first seen."""

    members: dict[str, _Member] = field(default_factory=dict)
    syncs: int = 0  # member lists (presence_state, pages) sent during the window


@dataclass(slots=True)
class BatchStats:
    """Diffs handed to the batcher and diffs it sent (tests, benchmarks, metrics)."""

    diffs_in: int = 0
    diffs_out: int = 0
    windows: int = 0


class PresenceBatcher:
    """Merges each channel's presence diffs within ``window`` seconds into one.

    The hub calls :meth:`add` for every diff it would send to a channel's local
    members, :meth:`synced` whenever it sends a member list of a channel, and
    :meth:`close` when it stops. :meth:`bind` gives it the scheduler (the running
    loop); until then, and with ``window == 0``, every diff goes out at once.
    """

    def __init__(self, window: float, send: SendDiff, *, details: bool = True,
                 max_bytes: int = 64 * 1024) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self._send = send
        self._rejoin_fields = REJOIN_FIELDS if details else REJOIN_FIELDS_MINIMAL
        self._scheduler: Scheduler | None = None
        self._timer: Timer | None = None
        self._pending: dict[str, _Channel] = {}
        self.stats = BatchStats()

    def bind(self, scheduler: Scheduler) -> None:
        """Wait windows out on ``scheduler`` (the hub's, ``Hub.bind``)."""
        self._scheduler = scheduler

    @property
    def batching(self) -> bool:
        """Whether diffs wait for the end of a window (a window > 0 and a scheduler)."""
        return self.window > 0 and self._scheduler is not None

    @property
    def pending(self) -> int:
        """Channels with changes waiting for the end of the window."""
        return len(self._pending)

    def add(self, channel: str, diff: dict[str, object], exclude: Session | None = None) -> None:
        """A ``presence_diff`` for ``channel``'s local subscribers: sent at once (not
        batching: to all but ``exclude``), or merged into the window's diff (to all:
        ``exclude`` already has the member in the list it was sent, so the diff
        changes nothing there)."""
        self.stats.diffs_in += 1
        if not self.batching:
            self._send(channel, diff, exclude, None)
            self.stats.diffs_out += 1
            return
        batch = self._pending.get(channel)
        if batch is None:
            batch = self._pending[channel] = _Channel()
            if self._timer is None and self._scheduler is not None:
                self._timer = self._scheduler.call_later(self.window, self._due)
        members, syncs = batch.members, batch.syncs
        for user, leave in _section(diff, "leaves").items():
            entry = members.get(user)
            if entry is None:
                entry = members[user] = _Member(before=True, sync=syncs)
            entry.info = None
            entry.leave = leave
        changed = cast("dict[str, list[str]]", diff.get("changed") or {})
        for user, info in _section(diff, "joins").items():
            fields = changed.get(user)
            entry = members.get(user)
            if entry is None:  # an update is of a member that was there; a join is not
                entry = members[user] = _Member(before=fields is not None, sync=syncs)
            elif entry.info is None and entry.before:
                entry.rejoined = True
            elif entry.info is not None and entry.before and fields is None:
                entry.changed.update(self._rejoin_fields)  # a join replaces a known member
            if fields is not None:
                entry.changed.update(fields)
            entry.info = info

    def synced(self, channel: str) -> None:
        """A member list of ``channel`` went to a connection (``presence_state`` or a page)."""
        batch = self._pending.get(channel)
        if batch is not None:
            batch.syncs += 1

    def flush(self) -> None:
        """Send every channel's merged diff now (the window's end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        if pending:
            self.stats.windows += 1
        for channel, batch in pending.items():
            joins, leaves, changed = self._merged(batch)
            if joins or leaves:
                self._send_split(channel, list(leaves.items()) + list(joins.items()),
                                 leaves, changed)

    def close(self) -> None:
        """Forget what waits and stop the timer (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def _send_split(self, channel: str, entries: list[tuple[str, MemberInfo]],
                    leaves: dict[str, MemberInfo], changed: dict[str, list[str]]) -> None:
        """Send ``entries`` (user, info) as one diff, or as several of at most about
        ``max_bytes`` each (never one frame near the slow-consumer bound); each user
        is in one of them, so they apply in any order."""
        diff = messages.presence_diff_message(
            channel, {u: i for u, i in entries if u not in leaves},
            {u: i for u, i in entries if u in leaves})
        hints = {u: changed[u] for u, _ in entries if u in changed}
        if hints:
            diff["changed"] = hints
        text = codec.encode(diff)
        if len(entries) > 1 and len(text) > self.max_bytes:  # (characters: close enough)
            half = len(entries) // 2
            self._send_split(channel, entries[:half], leaves, changed)
            self._send_split(channel, entries[half:], leaves, changed)
            return
        self._send(channel, diff, None, text)
        self.stats.diffs_out += 1

    def _merged(self, batch: _Channel) -> tuple[dict[str, MemberInfo], dict[str, MemberInfo],
                                                 dict[str, list[str]]]:
        joins: dict[str, MemberInfo] = {}
        leaves: dict[str, MemberInfo] = {}
        changed: dict[str, list[str]] = {}
        for user, entry in batch.members.items():
            if entry.info is not None:
                joins[user] = entry.info
                if entry.before:
                    fields = set(self._rejoin_fields) if entry.rejoined else entry.changed
                    if fields:
                        changed[user] = [f for f in REJOIN_FIELDS if f in fields]
            elif entry.before or batch.syncs > entry.sync:  # someone may list it: a leave
                leaves[user] = entry.leave if entry.leave is not None else {"connections": 0}
        return joins, leaves, changed
