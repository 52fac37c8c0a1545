"""The stage options a case file may set for one model, validated with the case file.

``models[].mesh`` takes every field of :class:`~pipeline.mesh.MeshOptions` (the schema is made
from the dataclass, so the two cannot drift apart); ``models[].segment`` the preset overrides and
region of interest of :func:`~pipeline.segment.segment_volume`; ``models[].prepare`` the material and
runner-up count of :func:`~pipeline.prepare.plan_print`. A misspelt field is refused naming the
closest known one, like every other field of the case file.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, Field, create_model, model_validator

from pipeline.config import CoordinateMM, StrictModel
from pipeline.mesh.options import MeshOptions

Point = tuple[CoordinateMM, CoordinateMM, CoordinateMM]


class _MeshSettingsBase(StrictModel):
    @model_validator(mode="after")
    def _checked(self) -> "_MeshSettingsBase":
        self.to_options()  # MeshOptions' own range checks, as ValueError
        return self

    def to_options(self) -> MeshOptions:
        """The :class:`MeshOptions` these settings give (defaults for the fields not set).

        Returns
        -------
        MeshOptions
        """
        return MeshOptions(**self.model_dump())


def _schema_of(options: type, name: str, base: type[BaseModel]) -> type[BaseModel]:
    """A strict pydantic model with the fields, types and defaults of the dataclass ``options``."""
    hints = typing.get_type_hints(options)
    fields: dict[str, Any] = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(options)}
    return create_model(name, __base__=base, __doc__=options.__doc__, **fields)


#: ``models[].mesh``: any field of :class:`MeshOptions`, checked as :class:`MeshOptions` checks it.
MeshSettings = _schema_of(MeshOptions, "MeshSettings", _MeshSettingsBase)


class SegmentSettings(StrictModel):
    """``models[].segment``: what :func:`~pipeline.segment.segment_volume` takes besides the seeds.

    Attributes
    ----------
    overrides : dict
        Preset fields to change, nested or dotted (``{"threshold.lower_hu": 150}``); checked
        against the preset when the case file is read.
    roi_lps_mm : ((x0, y0, z0), (x1, y1, z1)), optional
        Only voxels inside this LPS box may be segmented, mm.
    """

    overrides: dict[str, Any] = Field(default_factory=dict)
    roi_lps_mm: tuple[Point, Point] | None = None


class PrepareSettings(StrictModel):
    """``models[].prepare``: what :func:`~pipeline.prepare.plan_print` takes besides the printer.

    Attributes
    ----------
    material : str, optional
        A material of the model's printer profile; the profile's default when not given.
    alternatives : int
        Runner-up poses to report, 0-20.
    """

    material: str | None = None
    alternatives: int = Field(3, ge=0, le=20)
