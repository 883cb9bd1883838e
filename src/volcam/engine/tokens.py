"""How a layer's output lies, and laying it back on its grid ``(B, C, *g)`` and out again.

A convolutional layer gives ``(B, C, *g)``, which every method takes as it is. A transformer's
layer gives a token sequence ``(B, N, C)`` (ViT: ``N = k + prod(g)`` with ``k`` leading class or
register tokens) or a channels-last grid ``(B, *g, C)`` (Swin's blocks). :class:`Layout` says which,
and :func:`to_grid` / :func:`from_grid` move between the layer's own layout and the grid. The
engine hands the rest of the network ``from_grid(A)`` for a grid leaf ``A``, so gradients arrive on
the grid too, and activations put back by a perturbation method go through ``from_grid``.

The grid is read off the shapes a probe forward recorded (:func:`infer_layout`): the patch
embedding's convolution gives ``(B, C, *g)`` before the tokens appear, and a Swin stage's grid is
that of the stage's channel-first input. Where the shapes do not tell, a ``reshape`` callable the
user passes (pytorch-grad-cam's ``reshape_transform`` idiom: ``(B, N, C) -> (B, C, *g)``) is
turned into an index map (:func:`reshape_layout`), which makes it invertible.

Pure functions of shapes and tensors; no hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from volcam.errors import LayerError

__all__ = ["MAX_EXTRA_TOKENS", "Layout", "from_grid", "infer_layout", "reshape_layout", "to_grid", "token_error"]

MAX_EXTRA_TOKENS = 16
"""At most this many tokens besides the grid's (a class token, register tokens) are recognised."""

Reshape = Callable[[torch.Tensor], torch.Tensor]
Kind = Literal["grid", "tokens", "channels_last", "index"]


@dataclass(frozen=True)
class Layout:
    """How one layer's output ``t`` maps onto a channel-first grid.

    Attributes:
        kind: ``"grid"``: ``t`` is ``(B, C, *g)`` already; ``"tokens"``: ``(B, extra + prod(g), C)``
            with the ``extra`` tokens first; ``"channels_last"``: ``(B, *g, C)``; ``"index"``: a
            user's reshape, held as ``index`` (for each grid element, the position in one sample's
            flattened ``t`` it comes from).
        grid: ``g``, the spatial shape after laying back.
        extra: tokens that are not on the grid (``"tokens"``), or elements no grid entry takes
            (``"index"``); they keep their values when activations are put back.
        channels: ``C``.
        index: ``(C * prod(g),)`` long, for ``"index"``.
    """

    kind: Kind
    grid: tuple[int, ...]
    channels: int
    extra: int = 0
    index: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def identity(self) -> bool:
        return self.kind == "grid"

    def grid_shape(self, batch: int) -> tuple[int, ...]:
        """``(B, C, *g)``."""
        return (batch, self.channels, *self.grid)

    def describe(self) -> str:
        """Words for a log line: ``"65 tokens (1 extra) on a 4x4x4 grid"``."""
        g = "x".join(map(str, self.grid))
        if self.kind == "tokens":
            return f"{self.extra + math.prod(self.grid)} tokens ({self.extra} extra) on a {g} grid"
        if self.kind == "channels_last":
            return f"channels-last on a {g} grid"
        if self.kind == "index":
            return f"reshaped onto a {g} grid"
        return f"a {g} grid"


