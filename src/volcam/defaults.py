"""Defaults several of volcam's jobs share, one home each, importable without torch: the command line
shows them in ``--help`` before anything heavy loads, and the API, the workflows and the napari dock
read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LCAM_LOSS", "TOLERANCE_MM", "LCamLossWeights"]

#: How far (mm) from a lesion a map's maximum still counts as pointing at it: the pointing game's and
#: the lesion hits' tolerance in volcam's tables (evaluate, cohorts, the napari dock).
TOLERANCE_MM = 5.0


@dataclass(frozen=True)
class LCamLossWeights:
    """The terms of L-CAM's training loss (Gkartzonika et al., ECCV Workshops 2022; docs/methods.md):
    cross-entropy weight, mask-area weight and power, total-variation weight and border."""

    ce_weight: float = field(default=1.5, metadata={"help": "Weight of the cross-entropy term (the paper's)."})
    area_weight: float = field(default=2.0, metadata={"help": "Weight of the mask-area penalty (the paper's)."})
    area_power: float = field(default=0.3, metadata={"help": "Power of the mask area in its penalty (the paper's)."})
    tv_weight: float = field(default=0.01, metadata={"help": "Weight of the total-variation penalty (the paper's)."})
    tv_border: float = field(default=0.3, metadata={"help": "Border of the total-variation penalty (the paper's)."})


#: The paper's weights, volcam's default.
LCAM_LOSS = LCamLossWeights()
