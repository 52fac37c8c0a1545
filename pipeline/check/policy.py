"""QA policies: the tolerances a printed model is checked against (``configs/qa/<name>.yaml``).

A policy holds default :class:`Limits` and, if a lab wants them, overrides per printer profile and
per material (a material override is applied after the printer's). Every number in a shipped
policy carries its source in ``sources``, keyed by the field it documents.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config import FrozenModel, load_config


class Limits(FrozenModel):
    """Acceptance limits of one print.

    Attributes
    ----------
    tolerance_mm : float
        A point of the surface deviating by more than this (either sign) counts as beyond
        tolerance, mm.
    max_mean_abs_mm : float
        Largest accepted mean absolute deviation (model surface to scan), mm.
    max_abs_mm : float
        Largest accepted absolute deviation anywhere on the checked surface, mm.
    max_area_share_beyond : float
        Largest accepted share (0-1) of the checked model surface beyond ``tolerance_mm``.
    max_scale_error_percent : float
        Largest accepted uniform scale error of the print (shrinkage or growth), percent.
    min_coverage : float
        Smallest share (0-1) of the model surface the scan must see for a verdict.
    """

    tolerance_mm: float = Field(gt=0, le=10)
    max_mean_abs_mm: float = Field(gt=0, le=10)
    max_abs_mm: float = Field(gt=0, le=20)
    max_area_share_beyond: float = Field(ge=0, le=1)
    max_scale_error_percent: float = Field(ge=0, le=10)
    min_coverage: float = Field(gt=0, le=1)


class LimitOverride(FrozenModel):
    """Some of the :class:`Limits` fields, replacing the defaults for one printer or material."""

    tolerance_mm: float | None = Field(None, gt=0, le=10)
    max_mean_abs_mm: float | None = Field(None, gt=0, le=10)
    max_abs_mm: float | None = Field(None, gt=0, le=20)
    max_area_share_beyond: float | None = Field(None, ge=0, le=1)
    max_scale_error_percent: float | None = Field(None, ge=0, le=10)
    min_coverage: float | None = Field(None, gt=0, le=1)


class RegistrationLimits(FrozenModel):
    """When a registration counts as converged.

    Attributes
    ----------
    overlap_mm : float
        A scan point closer than this to the registered model overlaps it, mm.
    min_overlap : float
        Smallest share (0-1) of scan points that must overlap the model.
    max_residual_mm : float
        Largest accepted RMS distance of the overlapping scan points, mm.
    """

    overlap_mm: float = Field(2.0, gt=0, le=20)
    min_overlap: float = Field(0.7, gt=0, le=1)
    max_residual_mm: float = Field(0.5, gt=0, le=10)


class QAPolicy(FrozenModel):
    """A lab's print-QA policy (``configs/qa/<name>.yaml``).

    Attributes
    ----------
    version : str
        The lab's version of the policy, recorded with every check (with the file's SHA-256).
    required : bool
        Whether a model must pass a print check (``checked``) before it is delivered; False lets
        ``anatomodel delivered --qa-policy NAME`` deliver a post-processed model unchecked (the
        event records the policy).
    """

    name: str
    version: str = Field("1", min_length=1, max_length=40)
    required: bool = True
    description: str = ""
    limits: Limits
    registration: RegistrationLimits = RegistrationLimits()
    exclude_support_contacts: bool = True
    support_margin_mm: float = Field(1.0, ge=0, le=20)
    by_printer: dict[str, LimitOverride] = Field(default_factory=dict)
    by_material: dict[str, LimitOverride] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "QAPolicy":
        for where, limits in [("limits", self.limits)] + [
                (f"by_printer.{k}", self.limits_for(printer=k)) for k in self.by_printer] + [
                (f"by_material.{k}", self.limits_for(material=k)) for k in self.by_material]:
            if limits.max_abs_mm < limits.tolerance_mm:
                raise ValueError(f"{where}: max_abs_mm ({limits.max_abs_mm}) is below tolerance_mm "
                                 f"({limits.tolerance_mm}); no print could have area beyond tolerance and pass")
        return self

    def limits_for(self, printer: str | None = None, material: str | None = None) -> Limits:
        """The limits for a print on ``printer`` in ``material`` (defaults where no override).

        Parameters
        ----------
        printer : str, optional
            The printer's name, a key of ``by_printer``; None or unknown: no printer override.
        material : str, optional
            The material's name, a key of ``by_material``; None or unknown: no material override. Where
            both override a limit, the material's wins.

        Returns
        -------
        Limits
            The merged limits (their own units: mm, %, degrees as the fields name them).
        """
        values = self.limits.model_dump()
        for override in (self.by_printer.get(printer or ""), self.by_material.get(material or "")):
            if override is not None:
                values.update({k: v for k, v in override.model_dump().items() if v is not None})
        return Limits(**values)


def load_policy(name: str = "default") -> QAPolicy:
    """Load and validate ``configs/qa/<name>.yaml`` (or a YAML path).

    Parameters
    ----------
    name : str
        A policy name under ``configs/qa/`` (without ``.yaml``) or a path to a YAML file.

    Returns
    -------
    QAPolicy
        The validated policy.

    Raises
    ------
    pipeline.errors.ConfigError
        Unknown policy, or a field out of range (the message names the file and the field).
    """
    return load_config("qa", name, QAPolicy)


def policy_sha256(name: str = "default") -> str:
    """SHA-256 of the policy's YAML file (``configs/qa/<name>.yaml`` or a YAML path).

    Parameters
    ----------
    name : str
        A policy name under ``configs/qa/`` or a path to a YAML file, as :func:`load_policy` takes.

    Returns
    -------
    str
        64 lowercase hex digits of the file's bytes.

    Raises
    ------
    ConfigError
        If no such policy file is found (exit code 4).
    """
    from pipeline.config import find_config
    from pipeline.files import sha256_file

    return sha256_file(find_config("qa", name))
