"""docs/metrics.md lists every recorded column (keeps the docs and the schema in step)."""

from __future__ import annotations

from pathlib import Path

from realtime_lab.instrument import TABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_column_is_documented() -> None:
    text = DOC.read_text()
    for table, columns in TABLES.items():
        section = text.split(f"### `{table}`", 1)[1].split("###", 1)[0]
        for col in columns:
            row = f"| `{col.name}` | {col.dtype} | {col.unit or '—'} |"
            assert row in section, f"docs/metrics.md, table {table}: missing {row}"
