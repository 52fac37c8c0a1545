"""The prepare stage: print orientation, supports and printer fit.

``plan_print(model, printer)`` chooses how to print a :class:`~pipeline.model.Model` and returns
``(plan, report)``: the :class:`PrintPlan` and a :class:`PrepareReport` saying how it was found;
``write_print_files`` writes ``print.stl``, ``print.3mf`` and ``plan.json``.
"""

from pipeline.prepare.output import oriented_mesh, plan_support_faces, read_plan, write_print_files
from pipeline.prepare.plan import PlanAlternative, PrintPlan, plan_print
from pipeline.prepare.report import PrepareReport

__all__ = [
    "PlanAlternative",
    "PrepareReport",
    "PrintPlan",
    "oriented_mesh",
    "plan_print",
    "plan_support_faces",
    "read_plan",
    "write_print_files",
]
