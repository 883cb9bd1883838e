"""Attention rollout (Abnar & Zuidema 2020): how much each patch token flows into the decision.

A pure function of the attention matrices a ViT-style model computed in one forward (the engine
reads them where the model applies dropout to them, so nothing in the model changes). The formula
and volcam's choices are in ``docs/methods.md#rollout``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from volcam.errors import MethodError

__all__ = ["HEAD_FUSIONS", "rollout"]

HEAD_FUSIONS = ("mean", "max", "min")


def rollout(
    attention: Sequence[torch.Tensor],
    grid: Sequence[int],
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Attention rollout on the patch grid, ``(B, 1, *grid)``.

    Each block's attention ``(B, H, T, T)`` is fused over heads (``head_fusion``), averaged with
    the identity for the residual connection, ``Â = (A + I) / 2``, and re-normalised per row; the
    rollout is the product ``R = Â_L ⋯ Â_1``. The map is the class token's row of ``R`` over the
    patch tokens when there are tokens besides the grid's (``T > prod(grid)``; the first token is
    taken as the class token, as in ViT), else the mean of ``R``'s rows (no class token).

    Args:
        attention: one ``(B, H, T, T)`` per block, in the order the blocks ran; rows sum to 1.
        grid: the patch grid ``g``; ``T - prod(g)`` leading tokens are not on it.
        head_fusion: ``"mean"`` (the paper's), ``"max"`` or ``"min"`` over heads.

    Samples are independent: row ``b`` of the result depends on sample ``b`` only.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise MethodError(f"head_fusion={head_fusion!r}: choose one of {', '.join(HEAD_FUSIONS)}")
    if not attention:
        raise MethodError("attention rollout needs the attention weights of at least one block")
    patches = math.prod(grid)
    first = attention[0]
    b, t = first.shape[0], first.shape[-1]
    extra = t - patches
    for a in attention:
        if a.ndim != 4 or a.shape[0] != b or a.shape[-2:] != (t, t):
            raise MethodError(
                f"attention rollout needs global attention over all {t} tokens in every block (B, H, T, T); "
                f"one block gives {tuple(a.shape)} (windowed attention, as in Swin, has no rollout)"
            )
    if not 0 <= extra < patches:
        raise MethodError(
            f"the attention is over {t} tokens, which do not lie on the layer's {tuple(grid)} grid of {patches}; "
            "explain at a layer of the same token sequence (or 'auto')"
        )
    eye = torch.eye(t, dtype=torch.float64, device=first.device)
    result = eye.expand(b, t, t)
    for a in attention:
        a = a.to(torch.float64)
        fused = a.mean(1) if head_fusion == "mean" else a.amax(1) if head_fusion == "max" else a.amin(1)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(-1, keepdim=True)
        result = fused @ result
    row = result[:, 0, extra:] if extra > 0 else result.mean(1)
    return row.to(first.dtype).reshape(b, 1, *grid)
