"""A map on a scan's grid that is made when asked, box by box, from the small map it comes from.

A map on the network's grid (``(1, 144, 144, 160)``, or a clip's ``(1, 300, 224, 224)``) goes back to
the scan's grid (``(1, 512, 512, 300)``; ``(1, 300, 600, 800)``) by one separable linear resampling.
Done whole, that is a float32 copy of the scan's size (300 MB for a CT, 576 MB for a clinical cine)
that the writers then read once and drop. :class:`ResampledMap` holds the small map and the two grids
instead; writers ask it for slabs (a NIfTI's blocks, a video's frames, a montage's slices) and each
slab is resampled as it is consumed, so the full-size map never exists unless someone asks for it
whole (:meth:`ResampledMap.tensor`). A slab equals that box of the whole within float32 rounding:
every destination voxel is computed from its own coordinate (:func:`volcam.maps.geometry.resample_axis_aligned`).

It reads like a NumPy array of the map's spatial shape ``(*S)``: ``shape``, ``ndim``, ``dtype``
(float32) and basic indexing (``m[..., 10:20]``, ``m[t]``) give float32 arrays in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from typing_extensions import TypeIs

from volcam.maps.geometry import axis_aligned, interpolation_weights, resample_axis_aligned

__all__ = ["MapValues", "ResampledMap", "is_resampled"]

_SLAB_VOXELS = 4 << 20  # destination voxels per slab (16 MB of float32)


class ResampledMap:
    """A map ``(1, *S)`` in [0, 1] on a destination grid, computed box by box from ``source``.

    Args:
        source: ``(1, *s)`` the map on its own grid (any float dtype, on any device).
        source_affine: ``(N+1, N+1)`` voxel → world of ``source``'s grid.
        affine: ``(N+1, N+1)`` voxel → world of the destination grid (the scan's).
        shape: the destination's spatial shape ``S``.
        meta: the destination's metadata (the scan's), for :meth:`tensor`.

    The two grids must be axis-aligned to each other (:func:`volcam.maps.geometry.axis_aligned`); use
    :meth:`of`, which says ``None`` when they are not.
    """

    is_map = True  # values are a map in [0, 1]: writers may store it quantised without looking first
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        source: torch.Tensor,
        source_affine: torch.Tensor,
        affine: torch.Tensor,
        shape: Sequence[int],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.source = source.detach().float().cpu()
        self.source_affine = torch.as_tensor(source_affine, dtype=torch.float64).cpu()
        self.affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
        self.shape = tuple(int(n) for n in shape)
        self.meta = dict(meta or {})
        self._scaled: tuple[int, torch.Tensor] | None = None  # (top, top · source + ½) for levels()

    @classmethod
    def of(
        cls,
        source: torch.Tensor,
        source_affine: torch.Tensor,
        affine: torch.Tensor,
        shape: Sequence[int],
        meta: dict[str, Any] | None = None,
    ) -> ResampledMap | None:
        """The map, or ``None`` when the grids are not axis-aligned (a full affine resampling is needed)."""
        made = cls(source, source_affine, affine, shape, meta)
        corner = tuple(slice(0, min(1, n)) for n in made.shape)
        return made if made.region(corner) is not None else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def region(self, box: Sequence[slice]) -> torch.Tensor | None:
        """``(1, *box)`` float32 in [0, 1]: the map on that box of the destination grid."""
        out = resample_axis_aligned(self.source, self.source_affine, self.affine, self.shape, region=box)
        return None if out is None else out.clamp_(0.0, 1.0)  # linear interpolation may overshoot a hair

    def levels(self, box: Sequence[slice], top: int = 255) -> np.ndarray:
        """``(*box)`` uint8: ``round(map · top)`` on that box (round half up), as a writer stores a map.

        The scaling and the half for rounding are applied to the small source (``top · m + ½``, which
        linear interpolation carries through: its weights sum to one), so the box is resampled once and
        cast once: no float copy of the box to scale, round and convert. The result is laid out as the
        resampling makes it (a large box: first axis fastest, as NIfTI stores voxels).
        """
        if not 0 < top <= 255:
            raise ValueError(f"top={top}: uint8 levels go up to 255")
        if self._scaled is None or self._scaled[0] != top:
            self._scaled = (top, self.source.clamp(0.0, 1.0).mul_(float(top)).add_(0.5))
        out = resample_axis_aligned(self._scaled[1], self.source_affine, self.affine, self.shape, region=box)
        assert out is not None  # axis-aligned by construction (of())
        # every value lies in [½, top + ½] (a lerp between two such values may pass an end by an ulp,
        # which truncation towards zero still maps to 0 or top): the cast is round half up
        return out[0].to(torch.uint8).numpy()

    def __getitem__(self, key: Any) -> np.ndarray:
        """Basic indexing of the ``(*S)`` map: slices (step 1), integers and one ``...``."""
        box, squeeze = _box(key, self.shape)
        out = self.region(box)
        assert out is not None  # axis-aligned by construction (of())
        values = out[0].numpy()
        return values[tuple(0 if s else slice(None) for s in squeeze)] if any(squeeze) else values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[...]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def tensor(self) -> Any:
        """The whole map ``(1, *S)``: a ``MetaTensor`` with the destination's metadata (a plain tensor
        without it); the full-size copy that slab-wise consumers avoid."""
        whole = self.region(tuple(slice(0, n) for n in self.shape))
        assert whole is not None
        if not self.meta:
            return whole
        from monai.data import MetaTensor

        return MetaTensor(whole, meta=dict(self.meta))

    def slabs(self, axis: int, voxels: int = _SLAB_VOXELS) -> Any:
        """``(indices, values)`` along ``axis``, a few MB at a time: ``values`` is ``(*S)`` with ``axis``
        cut to ``indices`` (a ``range``)."""
        axis = axis % self.ndim
        per_index = max(1, self.size // max(1, self.shape[axis]))
        step = max(1, voxels // per_index)
        for start in range(0, self.shape[axis], step):
            box = [slice(0, n) for n in self.shape]
            box[axis] = slice(start, min(start + step, self.shape[axis]))
            out = self.region(box)
            assert out is not None
            yield range(start, min(start + step, self.shape[axis])), out[0]

    def mass(self, axis: int) -> np.ndarray:
        """``(S[axis],)`` float64: the map's sum over every other axis, per index along ``axis``, from
        the small source alone (no destination voxel is made).

        Linear interpolation is separable, so summing the destination over an axis weighs each source
        sample along it by how much it contributes there (the column sums of that axis's
        :func:`~volcam.maps.geometry.interpolation_weights`); the axis asked keeps its weights.
        (Interpolating values in [0, 1] with convex weights never leaves [0, 1], so the clamp of
        :meth:`region` changes nothing summed here.)
        """
        axis = axis % self.ndim
        aligned = axis_aligned(self.source_affine, self.affine)
        assert aligned is not None  # axis-aligned by construction (of())
        axes, scale, offset = aligned
        values = self.source[0].double()
        kept = None
        for i in range(self.ndim):  # destination axis i reads source axis axes[i]
            weights = interpolation_weights(self.shape[i], values.shape[axes[i]], scale[i], offset[i])
            if i == axis:
                kept = weights
            else:
                shape = [1] * values.ndim
                shape[axes[i]] = -1
                values = values * weights.sum(0).reshape(shape)
        assert kept is not None
        along = values.sum(dim=tuple(a for a in range(values.ndim) if a != axes[axis]))
        return (kept @ along).numpy()

    def __repr__(self) -> str:
        return f"ResampledMap({tuple(self.source.shape[1:])} → {self.shape})"


MapValues: TypeAlias = "np.ndarray | ResampledMap"  # a map's voxels: an array, or made when asked


def is_resampled(values: Any) -> TypeIs[ResampledMap]:
    """Whether ``values`` is a :class:`ResampledMap` (made when asked) rather than an array."""
    return isinstance(values, ResampledMap)


def _box(key: Any, shape: tuple[int, ...]) -> tuple[list[slice], list[bool]]:
    """A basic index → one slice per axis and which axes an integer took (to squeeze)."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for a map of {len(shape)} axes")
    key = key + (slice(None),) * (len(shape) - len(key))
    box, squeeze = [], []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            r = range(n)[k]
            if r.step != 1:
                raise IndexError("a ResampledMap takes slices with a step of 1")
            box.append(slice(r.start, r.stop))
            squeeze.append(False)
        else:
            i = range(n)[int(k)]  # IndexError when out of range, negative counted from the end
            box.append(slice(i, i + 1))
            squeeze.append(True)
    return box, squeeze
