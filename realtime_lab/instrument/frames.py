"""Ring tables to pandas DataFrames, and saving / loading recorded runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime_lab.errors import require

if TYPE_CHECKING:
    import pandas as pd

    from realtime_lab.instrument.ring import RingTable


def pandas() -> Any:
    """Import pandas or raise MissingDependency with the install hint."""
    return require("pandas", "notebook")


def to_frame(table: RingTable, wall0: float) -> pd.DataFrame:
    """A DataFrame with the table's columns in order, plus ``time`` (UTC) after ``t``."""
    pd = pandas()
    np: Any = require("numpy", "notebook")
    data = table.ordered()
    cols: dict[str, Any] = {}
    for col in table.columns:
        values = data[col.name]
        if col.kind == "O":
            cols[col.name] = pd.Series(values, dtype="str")
        else:
            cols[col.name] = np.asarray(values, dtype=col.dtype)
        if col.name == "t":
            cols["time"] = pd.to_datetime(np.asarray(values, dtype="float64") + wall0,
                                          unit="s", utc=True)
    return pd.DataFrame(cols)


def has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def save(tables: dict[str, pd.DataFrame], directory: str | Path, *,
         meta: dict[str, Any] | None = None, format: str = "auto") -> dict[str, Path]:
    """Write each DataFrame as ``NAME.parquet`` (pyarrow present) or ``NAME.csv``.

    ``format`` is ``"auto"``, ``"parquet"`` or ``"csv"``. Returns the paths written,
    including ``meta.json`` when ``meta`` is given.
    """
    if format == "auto":
        format = "parquet" if has_parquet() else "csv"
    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'auto', 'parquet' or 'csv', not {format!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, df in tables.items():
        path = out / f"{name}.{format}"
        if format == "parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False)
        written[name] = path
    if meta is not None:
        path = out / "meta.json"
        path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        written["meta"] = path
    return written


def load(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read every ``*.csv`` / ``*.parquet`` table saved by :func:`save` in ``directory``."""
    pdm = pandas()
    out: dict[str, pd.DataFrame] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix == ".csv":
            df = pdm.read_csv(path)
        elif path.suffix == ".parquet":
            df = pdm.read_parquet(path)
        else:
            continue
        if "time" in df.columns:
            df["time"] = pdm.to_datetime(df["time"], utc=True, format="ISO8601")
        out[path.stem] = df
    return out
