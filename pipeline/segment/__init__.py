"""Segmentation stage: CT volume + structure preset + seeds -> label mask and report.

* :func:`segment` — one structure (threshold, seeded growth, bone separation, leak control,
  clean-up), returned as a :class:`~pipeline.geometry.Mask` on the volume's grid.
* :func:`combine_masks` — several structures of one case into one label map.
* :func:`import_label_map` — a label map made in another tool (NIfTI, NRRD, DICOM SEG).
"""

import sys
import types

from pipeline.segment.core import segment
from pipeline.segment.report import SegmentReport
from pipeline.segment.labelmap import combine_masks, import_label_map

__all__ = ["SegmentReport", "combine_masks", "import_label_map", "segment"]


class _CallableModule(types.ModuleType):
    """``pipeline.segment(...)`` is the stage's function (the package API), even once this
    subpackage has been imported and its module object sits where the function is expected."""

    def __call__(self, *args, **kwargs):
        return segment(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
