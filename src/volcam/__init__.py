"""volcam: class activation maps for 3D medical-imaging classifiers.

The public API::

    import volcam
    result = volcam.explain(model, x, method="gradcam")   # x: (B, C, *S)
    result.map                                            # (B, 1, *S) in [0, 1]
    volcam.methods()                                      # names and what each needs
    volcam.metrics.pointing_game(result.map, lesion_mask) # faithfulness, localization, sanity
    volcam.explain_clip(frame_model, clip)                # (C, T, H, W) through a 2D model
    model = volcam.load_model("card.json")                # network + preprocessing + labels
    model.explain(volcam.load("scan/"), "gradcam").map    # the map on the scan's own grid
    volcam.run_cohort("cases.csv", "card.json", "out/")   # many cases: maps + table, resumable
    volcam.train_lcam("card.json", "scans/", variant="fm") # learn L-CAM; then explain(..., "lcam-fm")

For several methods or classes on one input keep a :class:`CamEngine`.
"""

from volcam import metrics  # deletion/insertion, ROAD, pointing game, sanity: SciPy loads on use
from volcam.api import explain, methods
from volcam.clip import ClipResult, explain_clip
from volcam.cohort import run_cohort
from volcam.engine import CamEngine, ForwardPass
from volcam.errors import (
    DependencyError,
    FileFormatError,
    InputError,
    LayerError,
    MethodError,
    OutputError,
    SeriesError,
    TargetError,
    VolcamError,
    VolcamWarning,
)
from volcam.io import load
from volcam.layers import layer_names
from volcam.lcam_training import train_lcam
from volcam.models import CardError, Model, ModelCard, ScanExplanation, load_model
from volcam.result import CamResult
from volcam.targets import ClassProbability, ClassTarget, RegionTarget, Target

__version__ = "0.1.0"

__all__ = [
    "CamEngine",
    "CamResult",
    "CardError",
    "ClassProbability",
    "ClassTarget",
    "ClipResult",
    "DependencyError",
    "FileFormatError",
    "ForwardPass",
    "InputError",
    "LayerError",
    "MethodError",
    "Model",
    "ModelCard",
    "OutputError",
    "RegionTarget",
    "ScanExplanation",
    "SeriesError",
    "Target",
    "TargetError",
    "VolcamError",
    "VolcamWarning",
    "__version__",
    "explain",
    "explain_clip",
    "layer_names",
    "load",
    "load_model",
    "methods",
    "metrics",
    "run_cohort",
    "train_lcam",
]
