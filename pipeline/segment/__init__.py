"""Segmentation stage: CT volume + structure preset + seeds -> label mask and report.

* :func:`segment_volume` — one structure (threshold, seeded growth, bone separation, leak
  control, clean-up), returned as a :class:`~pipeline.geometry.Mask` on the volume's grid;
  :func:`check_segment_inputs` checks its preset and seeds without segmenting.
* :func:`combine_masks` — several structures of one case into one label map.
* :func:`import_label_map` — a label map made in another tool (NIfTI, NRRD, DICOM SEG).
"""

from pipeline.segment.core import check_segment_inputs, segment_volume
from pipeline.segment.report import SegmentReport
from pipeline.segment.labelmap import combine_masks, import_label_map

__all__ = ["SegmentReport", "check_segment_inputs", "combine_masks", "import_label_map", "segment_volume"]
