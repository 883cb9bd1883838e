"""Defaults several of volcam's jobs share, one home each, importable without torch: the command line
shows them in ``--help`` before anything heavy loads, and the API, the workflows and the napari dock
read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LCAM_LOSS", "TOLERANCE_MM", "LCamLossWeights"]

#: How far (mm) from a lesion a map's maximum still counts as pointing at it: the pointing game's and
#: the lesion hits' tolerance in volcam's tables (evaluate, cohorts, the napari dock).
TOLERANCE_MM = 5.0


@dataclass(frozen=True)
class LCamLossWeights:
    """The terms of L-CAM's training loss (Gkartzonika et al., ECCV Workshops 2022; docs/methods.md):
    cross-entropy weight, mask-area weight and power, total-variation weight and border."""

    ce_weight: float = 1.5
    area_weight: float = 2.0
    area_power: float = 0.3
    tv_weight: float = 0.01
    tv_border: float = 0.3


#: The paper's weights, volcam's default.
LCAM_LOSS = LCamLossWeights()
