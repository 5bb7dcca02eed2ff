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
* joined and left in the window: nothing;
* there before and changed: its info in ``joins`` and the fields in ``changed``
  (every field that changed in the window; one that changed back is listed too);
* left and came back in the window: an update (like a reconnect within the grace
  period), ``changed`` naming every field the rejoin may have changed;
* there before and gone: a leave with the reason of its last leave.

A connection that got a member list of the channel during the window (a
``presence_state`` or the first page, :meth:`PresenceBatcher.synced`) gets, from
that window, only the members changed *after* its list was built, each as seen
from that list (:meth:`PresenceBatcher._entry`): no echo of its own join, no second
copy of members its list already has (a Pusher client's duplicate ``member_added``),
and no 16 x 64 KB of metadata on top of the pages that already carry it.

A window's diff larger than ``max_bytes`` (``ServerOptions.page_bytes``, 64 KiB)
goes as several diffs of about that size, each member in one of them, so that a
storm of members with metadata never makes one frame near the slow-consumer bound.

The batcher knows nothing of channels or sessions: the hub gives it ``send`` (one
diff to a channel's local subscribers) and a :class:`~realtime_lab.core.ports.Scheduler`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from realtime_lab.protocol import codec, messages

if TYPE_CHECKING:
    from realtime_lab.core.ports import Scheduler, Timer
    from realtime_lab.core.session import Session

#: A member's entry in a diff (its info, or a leave with its reason), as on the wire.
MemberInfo = dict[str, object]
#: ``send(channel, diff, exclude, text, only, skip)``: one ``presence_diff`` to a
#: channel's local subscribers (``text``: its JSON when already encoded, else None):
#: all of them but ``exclude`` and the session ids in ``skip``, or, when ``only``
#: is not None, just the session ids in ``only``.
SendDiff = Callable[[str, dict[str, object], "Session | None", "str | None",
                     "Collection[str] | None", "Collection[str]"], None]

#: The fields a rejoin may change, with exact counts on the wire and without them.
REJOIN_FIELDS = ("connections", "state", "meta")
REJOIN_FIELDS_MINIMAL = ("state", "meta")

#: One member's entry as one receiver gets it: (user, info, leave?, changed fields).
_Entry = tuple[str, MemberInfo, bool, "list[str] | None"]


def _section(diff: dict[str, object], key: str) -> dict[str, MemberInfo]:
    """``diff[key]`` (``joins`` or ``leaves``: user -> entry), empty when absent."""
    return cast("dict[str, MemberInfo]", diff.get(key) or {})


@dataclass(slots=True)
class _Member:
    """One member's changes in the current window; ``seq`` numbers are the channel's
    changes in the window (1, 2, ...), 0 is the window's start."""

    before: bool  # listed when the window began
    first: int  # the seq of its first change in the window
    last: int = 0  # the seq of its last change
    info: MemberInfo | None = None  # its info now; None: not a member now
    leave: MemberInfo | None = None  # its last leave entry (with the reason)
    changed: dict[str, int] = field(default_factory=dict)  # field -> seq of its last change
    flips: list[int] = field(default_factory=list)  # seqs where it joined or left

    def listed_at(self, seq: int) -> bool:
        """Whether it was a member after the window's first ``seq`` changes."""
        flips = sum(1 for f in self.flips if f <= seq)
        return self.before != (flips % 2 == 1)


@dataclass(slots=True)
class _Channel:
    """One channel's changes in the current window, in the order members were first seen
    (so in the order of their ``first`` seq)."""

    members: dict[str, _Member] = field(default_factory=dict)
    seq: int = 0  # changes so far in the window
    synced: dict[str, int] = field(default_factory=dict)  # session id -> seq of its list


@dataclass(slots=True)
class BatchStats:
    """Diffs handed to the batcher and diffs it sent (tests, benchmarks, metrics)."""

    diffs_in: int = 0
    diffs_out: int = 0
    windows: int = 0
    own_diffs: int = 0  # diffs built for one connection synced in the window


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
        batching: to all but ``exclude``), or merged into the window's diff
        (``exclude`` already has the member in the list it was sent: see
        :meth:`_knows`)."""
        self.stats.diffs_in += 1
        if not self.batching:
            self._send(channel, diff, exclude, None, None, ())
            self.stats.diffs_out += 1
            return
        batch = self._pending.get(channel)
        if batch is None:
            batch = self._pending[channel] = _Channel()
            if self._timer is None and self._scheduler is not None:
                self._timer = self._scheduler.call_later(self.window, self._due)
        batch.seq += 1
        members, seq = batch.members, batch.seq
        if exclude is not None:
            self._knows(batch, exclude.id, seq)
        for user, leave in _section(diff, "leaves").items():
            entry = members.get(user)
            if entry is None:
                entry = members[user] = _Member(before=True, first=seq)
                entry.flips.append(seq)
            elif entry.info is not None:
                entry.flips.append(seq)
            entry.info = None
            entry.leave = leave
            entry.last = seq
        changed = cast("dict[str, list[str]]", diff.get("changed") or {})
        for user, info in _section(diff, "joins").items():
            fields = changed.get(user)
            entry = members.get(user)
            if entry is None:  # an update is of a member that was there; a join is not
                entry = members[user] = _Member(before=fields is not None, first=seq)
                if fields is None:
                    entry.flips.append(seq)
            elif entry.info is None:
                entry.flips.append(seq)  # it comes back
            elif fields is None:  # a join replaces a member now present
                entry.changed.update(dict.fromkeys(self._rejoin_fields, seq))
            if fields is not None:
                entry.changed.update(dict.fromkeys(fields, seq))
            entry.info = info
            entry.last = seq

    @staticmethod
    def _knows(batch: _Channel, sid: str, seq: int) -> None:
        """Change ``seq`` leaves session ``sid`` out: its list has it already (its own
        join, or its new tab, announced right after its list). When nothing else
        changed since its list (or since the window began), its list is as of
        ``seq``: no echo. Otherwise it gets the entry again, which changes nothing."""
        synced = batch.synced.get(sid)
        if synced == seq - 1 or (synced is None and seq == 1):
            batch.synced[sid] = seq

    def synced(self, channel: str, session: Session) -> None:
        """A member list of ``channel`` starts going to ``session``: its
        ``presence_state`` or its first page was built (the hub calls this then).

        The window's diff then reaches ``session`` as seen from that list: the
        members changed after it only. The first page is the point, not the last:
        it fixes the user ids listed (core/presence_sync.py, "Exactness"); a later
        page carries its members' info as they are when it is built, so a change
        made between the first page and a later one is in both that page and this
        diff, and the diff (queued after the pages, in the same lane) says the same
        final state again: conservative, never stale. A change before the first
        page is in the list already and is left out. A later list (it left and
        subscribed again in the window) replaces the earlier one.
        """
        batch = self._pending.get(channel)
        if batch is not None:
            batch.synced[session.id] = batch.seq

    def flush(self) -> None:
        """Send every channel's merged diff now (the window's end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        if pending:
            self.stats.windows += 1
        for channel, batch in pending.items():
            self._flush_channel(channel, batch)

    def close(self) -> None:
        """Forget what waits and stop the timer (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def _flush_channel(self, channel: str, batch: _Channel) -> None:
        """The window's diff: in chunks of about ``max_bytes`` (members in the order
        they were first seen), each encoded once, to every subscriber whose list
        predates the window; to each one synced in it, what changed after its list
        (:meth:`_entry`): the whole chunks after that point (the same frames) and
        one diff of its own for the rest, or nothing.

        Each member's entry is encoded once and an own diff is put together from
        those texts, so a storm of N joiners, each synced at a different point,
        costs about N own diffs of at most a chunk each, not N encodings of the
        window (quadratic)."""
        entries = list(batch.members.items())
        if not entries:
            return
        shared = [self._entry(user, m, 0) for user, m in entries]
        texts = [_encode_entry(e) if e is not None else None for e in shared]
        head = codec.encode(messages.presence_diff_message(channel, {}, {}))
        chunks = self._pack([i for i, e in enumerate(shared) if e is not None], texts, head)
        firsts = [m.first for _, m in entries]
        skip: set[str] = set()  # synced in the window: not every shared chunk
        wants: dict[str, int] = {}  # such a session -> the first chunk it gets whole
        own: dict[int, list[str]] = {}  # sync seq -> sessions with the same own diff
        for sid, seq in batch.synced.items():
            start = bisect_right(firsts, seq)  # the members first changed after its list
            if start == 0:
                continue  # every change came after its list: the shared chunks
            skip.add(sid)
            if seq >= batch.seq:
                continue  # its list has every change: nothing
            whole = next((k for k, chunk in enumerate(chunks) if chunk[0] >= start),
                         len(chunks))
            wants[sid] = whole
            own.setdefault(seq, []).append(sid)
        for k, chunk in enumerate(chunks):
            skip_k = skip if not wants else {sid for sid in skip if wants.get(sid, k + 1) > k}
            self._send_texts(channel, head, [shared[i] for i in chunk],  # type: ignore[misc]
                             [texts[i] for i in chunk], None, skip_k)  # type: ignore[misc]
        for seq, sids in own.items():
            start = bisect_right(firsts, seq)
            whole = wants[sids[0]]
            end = chunks[whole][0] if whole < len(chunks) else len(entries)
            items = [self._entry(user, m, seq) for user, m in entries[:start]]
            mine = [(e, _encode_entry(e)) for e in items if e is not None]
            mine += [(shared[i], texts[i]) for i in range(start, end)  # type: ignore[misc]
                     if shared[i] is not None]
            if not mine:
                continue
            self.stats.own_diffs += len(sids)
            for chunk in self._pack(list(range(len(mine))), [t for _, t in mine], head):
                self._send_texts(channel, head, [mine[i][0] for i in chunk],
                                 [mine[i][1] for i in chunk], sids, ())

    def _pack(self, order: list[int], texts: list[str | None], head: str) -> list[list[int]]:
        """``order`` (indexes of entries) in runs of at most about ``max_bytes`` of diff
        each (at least one entry: one larger than that goes alone)."""
        budget = self.max_bytes - len(head)
        chunks: list[list[int]] = []
        chunk: list[int] = []
        used = 0
        for i in order:
            size = _size(cast("str", texts[i])) + 1
            if chunk and used + size > budget:
                chunks.append(chunk)
                chunk, used = [], 0
            chunk.append(i)
            used += size
        if chunk:
            chunks.append(chunk)
        return chunks

    def _send_texts(self, channel: str, head: str, items: list[_Entry], texts: list[str],
                    only: list[str] | None, skip: Collection[str]) -> None:
        """One diff of ``items`` (each entry's JSON in ``texts``) to its audience."""
        joins: dict[str, MemberInfo] = {}
        leaves: dict[str, MemberInfo] = {}
        hints: dict[str, list[str]] = {}
        join_texts: list[str] = []
        leave_texts: list[str] = []
        hint_texts: list[str] = []
        for (user, info, gone, fields), text in zip(items, texts, strict=True):
            if gone:
                leaves[user] = info
                leave_texts.append(text)
                continue
            joins[user] = info
            member, _, hint = text.partition("\0")
            join_texts.append(member)
            if fields:
                hints[user] = fields
                hint_texts.append(hint)
        diff = messages.presence_diff_message(channel, joins, leaves)
        tail = f'"joins":{{{",".join(join_texts)}}},"leaves":{{{",".join(leave_texts)}}}'
        if hints:
            diff["changed"] = hints
            tail += f',"changed":{{{",".join(hint_texts)}}}'
        text = head[:-len(_EMPTY_TAIL)] + tail + "}"
        self._send(channel, diff, None, text, only, skip)
        self.stats.diffs_out += 1

    def _entry(self, user: str, entry: _Member, seq: int) -> _Entry | None:
        """``user``'s entry for a receiver whose list was built after the window's first
        ``seq`` changes (0: before the window), or None: nothing for it.

        Only members whose last change is after ``seq``: the list has the rest as
        they are now. Each as its final state, absolute, which is right whatever
        the receiver had: judged against whether the member was in that list
        (:meth:`_Member.listed_at`):

        * a member now, not listed: a join (no ``changed``: it is new there);
        * a member now and listed: an update naming the fields changed after
          ``seq`` (every rejoin field if it left and came back after ``seq``);
        * gone now and listed (there before, or joined before ``seq``): a leave;
        * gone now, not listed (joined and left after ``seq``, or left before it and
          joined and left again after it): nothing, never a phantom member.
        """
        if entry.last <= seq:
            return None
        listed = entry.before if seq == 0 or not entry.flips else entry.listed_at(seq)
        if entry.info is None:
            if not listed:
                return None
            leave: MemberInfo = entry.leave or {"connections": 0}
            return (user, leave, True, None)
        fields: list[str] | None = None
        if listed:
            if any(f > seq for f in entry.flips):  # it left and came back since
                fields = list(self._rejoin_fields)
            else:
                after = {f for f, at in entry.changed.items() if at > seq}
                fields = [f for f in REJOIN_FIELDS if f in after] or None
        return (user, entry.info, False, fields)



#: The end of an empty diff's JSON, replaced by the entries' texts.
_EMPTY_TAIL = '"joins":{},"leaves":{}}'


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _encode_entry(entry: _Entry) -> str:
    """``"user":info`` as in a diff's JSON; a join with ``changed`` fields gets its
    hint after a NUL (``"user":["state"]``), which no JSON text contains raw."""
    user, info, _, fields = entry
    text = codec.encode({user: info})[1:-1]
    return text + "\0" + codec.encode({user: fields})[1:-1] if fields else text
