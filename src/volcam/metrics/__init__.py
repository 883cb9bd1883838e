"""Numbers for a map: faithfulness, localization, sanity and robustness (docs/methods.md#metrics).

* :mod:`~volcam.metrics.faithfulness`: deletion/insertion curves, Average Drop / Increase in
  Confidence, ROAD (needs the model: batched ``no_grad`` forwards);
* :mod:`~volcam.metrics.localization`: pointing game (tolerance in mm), energy pointing game,
  IoU/Dice, per-lesion hits (a map and a mask only);
* :mod:`~volcam.metrics.sanity`: cascading parameter randomization on a copy of the model;
* :mod:`~volcam.metrics.robustness`: max-sensitivity, stability under gradient noise;
* :mod:`~volcam.metrics.voxel_precision`: VxAP and MaxF1 (SE3D) from per-case voxel histograms that pool;
* :mod:`~volcam.metrics.intervals`: case-level bootstrap intervals, paired differences, Holm.

SciPy is imported by the functions that use it, so importing this package stays light.
"""

from volcam.metrics._common import MetricInputError, spearman, ssim
from volcam.metrics.faithfulness import (
    ConfidenceChange,
    Curve,
    DeletionInsertion,
    Road,
    average_drop_increase,
    deletion_insertion,
    removal_order,
    road,
)
from volcam.metrics.imputation import imputation_system, noisy_linear_imputation
from volcam.metrics.intervals import (
    Interval,
    PairedDifference,
    bootstrap_interval,
    holm,
    interval_of,
    paired_difference,
    paired_pooled_difference,
    pooled_interval,
    proportion_interval,
)
from volcam.metrics.localization import (
    EnergyPointing,
    LesionHits,
    Overlap,
    PointingGame,
    energy_pointing_game,
    lesion_hits,
    overlap,
    pointing_game,
)
from volcam.metrics.robustness import GradientNoise, Sensitivity, gradient_noise_stability, max_sensitivity
from volcam.metrics.sanity import SanityCheck, parameter_randomization, randomization_blocks
from volcam.metrics.voxel_precision import (
    VoxelHistograms,
    VoxelPrecision,
    precision_recall,
    voxel_histograms,
    voxel_precision_recall,
)

__all__ = [
    "ConfidenceChange",
    "Curve",
    "DeletionInsertion",
    "EnergyPointing",
    "GradientNoise",
    "Interval",
    "LesionHits",
    "MetricInputError",
    "Overlap",
    "PairedDifference",
    "PointingGame",
    "Road",
    "SanityCheck",
    "Sensitivity",
    "VoxelHistograms",
    "VoxelPrecision",
    "average_drop_increase",
    "bootstrap_interval",
    "deletion_insertion",
    "energy_pointing_game",
    "gradient_noise_stability",
    "holm",
    "imputation_system",
    "interval_of",
    "lesion_hits",
    "max_sensitivity",
    "noisy_linear_imputation",
    "overlap",
    "paired_difference",
    "paired_pooled_difference",
    "parameter_randomization",
    "pointing_game",
    "pooled_interval",
    "precision_recall",
    "proportion_interval",
    "randomization_blocks",
    "removal_order",
    "road",
    "spearman",
    "ssim",
    "voxel_histograms",
    "voxel_precision_recall",
]
