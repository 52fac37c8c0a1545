"""The prepare stage: print orientation, supports and printer fit.

``plan_print(model, printer)`` chooses how to print a :class:`~pipeline.model.Model` and returns
a :class:`PrintPlan`; ``write_print_files`` writes ``print.stl``, ``print.3mf`` and ``plan.json``.
"""

from pipeline.prepare.output import oriented_mesh, plan_support_faces, write_print_files
from pipeline.prepare.plan import PlanAlternative, PrintPlan, plan_print

__all__ = [
    "PlanAlternative",
    "PrintPlan",
    "oriented_mesh",
    "plan_print",
    "plan_support_faces",
    "write_print_files",
]
