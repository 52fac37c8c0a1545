"""Print QA: measure a scan of the printed model against the model that was sent to the printer.

* :func:`check_print` (:mod:`~pipeline.check.run`): the whole check of one model folder.
* :func:`read_scan` (:mod:`~pipeline.check.scan`): a surface scan, or a CT of the print meshed
  by the mesh stage at an automatic threshold.
* :func:`register` (:mod:`~pipeline.check.register`): landmark-free similarity registration
  with a convergence check.
* :mod:`~pipeline.check.deviation`, :mod:`~pipeline.check.regions`: signed deviation both ways,
  the worst regions named by location.
* :class:`QAPolicy` (:mod:`~pipeline.check.policy`, ``configs/qa/*.yaml``): the limits.
* :class:`CheckReport` and :func:`checked_event` (:mod:`~pipeline.check.report`): the figures,
  verdict and holds, and the ``checked`` lifecycle event built from them.
"""

from pipeline.check.policy import Limits, QAPolicy, load_policy
from pipeline.check.register import Registration, register
from pipeline.check.report import CheckReport, Criterion, checked_event
from pipeline.check.run import check_print
from pipeline.check.scan import CtThreshold, Scan, ct_scan, read_scan

__all__ = ["CheckReport", "Criterion", "CtThreshold", "Limits", "QAPolicy", "Registration", "Scan",
           "check_print", "checked_event", "ct_scan", "load_policy", "read_scan", "register"]
