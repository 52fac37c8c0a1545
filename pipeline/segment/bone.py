"""Bone barrier for contrast studies: cortex and what it encloses may not join a vessel."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.presets import BoneSeparation
from pipeline.segment.grid import ball


def bone_barrier(block_max_hu: np.ndarray, spacing: tuple[float, float, float], settings: BoneSeparation,
                 protected: list[tuple[int, int, int]]) -> tuple[np.ndarray, dict]:
    """Blocks to keep out of the region because they hold or are enclosed by bone.

    Parameters
    ----------
    block_max_hu : ndarray
        Highest HU in each analysis block (so a 1.5 mm cortex is not averaged away).
    spacing : tuple of float
        Block size, mm.
    settings : BoneSeparation
        Cortical threshold (HU), margin (mm), whether to fill interiors.
    protected : list of index
        Blocks of include seeds: an enclosed region holding one (a lumen inside a ring of wall
        calcium) is not barrier.

    Returns
    -------
    barrier : ndarray of bool
    summary : dict
        Blocks and mm^3 of cortex, filled interior and margin.
    """
    cortical = block_max_hu > settings.cortical_hu
    barrier = cortical.copy()
    filled_blocks = 0
    if settings.fill_interiors and cortical.any():
        # Slice by slice: a vertebral body's cortex is a closed ring in an axial slice even
        # where it is perforated in 3-D (vessels, thin end plates).
        interior = np.zeros_like(cortical)
        for k in np.flatnonzero(cortical.any(axis=(1, 2))):
            interior[k] = ndi.binary_fill_holes(cortical[k])
        interior &= ~cortical
        if protected and interior.any():
            pieces, _ = ndi.label(interior)
            spared = {pieces[p] for p in protected if pieces[p]}
            if spared:
                interior &= ~np.isin(pieces, list(spared))
        filled_blocks = int(interior.sum())
        barrier |= interior
    margin_blocks = 0
    if settings.margin_mm > 0 and barrier.any():
        # Whole blocks only: the block maximum already reaches up to a block past the cortex.
        footprint = ball(settings.margin_mm, spacing)
        if footprint.size > 1:
            grown = ndi.binary_dilation(barrier, footprint)
            margin_blocks = int((grown & ~barrier).sum())
            barrier = grown
    block_mm3 = float(np.prod(spacing))
    summary = {
        "cortical_hu": settings.cortical_hu,
        "margin_mm": settings.margin_mm,
        "cortex_ml": round(int(cortical.sum()) * block_mm3 / 1000, 2),
        "filled_interior_ml": round(filled_blocks * block_mm3 / 1000, 2),
        "margin_ml": round(margin_blocks * block_mm3 / 1000, 2),
        "barrier_ml": round(int(barrier.sum()) * block_mm3 / 1000, 2),
    }
    return barrier, summary
