"""Method name -> how to compute it and what it needs from the engine.

Adding a method is one pure function and one :func:`register` line here. The engine reads
:attr:`MethodInfo.needs` to compute only what the method uses: no backward pass for CAM, gradient
moments over noisy inputs only for Smooth Grad-CAM++.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from volcam.errors import MethodError
from volcam.methods import activation as _act
from volcam.methods import decomposition as _dec
from volcam.methods import gradient as _grad
from volcam.methods import perturbation as _pert
from volcam.methods.cfcam import cfcam as _cfcam
from volcam.methods.learned import lcam as _lcam

__all__ = ["NEEDS", "MethodInfo", "get_method", "methods", "register"]

NEEDS = frozenset({"gradients", "class_weights", "gradient_moments", "runner"})
"""What a method may ask the engine for; see :class:`volcam.methods.base.LayerCapture`."""


@dataclass(frozen=True)
class MethodInfo:
    """A registered CAM method.

    Attributes:
        name: the name ``explain(method=...)`` takes.
        compute: ``(LayerCapture, **options) -> (B, 1, *s)``, a pure function; it receives every
            option in ``options`` (defaults filled in) and ignores those the engine consumes.
        needs: the capture fields it reads, a subset of :data:`NEEDS`.
        passes: its cost in forward (F) and backward (B) passes, as METHODS.md counts them.
        summary: one line for listings.
        options: options the engine takes for this method, with their defaults.
        fuse: how maps of several target layers combine, ``list[(B, 1, *S)] -> (B, 1, *S)``;
            by default the mean of the per-layer normalised maps.
        input_space: the method works on the input grid, not on a layer (occlusion): it runs
            once, whatever the target layers.
    """

    name: str
    compute: Callable[..., torch.Tensor] = field(repr=False)
    needs: frozenset[str]
    passes: str
    summary: str
    options: Mapping[str, object] = field(default_factory=dict)
    fuse: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = field(default=None, repr=False)
    input_space: bool = False

    @property
    def needs_gradients(self) -> bool:
        return bool(self.needs & {"gradients", "gradient_moments"})

    @property
    def needs_runner(self) -> bool:
        return "runner" in self.needs


_REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    """Add a method to the registry (a name may be registered once)."""
    unknown = info.needs - NEEDS
    if unknown:
        raise ValueError(f"method {info.name!r} needs unknown inputs {sorted(unknown)}")
    if info.name in _REGISTRY:
        raise ValueError(f"a method named {info.name!r} is registered already")
    _REGISTRY[info.name] = info
    return info


def get_method(name: str) -> MethodInfo:
    """The method registered as ``name`` (case-insensitive); a clear error naming the others."""
    key = name.lower().strip()
    if key not in _REGISTRY:
        raise MethodError(f"unknown CAM method {name!r}; volcam has {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def methods() -> tuple[MethodInfo, ...]:
    """Every registered method, in registration order."""
    return tuple(_REGISTRY.values())


def _grad_method(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda c, **_: fn(c.activations, c.gradients)


register(
    MethodInfo(
        "cam",
        lambda c, **_: _act.cam(c.activations, c.class_weights),
        frozenset({"class_weights"}),
        "1F",
        "class weights of the linear layer after global pooling (GAP + linear heads only)",
    )
)
register(
    MethodInfo(
        "gradcam",
        _grad_method(_grad.gradcam),
        frozenset({"gradients"}),
        "1F+1B",
        "spatially averaged gradients weight the channels",
    )
)
register(
    MethodInfo(
        "gradcam++",
        _grad_method(_grad.gradcampp),
        frozenset({"gradients"}),
        "1F+1B",
        "positive gradients weighted by higher-order terms",
    )
)
register(
    MethodInfo(
        "smoothgradcam++",
        lambda c, **_: _grad.gradcampp_from_moments(c.activations, *c.gradient_moments),
        frozenset({"gradient_moments"}),
        "n(1F+1B)",
        "Grad-CAM++ with gradient moments averaged over noisy copies of the input",
        options=MappingProxyType({"n_samples": 8, "noise": 0.15, "batch_size": 4, "seed": 0}),
    )
)
register(
    MethodInfo(
        "xgradcam",
        _grad_method(_grad.xgradcam),
        frozenset({"gradients"}),
        "1F+1B",
        "activation-weighted gradients (axiom-based)",
    )
)
register(
    MethodInfo(
        "hirescam",
        _grad_method(_grad.hirescam),
        frozenset({"gradients"}),
        "1F+1B",
        "element-wise gradient x activation, no averaging",
    )
)
register(
    MethodInfo(
        "layercam",
        _grad_method(_grad.layercam),
        frozenset({"gradients"}),
        "1F+1B",
        "positive gradients x activations per position; several layers fused by max",
        fuse=_grad.layercam_fuse,
    )
)
register(
    MethodInfo(
        "scorecam",
        lambda c, weights, **_: _pert.scorecam(c.activations, c.runner, weights=weights),
        frozenset({"runner"}),
        "K+1 F",
        "channels weighted by the class score of the input each one masks (no gradients)",
        options=MappingProxyType({"weights": "probability", "batch_size": None}),
    )
)
register(
    MethodInfo(
        "ablationcam",
        lambda c, **_: _pert.ablationcam(c.activations, c.runner),
        frozenset({"runner"}),
        "1F + K head passes",
        "channels weighted by the score lost when each is zeroed (head-only passes when possible)",
        options=MappingProxyType({"batch_size": None}),
    )
)
register(
    MethodInfo(
        "occlusion",
        lambda c, patch_mm, stride_mm, baseline, roi, max_forwards, **_: _pert.occlusion(
            c.runner, c.input_spacing, patch_mm, stride_mm, baseline, roi, max_forwards
        ),
        frozenset({"runner"}),
        "1F per patch",
        "mean score drop when a sliding patch (size and stride in mm) hides each voxel",
        options=MappingProxyType(
            {
                "patch_mm": None,
                "stride_mm": None,
                "baseline": "mean",
                "roi": None,
                "max_forwards": 128,
                "batch_size": None,
            }
        ),
        input_space=True,
    )
)

register(
    MethodInfo(
        "eigencam",
        lambda c, **_: _dec.eigencam(c.activations),
        frozenset(),
        "1F",
        "first principal component of the activations, sign of the mean activation (class-agnostic)",
    )
)
register(
    MethodInfo(
        "eigengradcam",
        lambda c, **_: _dec.eigengradcam(c.activations, c.gradients),
        frozenset({"gradients"}),
        "1F+1B",
        "first principal component of gradient x activation",
    )
)
register(
    MethodInfo(
        "kpcacam",
        lambda c, kernel, max_positions, seed, gamma, **_: _dec.kpcacam(
            c.activations, kernel=kernel, max_positions=max_positions, seed=seed, gamma=gamma
        ),
        frozenset(),
        "1F",
        "first kernel-PCA component of the activations (fitted on a sample of positions when many)",
        options=MappingProxyType({"kernel": "sigmoid", "max_positions": 4096, "seed": 0, "gamma": None}),
    )
)
register(
    MethodInfo(
        "cfcam",
        lambda c, sigma_mm, range_sigma, **_: _cfcam(
            c.activations, c.gradients, spacing=c.spacing, sigma_mm=sigma_mm, range_sigma=range_sigma
        ),
        frozenset({"gradients"}),
        "1F+1B",
        "softmax-weighted channels: strong ones, DBSCAN clusters with smoothed gradients; noise channels dropped",
        options=MappingProxyType({"sigma_mm": 10.0, "range_sigma": None}),
    )
)

for _variant, _how in (("fm", "times the feature maps"), ("img", "upsampled, times the input")):
    register(
        MethodInfo(
            f"lcam-{_variant}",
            lambda c, module, **_: _lcam(c.activations, c.classes, module),
            frozenset(),
            "1F",
            f"learned: 1×1 conv + sigmoid on the activations, trained so the class map {_how} keeps the "
            "decision (volcam train-lcam)",
            options=MappingProxyType({"module": None}),
        )
    )

#: Read-only view of the registry, name -> MethodInfo.
REGISTRY: Mapping[str, MethodInfo] = MappingProxyType(_REGISTRY)
