"""Channel metadata: counts and a custom dict, readable and settable from Python and HTTP.

A part of :class:`realtime_lab.core.hub.Hub` (a mixin; docs/channels.md#channel-metadata).
Metadata set here is kept while the channel has no subscribers (``_channel_meta``).
"""

from __future__ import annotations

from realtime_lab.core.channels import validate_channel
from realtime_lab.core.hub_base import HubBase
from realtime_lab.protocol.values import check_value


class ChannelMeta(HubBase):
    """Channel info and custom metadata (part of Hub)."""

    def channel_info(self, name: str) -> dict[str, object] | None:
        """Counts and custom metadata of channel ``name``; None when it has no subscribers
        and no metadata was set for it."""
        channel = self.channels.get(name)
        if channel is not None:
            return channel.info()
        kept = self._channel_meta.get(name)
        if kept is None:
            return None
        return {"name": name, "subscribers": 0, "members": 0, "messages": 0,
                "presence": False, "created_at": None, "metadata": dict(kept)}

    def set_channel_metadata(self, name: str, values: dict[str, object], *,
                             replace: bool = False) -> dict[str, object]:
        """Merge ``values`` into channel ``name``'s custom metadata (or replace it).

        Kept while the channel has no subscribers, until :meth:`clear_channel_metadata`.
        A value of None removes that key. Returns the new metadata. Raises
        :class:`~realtime_lab.errors.BadValue` for a value outside the data model.
        """
        validate_channel(name, self.options)
        check_value(values, what="metadata")
        channel = self.channels.get(name)
        meta = self._channel_meta.get(name)
        if meta is None:
            meta = channel.metadata if channel is not None else {}
            self._channel_meta[name] = meta
        if channel is not None:
            channel.metadata = meta
        if replace:
            meta.clear()
        for key, value in values.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return dict(meta)

    def clear_channel_metadata(self, name: str) -> None:
        """Forget the custom metadata of ``name`` (a live channel keeps an empty dict)."""
        self._channel_meta.pop(name, None)
        channel = self.channels.get(name)
        if channel is not None:
            channel.metadata = {}
