"""The package version: from the installed metadata, else from pyproject.toml.

An installed package (a wheel, or ``pip install -e .``) has metadata, and
``importlib.metadata`` reads the version pyproject.toml declared. A source
checkout put on ``sys.path`` without installing has none: the version is then
read from the checkout's pyproject.toml, so there is one place to change it.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DIST_NAME = "realtime_lab"
UNKNOWN = "0+unknown"


def read_version(pyproject: Path | None = None) -> str:
    """This package's version, ``"0+unknown"`` when neither source has one."""
    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        return version_from_pyproject(pyproject or Path(__file__).parents[1] / "pyproject.toml")


def version_from_pyproject(path: Path) -> str:
    """``[project] version`` of a pyproject.toml that names this project, else UNKNOWN."""
    try:
        with path.open("rb") as fh:
            project = tomllib.load(fh).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if project.get("name") != DIST_NAME or not isinstance(project.get("version"), str):
        return UNKNOWN
    return str(project["version"])


__version__ = read_version()
"""The installed version (from the package metadata, else this checkout's pyproject.toml).

Modules of the package import it from here (rank 0), not from the ``realtime_lab``
facade above them."""
