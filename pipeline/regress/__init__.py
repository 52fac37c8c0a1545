"""Regression suite: the whole pipeline on public phantom scans, checked against golden results.

A lab runs ``anatomodel regress`` after every upgrade, as a CT department scans its QA phantom
every morning: the skull of a head phantom from 1 mm, 5 mm and two gantry-tilted acquisitions,
the bone of a human head (GE, tilted, uneven spacing) and the aorta of the synthetic CTA are
loaded, segmented and meshed; each model's volume, area, bounding box, shells, watertightness
and distance to its stored golden mesh are checked within the tolerances written in the golden
file; and the skull from each tilted series is registered to the untilted one and must agree
with it (:mod:`pipeline.regress.consistency`).

* :func:`run_regress` runs it and returns a :class:`RegressResult`;
* :func:`write_report` writes the JSON report and the HTML page with pictures.
"""

from pipeline.regress.cases import CASES, RegressCase, case_names
from pipeline.regress.report import write_report
from pipeline.regress.run import RegressResult, default_phantoms_dir, run_regress

__all__ = ["CASES", "RegressCase", "RegressResult", "case_names", "default_phantoms_dir", "run_regress",
           "write_report"]
