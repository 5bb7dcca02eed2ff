"""Ring tables to pandas DataFrames, and saving / loading recorded runs."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
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


FORMATS = ("csv", "parquet")
META = "meta.json"


def save(tables: dict[str, pd.DataFrame], directory: str | Path, *,
         meta: dict[str, Any] | None = None, format: str = "csv") -> dict[str, Path]:
    """Write one run folder: each DataFrame as ``NAME.csv`` or ``NAME.parquet``, and
    ``meta.json`` (the format, each table's dtypes, and ``meta``).

    ``format`` is explicit: ``"csv"`` (the default, readable anywhere) or
    ``"parquet"`` (needs pyarrow: ``pip install 'realtime_lab[parquet]'``). The folder
    holds this run only: an earlier run folder at ``directory`` (one with a
    ``meta.json``) is replaced as a whole, so no stale table of another run or
    format stays beside the new ones; an existing folder that is not a run folder
    raises :class:`FileExistsError`. Returns the paths written, ``meta.json`` included.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be 'csv' or 'parquet', not {format!r}")
    if format == "parquet":
        require("pyarrow", "parquet")
    out = Path(directory)
    if out.exists() and any(out.iterdir()) and not (out / META).is_file():
        raise FileExistsError(f"{out} exists and is not a run folder (no {META}); "
                              "choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        written: dict[str, Path] = {}
        for name, df in tables.items():
            path = tmp / f"{name}.{format}"
            if format == "parquet":
                df.to_parquet(path, index=False)
            else:
                df.to_csv(path, index=False)
            written[name] = out / path.name
        described = {"format": format,
                     "tables": {name: {col: str(dtype) for col, dtype in df.dtypes.items()}
                                for name, df in tables.items()},
                     **(meta or {})}
        (tmp / META).write_text(json.dumps(described, indent=2, default=str) + "\n")
        written["meta"] = out / META
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return written


def new_run_folder(root: str | Path = "data/runs", prefix: str = "run") -> Path:
    """A folder name under ``root`` that does not exist yet: ``run-YYYYmmdd-HHMMSS``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{prefix}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def load(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read a run folder written by :func:`save` back as DataFrames, with their dtypes.

    The tables and their format come from ``meta.json``; other files in the folder
    are ignored. A folder without ``meta.json`` (older runs) is read by file suffix.
    """
    pdm = pandas()
    folder = Path(directory)
    described: dict[str, Any] = {}
    if (folder / META).is_file():
        described = json.loads((folder / META).read_text())
    fmt = described.get("format")
    dtypes: dict[str, dict[str, str]] = described.get("tables") or {}
    if fmt in FORMATS and dtypes:
        paths = [folder / f"{name}.{fmt}" for name in dtypes]
    else:
        paths = sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".parquet"))
    out: dict[str, pd.DataFrame] = {}
    for path in paths:
        df = pdm.read_csv(path) if path.suffix == ".csv" else pdm.read_parquet(path)
        out[path.stem] = _with_dtypes(df, dtypes.get(path.stem, {}))
    return out


def _with_dtypes(df: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Give a table read from CSV its saved dtypes (and ``time`` its UTC datetimes)."""
    pdm = pandas()
    for col in df.columns:
        dtype = dtypes.get(col, "")
        if col == "time" or dtype.startswith("datetime64"):
            df[col] = pdm.to_datetime(df[col], utc=True, format="ISO8601")
        elif dtype in ("str", "string", "object"):
            df[col] = df[col].astype("str")
        elif dtype and str(df[col].dtype) != dtype:
            df[col] = df[col].astype(dtype)
    return df
