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

from volcam._moved import install as _install_moved_names
from volcam._version import __version__

_install_moved_names()  # old module paths (volcam.models, volcam.render, ...) keep working for a release

from volcam import metrics  # noqa: E402  (deletion/insertion, ROAD, pointing game, sanity: SciPy loads on use)
from volcam.api import explain, methods  # noqa: E402
from volcam.engine.clip import ClipResult, explain_clip  # noqa: E402
from volcam.engine.core import CamEngine, ForwardPass  # noqa: E402
from volcam.engine.layers import layer_names  # noqa: E402
from volcam.errors import (  # noqa: E402
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
from volcam.io import load  # noqa: E402
from volcam.maps.result import CamResult  # noqa: E402
from volcam.model.model import CardError, Model, ModelCard, ScanExplanation, load_model  # noqa: E402
from volcam.model.session import ScanSession  # noqa: E402
from volcam.targets import ClassProbability, ClassTarget, RegionTarget, Target  # noqa: E402
from volcam.workflows.cohort.run import run_cohort  # noqa: E402
from volcam.workflows.lcam_training import train_lcam  # noqa: E402

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
    "ScanSession",
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
