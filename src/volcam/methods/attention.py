"""Attention methods for ViT-style models: rollout (Abnar & Zuidema 2020) and gradient-weighted
attention (Chefer, Gur & Wolf 2021): how much each patch token flows into the decision.

Pure functions of the attention matrices a ViT-style model computed in one forward (the engine
reads them where the model applies dropout to them, so nothing in the model changes), and for the
gradient-weighted one, of the gradients of the class score with respect to them. The formulas and
volcam's choices are in ``docs/methods.md#rollout`` and ``docs/methods.md#attention-gradient``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from volcam.errors import MethodError

__all__ = ["HEAD_FUSIONS", "attention_gradient", "rollout"]

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
    b, t, extra = _tokens(attention, grid, "attention rollout")
    first = attention[0]
    eye = torch.eye(t, dtype=torch.float64, device=first.device)
    result = eye.expand(b, t, t)
    for a in attention:
        a = a.to(torch.float64)
        fused = a.mean(1) if head_fusion == "mean" else a.amax(1) if head_fusion == "max" else a.amin(1)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(-1, keepdim=True)
        result = fused @ result
    return _patch_row(result, extra, grid, first.dtype)


def attention_gradient(
    attention: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], grid: Sequence[int]
) -> torch.Tensor:
    """Gradient-weighted attention (Chefer, Gur & Wolf, ICCV 2021) on the patch grid, ``(B, 1, *grid)``.

    Each block's attention ``A`` ``(B, H, T, T)`` is weighted by the gradient of the class score
    with respect to it, and the positive part averaged over heads, ``Ā = mean_h (∇A ⊙ A)⁺``; starting
    from ``R = I``, each block in forward order adds its mixing of the relevance so far,
    ``R ← R + Ā R``. The map is the class token's row of ``R`` over the patch tokens when there are
    tokens besides the grid's (``T > prod(grid)``; the first is taken as the class token, as in ViT),
    else the mean of ``R``'s rows (no class token), as for :func:`rollout`.

    Args:
        attention: one ``(B, H, T, T)`` per block, in the order the blocks ran (softmaxed weights).
        gradients: ``d score / d A`` for each of them, same shapes: the full gradient, through every
            later block (not one cut at the block's own attention).
        grid: the patch grid ``g``; ``T - prod(g)`` leading tokens are not on it.

    Samples are independent: row ``b`` of the result depends on sample ``b`` only.
    """
    b, t, extra = _tokens(attention, grid, "gradient-weighted attention")
    if len(gradients) != len(attention) or any(g.shape != a.shape for g, a in zip(gradients, attention, strict=False)):
        raise MethodError(
            f"gradient-weighted attention needs one gradient shaped like each of the {len(attention)} blocks' "
            f"attention {tuple(attention[0].shape)}; got {[tuple(g.shape) for g in gradients]}"
        )
    first = attention[0]
    result = torch.eye(t, dtype=torch.float64, device=first.device).expand(b, t, t)
    for a, g in zip(attention, gradients, strict=True):
        weighted = (g.to(torch.float64) * a.to(torch.float64)).clamp(min=0).mean(1)
        result = result + weighted @ result
    return _patch_row(result, extra, grid, first.dtype)


def _tokens(attention: Sequence[torch.Tensor], grid: Sequence[int], method: str) -> tuple[int, int, int]:
    """``(B, T, extra)`` of per-block attention over ``T`` tokens, ``extra`` of them not on ``grid``;
    a :class:`MethodError` naming ``method`` for attention that is not global over one token sequence."""
    if not attention:
        raise MethodError(f"{method} needs the attention weights of at least one block")
    patches = math.prod(grid)
    first = attention[0]
    b, t = first.shape[0], first.shape[-1]
    for a in attention:
        if a.ndim != 4 or a.shape[0] != b or a.shape[-2:] != (t, t):
            raise MethodError(
                f"{method} needs global attention over all {t} tokens in every block (B, H, T, T); "
                f"one block gives {tuple(a.shape)} (windowed attention, as in Swin, has no {method})"
            )
    extra = t - patches
    if not 0 <= extra < patches:
        raise MethodError(
            f"the attention is over {t} tokens, which do not lie on the layer's {tuple(grid)} grid of {patches}; "
            "explain at a layer of the same token sequence (or 'auto')"
        )
    return b, t, extra


def _patch_row(relevance: torch.Tensor, extra: int, grid: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """The class token's row of ``relevance`` ``(B, T, T)`` over the patches (the mean row when there
    is no class token), laid on ``grid`` as ``(B, 1, *grid)``."""
    row = relevance[:, 0, extra:] if extra > 0 else relevance.mean(1)
    return row.to(dtype).reshape(relevance.shape[0], 1, *grid)
