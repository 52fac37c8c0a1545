"""Printer profiles: build volume, layer height, overhang limit, walls, materials and time rates.

Profiles are YAML files under ``configs/printers/<name>.yaml`` validated by :class:`PrinterProfile`.
Every number in a shipped profile carries its source (vendor spec sheet, design guide, or an
estimate marked as such) in the ``sources`` mapping, keyed by the field it documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import FrozenModel, load_config

Technology = Literal["sla", "polyjet", "fdm", "sls"]


class BuildVolume(FrozenModel):
    """Usable build volume in mm (x, y across the plate, z the build direction)."""

    x: float = Field(gt=0, le=2000)
    y: float = Field(gt=0, le=2000)
    z: float = Field(gt=0, le=2000)


class Material(FrozenModel):
    """A printable material.

    Attributes
    ----------
    density_g_per_ml : float
        Density of the printed (cured/solid) material, g/ml.
    cost_per_liter : float
        Price per liter of material in ``currency`` (for filament and powder: per liter of
        solid material, converted from the price per kg by the profile author).
    label : str
        The material's name as its vendor sells it (``BioMed Clear Resin``); empty: the id.
    """

    label: str = ""
    density_g_per_ml: float = Field(gt=0.3, le=5.0)
    cost_per_liter: float = Field(ge=0)
    currency: str = "USD"
    biocompatible: bool = False
    note: str = ""


class TimeModel(FrozenModel):
    """Print time = ``fixed_minutes`` + layers x ``seconds_per_layer`` + volume / ``mm3_per_second``.

    For vat photopolymerisation and powder bed fusion the layer term dominates; for extrusion the
    volume term does.
    """

    fixed_minutes: float = Field(ge=0, le=600)
    seconds_per_layer: float = Field(ge=0, le=600)
    mm3_per_second: float = Field(gt=0, le=10000)


class PrinterProfile(FrozenModel):
    """A printer as the prepare stage sees it.

    Attributes
    ----------
    critical_overhang_deg : float
        A downward-facing surface tilted less than this from the horizontal needs support
        (degrees; 45 is the usual FDM rule, 90 means every downward-facing surface).
    needs_supports : bool
        False for powder-bed processes (the powder carries the part).
    support_fill_fraction : float
        Fraction of the space below overhangs that support structures actually fill (trees and
        lattices are mostly empty; PolyJet gel fills it completely).
    clearance_mm : float
        Margin kept free on every side of the build volume.
    support_base_mm : float
        Height added below the part by a raft or support base (counts against the height).
    """

    name: str = Field(min_length=1)
    vendor: str
    model: str
    technology: Technology
    build_volume_mm: BuildVolume
    layer_height_mm: float = Field(gt=0.005, le=1.0)
    layer_heights_mm: list[float] = Field(default_factory=list)
    critical_overhang_deg: float = Field(gt=0, le=90)
    needs_supports: bool = True
    support_fill_fraction: float = Field(ge=0, le=1)
    min_wall_mm: float = Field(gt=0, le=10)
    min_feature_mm: float = Field(gt=0, le=10)
    clearance_mm: float = Field(ge=0, le=50)
    support_base_mm: float = Field(ge=0, le=50)
    drain_cups: bool = False
    materials: dict[str, Material] = Field(min_length=1)
    default_material: str
    time: TimeModel
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "PrinterProfile":
        if self.default_material not in self.materials:
            raise ValueError(
                f"default_material {self.default_material!r} is not one of the materials "
                f"({', '.join(self.materials)})"
            )
        if any(h <= 0 or h > 1.0 for h in self.layer_heights_mm):
            raise ValueError("layer_heights_mm must hold positive heights up to 1 mm")
        return self


def load_printer(name_or_path: str | Path) -> PrinterProfile:
    """Load and validate a printer profile by name (``formlabs_form3b``) or YAML path.

    Parameters
    ----------
    name_or_path : str or Path
        A profile name under ``configs/printers/`` (or ``$ANATOMODEL_CONFIG_PATH``), or the path
        of a ``.yaml`` file.

    Returns
    -------
    PrinterProfile
        The validated profile (build volume, clearances and walls in mm, angles in degrees).

    Raises
    ------
    pipeline.errors.ConfigError
        Unknown printer, unreadable file, or a field that fails validation (named in the message).
        Exit code 4.
    """
    return load_config("printers", str(name_or_path), PrinterProfile)
