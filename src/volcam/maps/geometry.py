"""From a feature-resolution map to a map on the input grid: upsampling, normalisation, metadata.

All functions are dimension-agnostic over ``(B, 1, *s)`` maps with 1, 2 or 3 spatial axes.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "axis_aligned",
    "interpolation_weights",
    "like_input",
    "normalize",
    "normalize_",
    "resample_axis_aligned",
    "upsample",
]

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, 1, *s)`` maps to ``(B, 1, *size)`` by (bi/tri)linear interpolation.

    ``align_corners=False`` keeps voxel centres where MONAI and PyTorch put them, so an upsampled
    map lies on the input voxels it came from. A map already at ``size`` is returned as is.
    """
    size = tuple(int(s) for s in size)
    if tuple(cam.shape[2:]) == size:
        return cam
    mode = _LINEAR_MODES[len(size)]
    return F.interpolate(cam, size=size, mode=mode, align_corners=False)


def normalize(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample to [0, 1] over all its axes; high means important.

    Computes ``(M - min) / (max - min)`` per sample, so a clip ``(B, 1, T, H, W)`` is normalised
    over the whole clip, not per frame. A constant map (all zero, say) becomes all zero, never NaN;
    the maximum of any other map is exactly 1, however small its range (no additive epsilon).
    """
    return normalize_(cam.clone())


def normalize_(cam: torch.Tensor) -> torch.Tensor:
    """:func:`normalize` in place (a large map that nobody else holds: no second copy of its size)."""
    flat = cam.flatten(1)
    view = (-1, *[1] * (cam.ndim - 1))
    low = flat.amin(dim=1).view(view)
    span = flat.amax(dim=1).view(view) - low
    return cam.sub_(low).div_(torch.where(span > 0, span, torch.ones_like(span)))


def like_input(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give ``cam`` the affine and metadata of ``x`` when ``x`` is a MONAI ``MetaTensor``.

    The map is on the input grid, so the input's affine places it in patient space as it is.
    MONAI is looked up in ``sys.modules`` rather than imported: an input cannot be a
    ``MetaTensor`` unless MONAI is already loaded, and importing it costs time and memory.
    """
    monai_data = sys.modules.get("monai.data")
    if monai_data is None or not isinstance(x, monai_data.MetaTensor):
        return cam
    return monai_data.MetaTensor(cam, meta=dict(x.meta), applied_operations=list(x.applied_operations))


def axis_aligned(src_affine: torch.Tensor, dst_affine: torch.Tensor, tol: float = 1e-6) -> Any:
    """``(axes, scale, offset)`` when every destination voxel axis runs along one source axis, else ``None``.

    A destination voxel index ``k`` along axis ``i`` lies at source voxel coordinate
    ``scale[i] * k + offset[i]`` along source axis ``axes[i]`` (``inv(src_affine) @ dst_affine``
    is a scaled, signed permutation plus a translation): orientation flips and permutations,
    spacing changes and crops compose to this; a rotation or shear does not.
    """
    m = torch.linalg.inv(src_affine.double()) @ dst_affine.double()
    n = m.shape[0] - 1
    linear = m[:n, :n]
    axes, scale, offset = [], [], []
    for i in range(n):
        column = linear[:, i].abs()
        p = int(column.argmax())
        if column[p] <= 0 or (column.sum() - column[p]) > tol * float(column[p]) or p in axes:
            return None
        axes.append(p)
        scale.append(float(linear[p, i]))
        offset.append(float(m[p, n]))
    return axes, scale, offset


_ROW = 32  # contiguous elements after the interpolated axis from which a pass goes slice by slice
_SLICE = 1 << 12  # ... and elements per slice (below, a slice's call costs more than its work; measured: a
# 16 × 512 slice is lerped in 5.5 ms per 512 slices, gathered in 8-20 ms; a 16 × 150 one, 3.4 vs 1.9 ms)


def _take(x: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(axis, index)`` through a view as ``(before, axis, after)``, or ``(before, axis)``
    when ``axis`` is the fastest: PyTorch's CPU ``index_select`` on that view is several times faster
    than on the tensor's own shape or than advanced indexing (measured, one thread: 45000 rows of 512
    → 150 samples in 7 ms, 34 ms by ``[:, index, :]`` on ``(45000, 512, 1)``). ``x`` is usually a
    permuted view of contiguous memory whose axes are in memory order: the view then costs nothing
    (any other layout is copied by ``reshape``)."""
    before, after = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
    flat = x.reshape(before, x.shape[axis], after) if after > 1 else x.reshape(before, x.shape[axis])
    taken = torch.index_select(flat, 1, index)
    return taken.reshape(*x.shape[:axis], index.numel(), *x.shape[axis + 1 :])


def _interpolate_axis(
    x: torch.Tensor, axis: int, size: int, step: float, start: float, dtype: torch.dtype
) -> torch.Tensor:
    """One separable pass: ``x`` (axes in memory order) → ``size`` samples along ``axis`` at source
    coordinates ``step · k + start`` (clamped to the border), linear between the two neighbours, in ``dtype``.

    Where what follows ``axis`` in memory is long enough, each output slice is one ``lerp`` of two
    source slices written straight into the result (no gathered copies: the pass moves about one
    output's bytes, at memory speed); along the fastest axis the neighbours are gathered instead.
    """
    n = x.shape[axis]
    if size == n and step == 1.0 and start == 0.0:  # the same grid along this axis (a clip's frames): no pass
        return x
    coordinate = (torch.arange(size, dtype=torch.float64) * step + start).clamp(0, n - 1)
    low = coordinate.floor().long()
    high = (low + 1).clamp(max=n - 1)
    weight = (coordinate - low).to(dtype)
    per_slice = math.prod(x.shape[:axis]) * math.prod(x.shape[axis + 1 :])
    if math.prod(x.shape[axis + 1 :]) < _ROW or per_slice < _SLICE:  # small slices: one gather beats a loop
        shape = [1] * x.ndim
        shape[axis] = -1
        out = _take(x, axis, low.to(x.device)).to(dtype)  # the first pass makes floats, at its own size
        above = _take(x, axis, high.to(x.device)).to(dtype)
        along = weight.to(x.device).reshape(shape)
        if axis == x.ndim - 1:  # lerp_ with weights along the fastest axis runs unvectorised (3× slower
            return above.sub_(out).mul_(along).add_(out)  # than these three passes, measured)
        return out.lerp_(above, along)
    out = torch.empty((*x.shape[:axis], size, *x.shape[axis + 1 :]), dtype=dtype, device=x.device)
    lows, highs, fractions = low.tolist(), high.tolist(), weight.tolist()
    k = 0
    while k < size:
        i, j = lows[k], highs[k]
        end = k + 1
        while end < size and lows[end] == i:  # an upsampling: outputs between the same two sources
            end += 1
        below = x.select(axis, i)
        if end - k > 1 and i != j:  # one lerp for the run, its weights broadcast along the axis
            shape = [1] * x.ndim
            shape[axis] = end - k
            run = weight[k:end].to(x.device).reshape(shape)
            torch.lerp(below.unsqueeze(axis).to(dtype), x.select(axis, j).unsqueeze(axis).to(dtype), run,
                       out=out.narrow(axis, k, end - k))  # fmt: skip
            k = end
            continue
        for m in range(k, end):
            target, w = out.select(axis, m), fractions[m]
            if w == 0.0 or i == j:
                target.copy_(below)  # exact: lerp(a, b, 0) is a
            elif x.dtype == dtype:
                torch.lerp(below, x.select(axis, j), w, out=target)
            else:  # a stored int16 scan: each slice becomes floats on its way into the result
                target.copy_(below)
                target.lerp_(x.select(axis, j).to(dtype), w)
        k = end
    return out


def interpolation_weights(size: int, n: int, step: float, start: float) -> torch.Tensor:
    """``(size, n)`` float64: row ``k`` holds the weights :func:`_interpolate_axis` gives the ``n`` source
    samples for destination ``k`` (at ``step · k + start``, clamped to the border; two neighbours).
    Its column sums say how much each source sample contributes to the whole destination axis."""
    coordinate = (torch.arange(size, dtype=torch.float64) * step + start).clamp(0, n - 1)
    low = coordinate.floor().long()
    high = (low + 1).clamp(max=n - 1)
    weight = coordinate - low
    matrix = torch.zeros(size, n, dtype=torch.float64)
    rows = torch.arange(size)
    matrix.index_put_((rows, low), 1.0 - weight, accumulate=True)
    matrix.index_put_((rows, high), weight, accumulate=True)
    return matrix


def _cheapest_order(shape: Sequence[int], sizes: Sequence[int]) -> tuple[int, ...]:
    """The order of the passes (axes of ``shape``, in memory order, going to ``sizes``) that writes the
    fewest elements; a pass along the fastest axis gathers element by element and counts thrice."""

    def cost(order: tuple[int, ...]) -> int:
        now, total = list(shape), 0
        for axis in order:
            now[axis] = sizes[axis]
            total += math.prod(now) * (3 if math.prod(now[axis + 1 :]) < _ROW else 1)
        return total

    return min(itertools.permutations(range(len(shape))), key=cost)


def resample_axis_aligned(
    cam: torch.Tensor,
    src_affine: torch.Tensor,
    dst_affine: torch.Tensor,
    dst_shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    region: Sequence[slice] | None = None,
) -> torch.Tensor | None:
    """An image or map ``(C, *s)`` on a grid with ``src_affine`` → ``(C, *dst_shape)`` in ``dtype`` on the
    grid of ``dst_affine``, by separable linear interpolation (voxel centres matched through the
    affines; outside the source grid the border value, as ``grid_sample``'s ``padding_mode="border"``).
    ``None`` when the grids are not axis-aligned to each other (then a full affine resampling is needed).

    ``region`` (one ``slice`` per destination axis, steps of 1) asks for a box of the destination only:
    the result is ``(C, *box)``, that box of the whole within float32 rounding (each destination voxel
    is computed from its own coordinate), so a large result can be made and consumed slab by slab.

    Cost: one pass per axis (:func:`_interpolate_axis`), in the order that moves the fewest
    elements; no full-volume sampling grid is built. The source may be in any dtype and memory
    layout (a DICOM series' slice-contiguous int16 view): the passes run in its own memory order,
    and the one reordering copy is made on whichever side is smaller. So a 512 × 512 × 300 CT goes
    to a network's grid (0.1 s on 2 cores), and a map back to the CT (0.2 s), in about one output's
    memory traffic. A smaller result is contiguous; a larger one has its first axis fastest in memory
    (NIfTI's and DICOM's order), so writing it copies nothing.
    """
    aligned = axis_aligned(src_affine, dst_affine)
    if aligned is None:
        return None
    axes, scale, offset = aligned
    n = len(dst_shape)
    box = [range(int(size))[r] for size, r in zip(dst_shape, region, strict=True)] if region else None
    if box is not None:
        if any(b.step != 1 for b in box):
            raise ValueError(f"region {region}: slices with a step of 1")
        dst_shape = [len(b) for b in box]
        offset = [o + s * b.start for o, s, b in zip(offset, scale, box, strict=True)]
        cam, offset = _source_for(cam, axes, scale, offset, dst_shape)
    # passes[a]: (destination size, scale, offset) of the destination axis read from source axis a
    passes = {axes[i]: (int(dst_shape[i]), scale[i], offset[i]) for i in range(n)}
    shrinking = math.prod(dst_shape) < math.prod(cam.shape[1:])
    if cam.shape[0] > 1 and cam.stride(0) < min(cam.stride(a + 1) for a in range(n)):
        # interleaved channels (an RGB clip as decoded: (T, H, W, 3) in memory): all channels in one go,
        # carried along as a trailing axis, rather than a strided view per channel
        return _resample_interleaved(cam, axes, passes, dst_shape, shrinking, dtype)
    # The source's axes in memory order (outermost first): a view, never a copy.
    order = sorted(range(n), key=lambda a: (-cam.stride(a + 1), a))
    channels = []
    for channel in cam:  # (*s) each: PyTorch gathers fastest on a contiguous tensor without a batch axis
        if shrinking:  # work in the source's memory order; reorder the small result at the end
            out, held = channel.permute(*order), list(order)
        else:  # reorder the small source now (one copy): the large result comes out with its first axis
            # fastest in memory, as NIfTI stores voxels and DICOM stores slices (a writer copies nothing)
            held = list(reversed(axes))
            out = channel.permute(*held).contiguous()
        for i in _cheapest_order(tuple(out.shape), [passes[a][0] for a in held]):
            out = _interpolate_axis(out, i, *passes[held[i]], dtype)
        out = out.to(dtype).permute(*[held.index(a) for a in axes])  # destination order, a view
        channels.append(out.contiguous() if shrinking else out)
    result = torch.stack(channels) if len(channels) > 1 else channels[0][None]
    return _own(result, cam)


def _source_for(
    cam: torch.Tensor, axes: Sequence[int], scale: Sequence[float], offset: Sequence[float], sizes: Sequence[int]
) -> tuple[torch.Tensor, list[float]]:
    """The part of ``cam`` ``(C, *s)`` that destination samples ``scale · k + offset`` (``k < sizes``) read,
    as a view, with the offsets moved to it: a region's passes then run over its own few source
    slices, and a box larger than what it reads is made in the writers' memory order (the choice
    between the two orders compares the box with what it reads, not with the whole source).

    One voxel of margin either side keeps every clamp and every neighbour where it was.
    """
    moved = list(offset)
    for i, a in enumerate(axes):
        n = cam.shape[a + 1]
        ends = (offset[i], offset[i] + scale[i] * max(0, sizes[i] - 1))
        low = max(0, min(n - 1, math.floor(min(ends)) - 1))
        high = max(low, min(n - 1, math.ceil(max(ends)) + 1))
        if low > 0 or high < n - 1:
            cam = cam.narrow(a + 1, low, high - low + 1)
            moved[i] = offset[i] - low
    return cam, moved


def _resample_interleaved(
    cam: torch.Tensor,
    axes: Sequence[int],
    passes: dict[int, tuple[int, float, float]],
    dst_shape: Sequence[int],
    shrinking: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """:func:`resample_axis_aligned` of a source whose channels are fastest in memory ``(C, *s)``: the
    passes run over ``(*s, C)`` (a view), each moving whole pixels; the result is ``(C, *dst_shape)``,
    contiguous when it is the smaller side."""
    n = len(dst_shape)
    x = cam.movedim(0, -1)  # (*s, C), a view of the interleaved memory
    if shrinking:
        held = sorted(range(n), key=lambda a: (-x.stride()[a], a))
        out = x.permute(*held, n)
    else:
        held = list(reversed(axes))
        out = x.permute(*held, n).contiguous()
    for i in _cheapest_order(tuple(out.shape[:n]), [passes[a][0] for a in held]):
        out = _interpolate_axis(out, i, *passes[held[i]], dtype)
    out = out.to(dtype).permute(*[held.index(a) for a in axes], n).movedim(-1, 0)
    return _own(out.contiguous() if shrinking else out, cam)


def _own(result: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``result``, copied when every pass was the identity and it is still ``source``'s memory (a caller
    may write into what it gets)."""
    if result.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        return result.clone()
    return result
