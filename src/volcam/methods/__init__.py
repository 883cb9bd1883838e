"""CAM methods: pure tensor functions, one module per family, and the name registry."""

from volcam.methods.activation import cam
from volcam.methods.base import LayerCapture
from volcam.methods.gradient import (
    gradcam,
    gradcampp,
    gradcampp_from_moments,
    hirescam,
    layercam,
    layercam_fuse,
    xgradcam,
)
from volcam.methods.registry import MethodInfo, get_method, methods, register

__all__ = [
    "LayerCapture",
    "MethodInfo",
    "cam",
    "get_method",
    "gradcam",
    "gradcampp",
    "gradcampp_from_moments",
    "hirescam",
    "layercam",
    "layercam_fuse",
    "methods",
    "register",
    "xgradcam",
]
