"""Preallocated ring-buffer tables: fixed memory, no Python object per row.

Every column is an ``array.array`` of fixed length. String columns (channel
names, session ids) hold small integer codes from a shared :class:`Symbols`
table, so the buffers hold no Python objects: appending a row allocates
nothing, and the garbage collector never walks them. When a table is full the oldest rows are
overwritten and counted in :attr:`RingTable.overwritten`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# array typecodes: "d" float64, "q" int64; "O" is a string stored as an int64 code.
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


class Symbols:
    """Strings to integer codes and back (one entry per distinct string ever seen)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        c = self.index.get(name)
        if c is None:
            c = self.index[name] = len(self.names)
            self.names.append(name)
        return c


class RingTable:
    """A table of ``capacity`` rows stored column-wise in preallocated buffers."""

    def __init__(self, name: str, columns: Sequence[Column], capacity: int,
                 symbols: Symbols | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        self.name = name
        self.columns = tuple(columns)
        self.capacity = capacity
        self.count = 0
        self.symbols = symbols if symbols is not None else Symbols()
        self.data: dict[str, array[Any]] = {
            col.name: array("q" if col.kind == "O" else col.kind, bytes(8 * capacity))
            for col in self.columns}

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
        code = self.symbols.code
        for col, value in zip(self.columns, values, strict=True):
            data[col.name][i] = code(value) if col.kind == "O" else value

    def clear(self) -> None:
        self.count = 0

    def ordered(self) -> dict[str, list[Any]]:
        """Columns as lists (strings decoded), oldest row first."""
        n = len(self)
        start = self.count % self.capacity if self.count > self.capacity else 0
        out: dict[str, list[Any]] = {}
        for col in self.columns:
            buf = self.data[col.name]
            values = list(buf[:n]) if start == 0 else list(buf[start:]) + list(buf[:start])
            if col.kind == "O":
                names = self.symbols.names
                values = [names[c] for c in values]
            out[col.name] = values
        return out

    def nbytes(self) -> int:
        """Memory held by the buffers (8 bytes a cell)."""
        return 8 * self.capacity * len(self.columns)