def to_grid(t: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The layer output ``t`` laid back as ``(B, C, *g)`` (differentiable; a view where possible)."""
    b = t.shape[0]
    if layout.kind == "grid":
        return t
    if layout.kind == "tokens":
        return t[:, layout.extra :].transpose(1, 2).reshape(layout.grid_shape(b))
    if layout.kind == "channels_last":
        return t.movedim(-1, 1)
    assert layout.index is not None
    return t.reshape(b, -1)[:, layout.index.to(t.device)].view(layout.grid_shape(b))


def from_grid(a: torch.Tensor, template: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``(B, C, *g)`` back in the layer's own layout; ``template`` (the layer's output for the same
    rows, ``(B, ...)``) gives the tokens the grid leaves out. A new tensor, never a view of ``a``."""
    if layout.kind == "grid":
        return a.clone()
    if layout.kind == "tokens":
        tokens = a.flatten(2).transpose(1, 2)
        return torch.cat([template[:, : layout.extra].to(a.dtype), tokens], dim=1)
    if layout.kind == "channels_last":
        return a.movedim(1, -1).clone()
    assert layout.index is not None
    flat = template.reshape(a.shape[0], -1).to(a.dtype)
    return flat.index_copy(1, layout.index.to(a.device), a.reshape(a.shape[0], -1)).view(template.shape)


def infer_layout(
    shape: Sequence[int],
    input_ndim: int,
    earlier: Sequence[Sequence[int]],
    last_axis: bool = False,
    batch: int = 1,
) -> Layout | None:
    """The layout of a layer output of ``shape``, from the outputs recorded before it.

    Args:
        shape: the layer's output shape.
        input_ndim: the model input's ``ndim`` (``2 + spatial axes``).
        earlier: output shapes of the module calls completed before this one, in order; their
            channel-first readings ``(B, C, *g)`` are the grids a token sequence can lie on.
        last_axis: the module acts on the last axis (a ``LayerNorm``, a ``Linear``, a transformer
            block normalising its last axis), so an output of ``input_ndim`` axes is channels-last.
        batch: the input's batch size; an output with another first axis has no layout.

    Returns:
        the layout, or ``None`` for a token sequence whose grid cannot be told (or any other shape
        with no grid, such as a pooled vector).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or shape[0] != batch:  # a vector, or the batch folded into another axis (attention heads)
        return None
    grids = [tuple(int(s) for s in e) for e in earlier if len(e) == input_ndim and e[0] == shape[0]]
    if len(shape) == input_ndim:
        first = (shape[1], shape[2:])
        last = (shape[-1], shape[1:-1])
        known = {(e[1], e[2:]) for e in grids}
        if last_axis or (last in known and first not in known):
            return Layout("channels_last", last[1], last[0])
        return Layout("grid", first[1], first[0])
    if len(shape) != 3 or input_ndim < 4:
        return None
    n, c = shape[1], shape[2]
    candidates = [(e[1], e[2:]) for e in reversed(grids)]
    # the most recent grid the tokens fit, preferring one of the same width (the patch embedding's)
    for same_width in (True, False):
        for channels, grid in candidates:
            p = math.prod(grid)
            if (channels == c or not same_width) and p > 1 and 0 <= n - p <= min(MAX_EXTRA_TOKENS, p - 1):
                return Layout("tokens", grid, c, extra=n - p)
    return None


def token_error(layer: str, shape: Sequence[int]) -> LayerError:
    """The one error for a token layer whose grid volcam cannot tell: what it saw and what to pass."""
    n, c = shape[1], shape[-1]
    return LayerError(
        f"layer {layer!r} gives {tuple(shape)}, {n} tokens of {c} channels, and the model does not tell their "
        "grid; pass reshape=, a function (B, N, C) -> (B, C, *grid), e.g. for a class token and a 4x4x4 grid "
        "lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, 4, -1).movedim(-1, 1)"
    )


def reshape_layout(reshape: Reshape, shape: Sequence[int], input_ndim: int, layer: str) -> Layout:
    """A user's ``reshape`` (``(B, ...) -> (B, C, *g)``) for outputs of ``shape``, as an index map.

    The function is applied to one sample of element positions; it must only select and reorder
    (slice, reshape, permute, transpose), so each grid element is one element of the output, which
    makes the map invertible. Anything else is a :class:`LayerError` naming ``layer``.
    """
    sample = torch.arange(math.prod(shape[1:]), dtype=torch.float64).view(1, *shape[1:])
    try:
        out = reshape(sample)
    except Exception as err:
        raise LayerError(f"reshape= failed on layer {layer!r}'s output {tuple(shape)}: {err}") from None
    if not torch.is_tensor(out) or out.ndim != input_ndim or out.shape[0] != 1:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise LayerError(
            f"reshape= must give (B, C, *grid) with {input_ndim - 2} spatial axes like the input; "
            f"for layer {layer!r}'s {tuple(shape)} it gave {got}"
        )
    index = out.reshape(-1)
    if not torch.equal(index, index.round()) or index.unique().numel() != index.numel():
        raise LayerError(
            f"reshape= must only select and reorder layer {layer!r}'s elements (slice, reshape, permute), "
            "not compute new values"
        )
    grid = tuple(int(s) for s in out.shape[2:])
    return Layout(
        "index", grid, int(out.shape[1]), extra=sample.numel() - index.numel(), index=index.long().contiguous()
    )
