"""Method name -> how to compute it and what it needs from the engine.

Adding a method is one pure function and one :func:`register` line here. The engine reads
:attr:`MethodInfo.needs` to compute only what the method uses: no backward pass for CAM, gradient
moments over noisy inputs only for Smooth Grad-CAM++.

An option's default lives in one place, the signature of the method's pure function: the registry
names the options (``takes``) and reads their defaults from :func:`inspect.signature` each time it
is asked. Options the engine consumes itself (batch sizes, Smooth Grad-CAM++'s noisy copies) are
stated in ``engine_options``. The formulas are in ``docs/methods.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from volcam.errors import MethodError
from volcam.methods import activation as _act
from volcam.methods import attention as _attn
from volcam.methods import decomposition as _dec
from volcam.methods import gradient as _grad
from volcam.methods import perturbation as _pert
from volcam.methods.cfcam import cfcam as _cfcam
from volcam.methods.learned import lcam as _lcam

__all__ = ["NEEDS", "MethodInfo", "get_method", "methods", "register", "signature_defaults"]

NEEDS = frozenset({"gradients", "class_weights", "gradient_moments", "runner", "attention", "attention_gradients"})
"""What a method may ask the engine for; see :class:`volcam.methods.base.LayerCapture`."""


@dataclass(frozen=True)
class MethodInfo:
    """A registered CAM method.

    Attributes:
        name: the name ``explain(method=...)`` takes.
        compute: ``(LayerCapture, **options) -> (B, 1, *s)``, a pure function; it receives every
            option in ``options`` (defaults filled in) and ignores those the engine consumes.
        needs: the capture fields it reads, a subset of :data:`NEEDS`.
        passes: its cost in forward (F) and backward (B) passes, as ``docs/methods.md`` counts them.
        summary: one line for listings.
        function: the method's pure function; the defaults of the options in ``takes`` are read
            from its signature.
        takes: the options ``compute`` passes on to ``function``, by their parameter names there.
        engine_options: options the engine consumes itself (not ``function``'s), with their
            defaults.
        fuse: how maps of several target layers combine, ``list[(B, 1, *S)] -> (B, 1, *S)``;
            by default the mean of the per-layer normalised maps.
        input_space: the method works on the input grid, not on a layer (occlusion): it runs
            once, whatever the target layers.
        gradient_terms: the map is a weighted sum of gradient × activation terms (the Grad-CAM
            family), so a map far below ``sum_k |g_k A_k|`` is zero up to rounding (a LayerNorm
            after the layer makes HiResCAM's terms cancel) and the engine says so.
    """

    name: str
    compute: Callable[..., torch.Tensor] = field(repr=False)
    needs: frozenset[str]
    passes: str
    summary: str
    function: Callable[..., torch.Tensor] | None = field(default=None, repr=False)
    takes: tuple[str, ...] = ()
    engine_options: Mapping[str, object] = field(default_factory=dict)
    fuse: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = field(default=None, repr=False)
    input_space: bool = False
    gradient_terms: bool = False

    @property
    def options(self) -> Mapping[str, object]:
        """Every option the method takes, with its default: those in ``takes`` from ``function``'s
        signature (read now, so the signature is the one home of a default), then the engine's."""
        return MappingProxyType({**signature_defaults(self.function, self.takes), **self.engine_options})

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
    signature_defaults(info.function, info.takes)  # every option in takes has a default there
    both = set(info.takes) & set(info.engine_options)
    if both:
        raise ValueError(f"method {info.name!r}: {sorted(both)} are both the function's and the engine's options")
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


def signature_defaults(function: Callable[..., object] | None, names: Sequence[str]) -> dict[str, object]:
    """``{name: default}`` for the parameters ``names`` of ``function``, from its signature.

    A ``ValueError`` names a parameter that ``function`` lacks or that has no default.
    """
    if not names:
        return {}
    if function is None:
        raise ValueError(f"options {list(names)} need the function whose signature holds their defaults")
    params = inspect.signature(function).parameters
    out = {}
    for name in names:
        if name not in params or params[name].default is inspect.Parameter.empty:
            raise ValueError(f"{getattr(function, '__qualname__', function)} has no parameter {name!r} with a default")
        out[name] = params[name].default
    return out


def _grad_method(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda c, **_: fn(c.activations, c.gradients)


# rows per model call for perturbation methods; None sizes it from free memory (CamEngine.runner)
_RUNNER_OPTIONS = MappingProxyType({"batch_size": None})

register(
    MethodInfo(
        "cam",
        lambda c, **_: _act.cam(c.activations, c.class_weights),
        frozenset({"class_weights"}),
        "1F",
        "class weights of the linear layer after global pooling (GAP + linear heads only)",
        function=_act.cam,
    )
)
for _name, _fn, _summary in (
    ("gradcam", _grad.gradcam, "spatially averaged gradients weight the channels"),
    ("gradcam++", _grad.gradcampp, "positive gradients weighted by higher-order terms"),
):
    register(
        MethodInfo(
            _name, _grad_method(_fn), frozenset({"gradients"}), "1F+1B", _summary, function=_fn, gradient_terms=True
        )
    )
register(
    MethodInfo(
        "smoothgradcam++",
        lambda c, **_: _grad.gradcampp_from_moments(c.activations, *c.gradient_moments),
        frozenset({"gradient_moments"}),
        "n(1F+1B)",
        "Grad-CAM++ with gradient moments averaged over noisy copies of the input",
        function=_grad.gradcampp_from_moments,
        # the engine draws the noisy copies (CamEngine.gradient_moments), with these defaults: their one home
        engine_options=MappingProxyType({"n_samples": 8, "noise": 0.15, "batch_size": 4, "seed": 0}),
    )
)
for _name, _fn, _summary in (
    ("xgradcam", _grad.xgradcam, "activation-weighted gradients (axiom-based)"),
    ("hirescam", _grad.hirescam, "element-wise gradient x activation, no averaging"),
):
    register(
        MethodInfo(
            _name, _grad_method(_fn), frozenset({"gradients"}), "1F+1B", _summary, function=_fn, gradient_terms=True
        )
    )
register(
    MethodInfo(
        "layercam",
        _grad_method(_grad.layercam),
        frozenset({"gradients"}),
        "1F+1B",
        "positive gradients x activations per position; several layers fused by max",
        function=_grad.layercam,
        fuse=_grad.layercam_fuse,
        gradient_terms=True,
    )
)
register(
    MethodInfo(
        "respondcam",
        _grad_method(_grad.respondcam),
        frozenset({"gradients"}),
        "1F+1B",
        "XGrad-CAM's weights without the ReLU: a signed map summing to the score's first-order term (3D)",
        function=_grad.respondcam,
        gradient_terms=True,
    )
)
register(
    MethodInfo(
        "scorecam",
        lambda c, weights, max_channels, **_: _pert.scorecam(
            c.activations, c.runner, weights=weights, max_channels=max_channels
        ),
        frozenset({"runner"}),
        "min(K, max_channels)+1 F",
        "channels weighted by the class score of the input each one masks (no gradients; the "
        "max_channels of highest variance)",
        function=_pert.scorecam,
        takes=("weights", "max_channels"),
        engine_options=_RUNNER_OPTIONS,
    )
)
register(
    MethodInfo(
        "ablationcam",
        lambda c, **_: _pert.ablationcam(c.activations, c.runner),
        frozenset({"runner"}),
        "1F + K head passes",
        "channels weighted by the score lost when each is zeroed (head-only passes when possible)",
        function=_pert.ablationcam,
        engine_options=_RUNNER_OPTIONS,
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
        function=_pert.occlusion,
        takes=("patch_mm", "stride_mm", "baseline", "roi", "max_forwards"),
        engine_options=_RUNNER_OPTIONS,
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
        function=_dec.eigencam,
    )
)
register(
    MethodInfo(
        "eigengradcam",
        lambda c, **_: _dec.eigengradcam(c.activations, c.gradients),
        frozenset({"gradients"}),
        "1F+1B",
        "first principal component of gradient x activation",
        function=_dec.eigengradcam,
        gradient_terms=True,
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
        function=_dec.kpcacam,
        takes=("kernel", "max_positions", "seed", "gamma"),
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
        "strong channels and DBSCAN clusters with smoothed gradients, softmax(w / std w); noise channels dropped",
        function=_cfcam,
        takes=("sigma_mm", "range_sigma"),
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
            function=_lcam,
            takes=("module",),
        )
    )

register(
    MethodInfo(
        "rollout",
        lambda c, head_fusion, **_: _attn.rollout(c.attention, c.activations.shape[2:], head_fusion),
        frozenset({"attention"}),
        "1F",
        "attention rollout: the class token's attention flow through every block to the patches "
        "(ViT-style models; class-agnostic)",
        function=_attn.rollout,
        takes=("head_fusion",),
    )
)

register(
    MethodInfo(
        "attention-gradient",
        lambda c, **_: _attn.attention_gradient(c.attention, c.attention_gradients, c.activations.shape[2:]),
        frozenset({"attention", "attention_gradients"}),
        "1F+1B",
        "gradient-weighted attention (Chefer et al.): each block's positive gradient x attention, mean over "
        "heads, accumulated as R <- R + AR; the class token's row (ViT-style models)",
        function=_attn.attention_gradient,
    )
)

#: Read-only view of the registry, name -> MethodInfo.
REGISTRY: Mapping[str, MethodInfo] = MappingProxyType(_REGISTRY)
