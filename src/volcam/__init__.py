"""volcam: class activation maps for 3D medical-imaging classifiers.

The public API::

    import volcam
    result = volcam.explain(model, x, method="gradcam")   # x: (B, C, *S)
    result.map                                            # (B, 1, *S) in [0, 1]
    volcam.methods()                                      # names and what each needs
    volcam.metrics.pointing_game(result.map, lesion_mask) # faithfulness, localization, sanity
    volcam.explain_clip(frame_model, clip)                # (C, T, H, W) through a 2D model
    volcam.explain_windowed(model_3d, clip, frames=16, stride=8)  # a 3D model over short windows
    model = volcam.load_model("card.json")                # network + preprocessing + labels
    model.explain(volcam.load("scan/"), "gradcam").map    # the map on the scan's own grid
    volcam.run_cohort("cases.csv", "card.json", "out/")   # many cases: maps + table, resumable
    volcam.validate_to_folder("cases.csv", "card.json", "report/")  # one HTML report with intervals
    volcam.train_lcam("card.json", "scans/", variant="fm") # learn L-CAM; then explain(..., "lcam-fm")

For several methods or classes on one input keep a :class:`CamEngine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volcam._lazy import lazy_names
from volcam._moved import install as _install_moved_names
from volcam._version import __version__
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

_install_moved_names()  # old module paths (volcam.models, volcam.render, ...) keep working for a release

# The rest of the API is imported on first use (PEP 562): ``import volcam`` and the command line's
# ``--help`` pay for torch and MONAI only when a name that needs them is touched.
_LAZY = {
    "metrics": "volcam.metrics",
    "explain": "volcam.api",
    "methods": "volcam.methods",  # the package, callable: volcam.methods() lists them
    "ClipResult": "volcam.engine.clip",
    "explain_clip": "volcam.engine.clip",
    "explain_windowed": "volcam.engine.windows",
    "CamEngine": "volcam.engine.core",
    "ForwardPass": "volcam.engine.capture",
    "layer_names": "volcam.engine.layers",
    "load": "volcam.io",
    "CamResult": "volcam.maps.result",
    "CardError": "volcam.model.model",
    "Model": "volcam.model.model",
    "ModelCard": "volcam.model.model",
    "ScanExplanation": "volcam.model.model",
    "load_model": "volcam.model.model",
    "ScanSession": "volcam.model.session",
    "ClassProbability": "volcam.targets",
    "ClassTarget": "volcam.targets",
    "RegionTarget": "volcam.targets",
    "Target": "volcam.targets",
    "run_cohort": "volcam.workflows.cohort.run",
    "train_lcam": "volcam.workflows.lcam_training",
    "validate_to_folder": "volcam.workflows.validate",
}

if TYPE_CHECKING:
    from volcam import metrics
    from volcam.api import explain, methods
    from volcam.engine.capture import ForwardPass
    from volcam.engine.clip import ClipResult, explain_clip
    from volcam.engine.core import CamEngine
    from volcam.engine.layers import layer_names
    from volcam.engine.windows import explain_windowed
    from volcam.io.load import load
    from volcam.maps.result import CamResult
    from volcam.model.model import CardError, Model, ModelCard, ScanExplanation, load_model
    from volcam.model.session import ScanSession
    from volcam.targets import ClassProbability, ClassTarget, RegionTarget, Target
    from volcam.workflows.cohort.run import run_cohort
    from volcam.workflows.lcam_training import train_lcam
    from volcam.workflows.validate import validate_to_folder


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


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
    "explain_windowed",
    "layer_names",
    "load",
    "load_model",
    "methods",
    "metrics",
    "run_cohort",
    "train_lcam",
    "validate_to_folder",
]
