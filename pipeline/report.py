"""Stage reports: dataclasses that serialise to JSON.

Each stage returns a report saying what was done, with which parameters, measured how. The
packet is built from these reports, never by re-deriving numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, numpy values, paths, dates and enums to plain JSON types.

    Parameters
    ----------
    value : object
        A dataclass, pydantic model, mapping, sequence, numpy value, path, date or enum, nested
        in any way; non-finite floats become None.

    Returns
    -------
    object
        The same data as dicts, lists, strings, numbers, booleans and None.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def installed_versions(distributions: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution, by name (those not installed are left out).

    Parameters
    ----------
    distributions : list or tuple of str
        Distribution names as installed (``fast-simplification``, ``vtk``).

    Returns
    -------
    dict of str to str
        Name to version string.
    """
    from importlib import metadata

    versions = {}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def anatomodel_version() -> str:
    """The installed anatomodel version, ``0+unknown`` when run from a bare source tree.

    Returns
    -------
    str
        The version string of the ``anatomodel`` distribution.
    """
    return installed_versions(("anatomodel",)).get("anatomodel", "0+unknown")


#: The packages that shape a model or its packet: what a run records for its environment (each
#: model records the libraries its own mesh went through, ``MeshReport.libraries``).
SOFTWARE = ("anatomodel", "numpy", "scipy", "SimpleITK", "scikit-image", "pydicom", "trimesh", "vtk",
            "fast-simplification", "pymeshfix", "highdicom", "fpdf2")


def software_versions(libraries: Iterable[str] | None = None) -> dict[str, str]:
    """Python's version, anatomodel's and each library's installed version, for a ledger record.

    Parameters
    ----------
    libraries : iterable of str, optional
        Distribution names (a model's ``MeshReport.libraries``: only the names are read, the
        versions come from the installed distributions). None: :data:`SOFTWARE`, a run's
        environment.

    Returns
    -------
    dict of str to str
        ``python`` and each distribution installed, name to version, in the order given.
    """
    import platform

    names = SOFTWARE if libraries is None else ("anatomodel", *libraries)
    return {"python": platform.python_version(), **installed_versions(tuple(dict.fromkeys(names)))}


class StageClock:
    """Wall time of each named step of a stage, for a report's ``timings_s``.

    Parameters
    ----------
    laps : dict of str to float, optional
        Where the times go (step name to seconds); a new dict by default.
    digits : int
        Decimals kept, of seconds.
    """

    def __init__(self, laps: dict[str, float] | None = None, digits: int = 3) -> None:
        self.laps = {} if laps is None else laps
        self.digits = digits
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last lap (or the start) to step ``name``.

        Parameters
        ----------
        name : str
            The step that just ended; a repeated name adds to its time, s.
        """
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, self.digits)
        self._last = now

    __call__ = lap


class Report:
    """Mixin for report dataclasses: ``to_dict`` and ``to_json``."""

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (see :func:`to_jsonable`).

        Returns
        -------
        dict
            Field name to value; nested reports become dicts.
        """
        return to_jsonable(self)

    def to_json(self, indent: int = 2) -> str:
        """The report as JSON text.

        Parameters
        ----------
        indent : int
            Spaces per indentation level.

        Returns
        -------
        str
            :meth:`to_dict` as JSON, fields in their declared order.
        """
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)
