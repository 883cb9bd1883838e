"""How stable is a map? Max-sensitivity under input noise, SSIM under gradient noise (docs/methods.md#robustness).

* Max-sensitivity (Yeh et al., NeurIPS 2019): ``max_j ‖Φ(x + δ_j) − Φ(x)‖ / ‖Φ(x)‖`` over
  ``n_samples`` draws of ``δ`` uniform in ``[−r, r]`` per voxel, the class held at the clean
  prediction. Lower is more stable. Noisy copies are explained in batches.
* Gradient noise: the clean forward's gradients plus ``N(0, (s · std g)²)`` (std per sample and
  layer, so ``s`` is relative), then the method as usual; SSIM of each noisy map with the clean
  one. Higher is more stable. One forward and one head backward in all: only the method reruns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from volcam.engine.capture import ForwardPass
from volcam.engine.core import CamEngine
from volcam.engine.drive import model_input
from volcam.methods.registry import get_method
from volcam.metrics._common import MetricInputError, ssim
from volcam.targets import OutputSpec, Target, TargetSpec

__all__ = ["GradientNoise", "Sensitivity", "gradient_noise_stability", "max_sensitivity"]


@dataclass(frozen=True)
class Sensitivity:
    """Attributes:
    value: ``(B,)`` max-sensitivity per sample.
    samples: ``(n_samples, B)`` the relative change of each draw.
    radius: ``r``, in the model input's units.
    """

    value: torch.Tensor
    samples: torch.Tensor
    radius: float


def max_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec = None,
    layer: str | Sequence[str] = "auto",
    *,
    radius: float = 0.02,
    n_samples: int = 8,
    batch_size: int = 4,
    seed: int = 0,
    output: OutputSpec = None,
    **options: Any,
) -> Sensitivity:
    """Max-sensitivity of ``method``'s normalised maps on ``x`` ``(B, C, *S)``.

    Args:
        radius: ``r``, the half-width of the uniform noise, in the model input's units (for an
            input scaled to [0, 1], 0.02 is 2% of the range).
        n_samples: draws of the noise.
        batch_size: noisy copies of the batch explained at once.
        output: the tensor explained, of a model returning several (the engine's ``output=``).
        options: the method's options.
    """
    if radius < 0 or n_samples < 1 or batch_size < 1:
        raise MetricInputError("radius must be >= 0 and n_samples, batch_size >= 1")
    xp = model_input(model, x)
    b = xp.shape[0]
    gen = torch.Generator(device=xp.device).manual_seed(seed)
    with CamEngine(model, layer, progress=False, output=output) as engine:
        clean = engine.explain(xp, method, target, **options)
        classes = clean.classes
        reference = clean.map.flatten(1).double()
        norm = reference.norm(dim=1)
        changes = []
        done = 0
        while done < n_samples:
            m = min(batch_size, n_samples - done)
            copies = xp.repeat(m, *[1] * (xp.ndim - 1))
            delta = (torch.rand(copies.shape, generator=gen, device=xp.device, dtype=xp.dtype) * 2 - 1) * radius
            noisy = engine.explain(copies + delta, method, classes.repeat(m), **options).map
            diff = (noisy.flatten(1).double() - reference.repeat(m, 1)).norm(dim=1).view(m, b)
            changes.append(diff / torch.where(norm > 0, norm, torch.ones_like(norm)))
            done += m
    samples = torch.cat(changes).cpu()
    return Sensitivity(samples.amax(0), samples, float(radius))


@dataclass(frozen=True)
class GradientNoise:
    """Attributes:
    ssim: ``(n_samples, B)`` SSIM of each noisy-gradient map with the clean map.
    mean: ``(B,)`` its mean over draws.
    noise: ``s``, the noise σ relative to the gradients' std.
    """

    ssim: torch.Tensor
    mean: torch.Tensor
    noise: float


class _NoisyGradients(CamEngine):
    """A CamEngine whose gradients get fresh Gaussian noise on every call (the forward stays cached)."""

    noise: float = 0.0
    generator: torch.Generator | None = None

    def target_gradients(self, fwd: ForwardPass, target: Target) -> dict[str, torch.Tensor]:
        clean = super().target_gradients(fwd, target)
        out = {}
        for name, g in clean.items():
            std = g.flatten(1).std(dim=1).view(-1, *[1] * (g.ndim - 1))
            draw = torch.randn(g.shape, generator=self.generator, device=g.device, dtype=g.dtype)
            out[name] = g + self.noise * std * draw
        return out


def gradient_noise_stability(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec = None,
    layer: str | Sequence[str] = "auto",
    *,
    noise: float = 0.1,
    n_samples: int = 8,
    seed: int = 0,
    output: OutputSpec = None,
    **options: Any,
) -> GradientNoise:
    """SSIM of ``method``'s map with noisy gradients against its clean map (gradient methods only);
    ``output``: the tensor explained, of a model returning several (the engine's ``output=``)."""
    info = get_method(method)
    if "gradients" not in info.needs:
        raise MetricInputError(f"{info.name!r} does not use the target layer's gradients; there is nothing to perturb")
    if noise < 0 or n_samples < 1:
        raise MetricInputError("noise must be >= 0 and n_samples >= 1")
    xp = model_input(model, x)
    scores = []
    with _NoisyGradients(model, layer, progress=False, output=output) as engine:
        clean = engine.explain(xp, method, target, **options)
        engine.noise = float(noise)
        engine.generator = torch.Generator(device=xp.device).manual_seed(seed)
        for _ in range(n_samples):
            noisy = engine.explain(xp, method, clean.classes, **options).map
            scores.append(ssim(clean.map.cpu(), noisy.cpu()))
    stacked = torch.stack(scores)
    return GradientNoise(stacked, stacked.mean(0), float(noise))
