"""CAM methods: pure tensor functions, one module per family, and the name registry.

The package is also the listing: ``volcam.methods()`` returns every method with what it needs. The
top-level ``volcam`` loads its names on first use, and importing this package binds ``volcam.methods``
to it, so the package answers the call itself.
"""

import sys
import types

from volcam.methods.activation import cam
from volcam.methods.base import LayerCapture
from volcam.methods.cfcam import cfcam, cfcam_weights, channel_groups, tempered_softmax
from volcam.methods.decomposition import eigencam, eigengradcam, kpcacam
from volcam.methods.gradient import (
    gradcam,
    gradcampp,
    gradcampp_from_moments,
    hirescam,
    layercam,
    layercam_fuse,
    respondcam,
    xgradcam,
)
from volcam.methods.perturbation import ablationcam, occlusion, scorecam
from volcam.methods.registry import MethodInfo, get_method, methods, register

__all__ = [
    "LayerCapture",
    "MethodInfo",
    "ablationcam",
    "cam",
    "cfcam",
    "cfcam_weights",
    "channel_groups",
    "eigencam",
    "eigengradcam",
    "get_method",
    "gradcam",
    "gradcampp",
    "gradcampp_from_moments",
    "hirescam",
    "kpcacam",
    "layercam",
    "layercam_fuse",
    "methods",
    "occlusion",
    "register",
    "respondcam",
    "scorecam",
    "tempered_softmax",
    "xgradcam",
]


class _MethodsPackage(types.ModuleType):
    """``volcam.methods()``: the package called is :func:`~volcam.methods.registry.methods`."""

    def __call__(self) -> tuple[MethodInfo, ...]:
        return methods()


sys.modules[__name__].__class__ = _MethodsPackage
