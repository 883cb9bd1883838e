"""What every metric shares: shape checks for maps and masks, spacing, batched scoring, similarity.

Maps are ``(B, 1, *S)`` (as :class:`~volcam.maps.result.CamResult` gives them) or a bare ``(*S)``; masks
are boolean (or 0/1) on the same grid, ``(*S)``, ``(B, *S)`` or ``(B, 1, *S)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from volcam.engine.drive import frozen, input_spacing, plain_tensor, read_output
from volcam.errors import InputError
from volcam.maps.result import Explanation, batch_map
from volcam.targets import ClassProbability, OutputSpec, TargetSpec, resolve_target

__all__ = ["MetricInputError", "as_map", "as_mask", "spacing_of", "spearman", "ssim"]


class MetricInputError(InputError):
    """A map, mask or option a metric cannot use: shapes that do not match, an empty mask, a bad range."""


def as_map(cam: Any, name: str = "map") -> torch.Tensor:
    """``cam`` (any result, or a tensor) as a float ``(B, 1, *S)`` plain tensor (a bare ``(*S)``
    becomes ``(1, 1, *S)``)."""
    if isinstance(cam, Explanation):
        cam = batch_map(cam)
    if not torch.is_tensor(cam):
        cam = torch.as_tensor(cam)
    cam = plain_tensor(cam).float()
    if cam.ndim < 3 or cam.shape[1] != 1:
        if cam.ndim > 3:
            raise MetricInputError(f"the {name} has shape {tuple(cam.shape)}; give (B, 1, *S) or one map (*S)")
        cam = cam[None, None]
    return cam


def as_mask(mask: torch.Tensor, cam: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` as a boolean ``(B, 1, *S)`` matching ``cam`` ``(B, 1, *S)``."""
    if not torch.is_tensor(mask):
        mask = torch.as_tensor(mask)
    mask = plain_tensor(mask).to(cam.device) != 0
    spatial = tuple(cam.shape[2:])
    if tuple(mask.shape[-len(spatial) :]) != spatial:
        raise MetricInputError(f"the {name} has shape {tuple(mask.shape)}; the map's grid is {spatial}")
    mask = mask.reshape(-1, 1, *spatial)
    if mask.shape[0] == 1:
        mask = mask.expand(cam.shape[0], *mask.shape[1:])
    if mask.shape[0] != cam.shape[0]:
        raise MetricInputError(f"the {name} has {mask.shape[0]} samples; the map has {cam.shape[0]}")
    return mask


def spacing_of(t: torch.Tensor, spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel size per spatial axis in mm: ``spacing`` if given, else a ``MetaTensor``'s affine, else 1."""
    if spacing is None:
        return input_spacing(t, ndim) or (1.0,) * ndim
    values = [float(spacing)] * ndim if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if len(values) != ndim or any(not math.isfinite(s) or s <= 0 for s in values):
        raise MetricInputError(f"spacing {tuple(values)} does not give a positive size for each of the {ndim} axes")
    return tuple(values)


# -- the model, batched and without gradients -------------------------------------------------------
class Scorer:
    """Class probabilities of batches of copies of one input, ``batch_size`` rows per model call, read
    from the model's output as ``output`` picks it (what the engine explained; a card's ``"output"``).

    Counts the rows it scores (``forwards``) so benchmarks can compare a metric with its floor.
    """

    def __init__(self, model: nn.Module, batch_size: int = 16, output: OutputSpec = None) -> None:
        if batch_size < 1:
            raise MetricInputError(f"batch_size must be at least 1, not {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.output = output
        self.forwards = 0

    def outputs(self, batch: torch.Tensor) -> torch.Tensor:
        with frozen(self.model), torch.no_grad():
            out = [read_output(self.model, chunk, self.output) for chunk in batch.split(self.batch_size)]
        self.forwards += batch.shape[0]
        return torch.cat(out)

    def resolve(self, x: torch.Tensor, target: TargetSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The class per sample ``(B,)`` (the predicted one for ``None``) and its probability ``(B,)``."""
        out = self.outputs(x)
        _, classes = resolve_target(target, out)
        if bool((classes < 0).any()):
            raise MetricInputError("faithfulness metrics score a class: give a class index or label as target")
        return classes, ClassProbability(classes)(out).float()

    def probability(self, batch: torch.Tensor, cls: int) -> torch.Tensor:
        """``(N,)`` probability of class ``cls`` for each row of ``batch``."""
        return ClassProbability(cls)(self.outputs(batch)).float()


# -- similarity of two maps ---------------------------------------------------------------------------
def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of two ``(B, 1, *S)`` maps, ``(B,)``.

    Ties get their average rank (maps after a ReLU have many zeros). Two constant maps correlate
    1; a constant map and a varying one correlate 0 (not NaN): the ranking is gone.
    """
    from scipy.stats import rankdata

    out = []
    for u, v in zip(a.flatten(1).double().cpu().numpy(), b.flatten(1).double().cpu().numpy(), strict=True):
        cu, cv = u.max() == u.min(), v.max() == v.min()
        if cu or cv:
            out.append(1.0 if cu and cv else 0.0)
            continue
        ru, rv = rankdata(u), rankdata(v)
        ru -= ru.mean()
        rv -= rv.mean()
        out.append(float((ru * rv).sum() / math.sqrt((ru * ru).sum() * (rv * rv).sum())))
    return torch.tensor(out, dtype=torch.float64)


def ssim(
    a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Structural similarity per sample of two ``(B, 1, *S)`` maps (1-3 spatial axes), ``(B,)``.

    As MONAI's ``SSIMMetric`` computes it (a Gaussian window of ``window`` voxels, σ ``sigma``, valid
    region only, k1 = 0.01, k2 = 0.03), with the window applied separably, one axis at a time. On
    an axis shorter than the window the window shrinks to the axis (odd length).
    """
    if a.shape != b.shape:
        raise MetricInputError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    a, b = a.double(), b.double()
    ndim = a.ndim - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (B, 5, *S)
    for axis in range(ndim):
        size = min(window, a.shape[2 + axis])
        size -= 1 - size % 2
        r = torch.arange(size, dtype=a.dtype, device=a.device) - (size - 1) / 2
        k = torch.exp(-((r / sigma) ** 2) / 2)
        shape = [5, 1] + [1] * ndim
        shape[2 + axis] = size
        stack = conv(stack, (k / k.sum()).view([1, 1, *shape[2:]]).expand(shape), groups=5)
    ma, mb, maa, mbb, mab = stack.unbind(1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    va, vb, cab = maa - ma * ma, mbb - mb * mb, mab - ma * mb
    s = ((2 * ma * mb + c1) / (ma**2 + mb**2 + c1)) * ((2 * cab + c2) / (va + vb + c2))
    return s.flatten(1).mean(1)
