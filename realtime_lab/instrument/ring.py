"""Preallocated ring-buffer tables: fixed memory, no Python object per row.

Numeric columns are ``array.array`` of fixed length; string columns are lists of
references to strings that already exist (channel names, session ids), so
appending a row allocates nothing new. When a table is full the oldest rows are
overwritten and counted in :attr:`RingTable.overwritten`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# array typecodes: "d" float64, "q" int64; "O" is a Python list of str.
KINDS = {"d": "float64", "q": "int64", "O": "string"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a recorded table: name, storage kind, unit and meaning."""

    name: str
    kind: str  # "d" float64, "q" int64, "O" string
    unit: str
    doc: str

    @property
    def dtype(self) -> str:
        return KINDS[self.kind]


class RingTable:
    """A table of ``capacity`` rows stored column-wise in preallocated buffers."""

    def __init__(self, name: str, columns: Sequence[Column], capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        self.name = name
        self.columns = tuple(columns)
        self.capacity = capacity
        self.count = 0
        self.data: dict[str, Any] = {}
        for col in self.columns:
            if col.kind == "O":
                self.data[col.name] = [""] * capacity
            else:
                self.data[col.name] = array(col.kind, bytes(8 * capacity))

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    @property
    def overwritten(self) -> int:
        """Rows lost because the ring wrapped around."""
        return max(0, self.count - self.capacity)

    def next_index(self) -> int:
        """Reserve the slot of the next row and return its index (hot-path API)."""
        i = self.count % self.capacity
        self.count += 1
        return i

    def append(self, *values: Any) -> None:
        """Append one row, values in column order (convenience; not for the hot path)."""
        i = self.next_index()
        data = self.data
        for col, value in zip(self.columns, values, strict=True):
            data[col.name][i] = value

    def clear(self) -> None:
        self.count = 0

    def ordered(self) -> dict[str, list[Any]]:
        """Columns as lists, oldest row first."""
        n = len(self)
        start = self.count % self.capacity if self.count > self.capacity else 0
        out: dict[str, list[Any]] = {}
        for col in self.columns:
            buf = self.data[col.name]
            if start == 0:
                out[col.name] = list(buf[:n])
            else:
                out[col.name] = list(buf[start:]) + list(buf[:start])
        return out

    def nbytes(self) -> int:
        """Approximate memory held by the buffers (string columns count 8 bytes a slot)."""
        return 8 * self.capacity * len(self.columns)
