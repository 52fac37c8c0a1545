"""Load stage: choose and read the right CT series from a study folder, with exact geometry.

* :func:`inventory` describes every series of a (messy) study folder and which one ``auto``
  picks, and why.
* :func:`load_series` reads one series (or a NIfTI/NRRD/MHA file) into an int16 HU
  :class:`~pipeline.geometry.Volume` on an orthogonal grid: slices ordered along their normal,
  per-slice rescale, duplicates resolved or refused, gaps refused, gantry tilt and uneven
  spacing resampled, compressed transfer syntaxes decoded. It returns a :class:`LoadReport`.
"""

from pipeline.load.inventory import Inventory, SeriesInfo, inventory
from pipeline.load.series import PROVENANCE_KEYS, LoadReport, load_series

__all__ = ["Inventory", "LoadReport", "PROVENANCE_KEYS", "SeriesInfo", "inventory", "load_series"]
