"""A model card's preprocessing as invertible MONAI transforms: scan → network input → map back.

A card lists its steps as data, e.g. ``{"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0]}}``;
each name is a MONAI array transform (``monai.transforms.<name>``). The scan goes through them as a
``MetaTensor``, which records every geometric step (``applied_operations``), so a map computed on
the network's grid is carried back through the inverse steps to the scan's own voxel grid and
affine: it overlays the original voxel for voxel. Intensity steps have no inverse and need none.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from volcam.errors import CardError, InputError, first_line, one_line
from volcam.model.allowlist import check_plain
from volcam.model.arguments import check_arguments

__all__ = ["CardError", "Preprocessing"]

# The MONAI array transforms a card may name (a card is data and may come from anyone): geometry that
# MONAI can invert, and intensity steps. Nothing here takes code, reads or writes files, waits or
# draws random numbers; every argument is plain JSON (volcam.model.allowlist.check_plain) of the type the
# transform declares for it (volcam.model.arguments.check_arguments).
ALLOWED = frozenset({
    # geometric (invertible)
    "Orientation", "Spacing", "Resize", "Zoom", "Flip", "Rotate90", "ResizeWithPadOrCrop", "SpatialPad",
    "BorderPad", "DivisiblePad", "CenterSpatialCrop", "SpatialCrop", "CenterScaleCrop",
    # intensity
    "ScaleIntensity", "ScaleIntensityRange", "ScaleIntensityRangePercentiles", "NormalizeIntensity",
    "ThresholdIntensity", "ClipIntensityPercentiles", "ShiftIntensity", "Identity",
})  # fmt: skip
# The most voxels a step may produce: a network input of 1024 × 1024 × 256 float32 (1 GiB). Bounds
# what a card can make volcam allocate (Spacing to 0.01 mm, Resize to 10⁵ per axis ...).
MAX_VOXELS = 1 << 28


# Steps whose inverse is index arithmetic (crop or pad), and resampling steps the separable route
# reproduces (linear interpolation, border values outside the grid, as MONAI's inverse does).
_INDEX_STEPS = frozenset({
    "ResizeWithPadOrCrop", "SpatialPad", "BorderPad", "DivisiblePad", "CenterSpatialCrop", "SpatialCrop",
    "CenterScaleCrop",
})  # fmt: skip
_LINEAR_STEPS = frozenset({"Spacing", "Resize", "Zoom"})
# Intensity steps that map each value alone (no range, mean or percentile of the whole array): a clip's
# frames prepared chunk by chunk get the values the whole clip would.
_VALUE_BY_VALUE = frozenset({"ScaleIntensityRange", "ThresholdIntensity", "ShiftIntensity", "Identity"})


def _border_linear_spacing(transform: Any) -> bool:
    """Whether a step resamples as :func:`resample_axis_aligned` does (linearly, centred voxels, the
    border value outside the grid): MONAI's ``Spacing`` with border padding, or ``Resize`` in a linear
    mode without anti-aliasing (``F.interpolate`` with ``align_corners=False`` clamps to the border)."""
    name = type(transform).__name__
    linear = _mode(transform) in ("bilinear", "trilinear", "linear")
    if name == "Resize":
        return (
            linear and not getattr(transform, "anti_aliasing", False) and not getattr(transform, "align_corners", None)
        )
    resample = getattr(transform, "sp_resample", None)
    return (
        name == "Spacing"
        and linear
        and str(getattr(resample, "padding_mode", "")).lower().endswith("border")
        and getattr(resample, "align_corners", None) is False
    )


def _mode(transform: Any) -> str:
    """A resampling step's interpolation mode, lower case ('' when it has none)."""
    for holder in (transform, getattr(transform, "sp_resample", None), getattr(transform, "resizer", None)):
        mode = getattr(holder, "mode", None)
        if mode is not None:
            return str(getattr(mode, "value", mode)).lower()
    return ""


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception: MONAI wraps the real reason in 'applying transform <object at 0x...>'."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


# What a card's step means where its args are silent: the defaults cards were written against. MONAI 1.6
# changes Orientation's ``labels`` default (to the MetaTensor's own space, RAS for every volcam scan) and
# warns on every card that leaves it out; the labels MONAI 1.3–1.5 used say the same thing, silently.
_CARD_DEFAULTS: dict[str, dict[str, Any]] = {"Orientation": {"labels": (("L", "R"), ("P", "A"), ("I", "S"))}}


def _build(step: Mapping[str, Any], where: str, index: int) -> Any:
    import monai.transforms as mt

    if not isinstance(step, Mapping) or not isinstance(step.get("name"), str):
        raise CardError(f"{where}: preprocessing.{index} needs a 'name' (a MONAI transform) and optional 'args'")
    name = step["name"]
    if name not in ALLOWED:
        raise CardError(
            f"{where}: preprocessing.{index}: {one_line(name)[:40]!r} is not a transform volcam runs from a card "
            f"(allowed: {', '.join(sorted(ALLOWED))})"
        )
    args = step.get("args") or {}
    if not isinstance(args, Mapping):
        raise CardError(f"{where}: preprocessing.{index}.args should be an object")
    check_plain(dict(args), where, ("preprocessing", index, "args"))
    check_arguments(getattr(mt, name), args, where, ("preprocessing", index, "args"))  # each of its declared type
    for key in ("spatial_size", "roi_size", "roi_center", "roi_start", "roi_end", "spatial_border", "k"):
        sizes = args.get(key)
        values = sizes if isinstance(sizes, list) else [sizes]
        if sizes is not None and not all(isinstance(v, int | float) and abs(v) <= 4096 for v in values):
            raise CardError(f"{where}: preprocessing.{index}.args.{key}: sizes are whole numbers up to 4096")
    try:
        return getattr(mt, name)(**{**_CARD_DEFAULTS.get(name, {}), **args})
    except Exception as error:  # MONAI checks arguments in many ways
        raise CardError(f"{where}: preprocessing.{index} ({name}): {first_line(error)}") from None


def _applied(transform: Any, image: Any, index: int, what: str, lazy: bool = False) -> Any:
    """``transform(image)`` (``lazy``: only the grid it leads to and its record): the one place a card's
    step runs, a failure of any type one line naming the step and MONAI's own reason."""
    try:
        return transform(image, lazy=True) if lazy else transform(image)
    except Exception as error:  # MONAI raises many types; the cause is what the user needs
        raise InputError(
            f"preprocessing step {index} ({type(transform).__name__}) failed on a {what} of shape "
            f"{tuple(image.shape)}: {one_line(first_line(_root_cause(error)))}"
        ) from None


def _voxels_after(transform: Any, image: Any) -> float | None:
    """Voxels ``transform`` would produce from ``image`` ``(C, *S)``, for the steps that change the
    size by a factor; ``None`` for those whose output size is fixed by their (bounded) arguments."""
    import numpy as np
    from monai.transforms import Spacing, Zoom

    shape = np.asarray(image.shape[1:], dtype=float)
    if isinstance(transform, Spacing):
        pixdim = np.atleast_1d(np.asarray(transform.pixdim, dtype=float))[: len(shape)]
        current = np.asarray(image.pixdim, dtype=float)[: len(shape)]
        if len(pixdim) < len(shape):
            pixdim = np.concatenate([pixdim, current[len(pixdim) :]])
        if not np.all(pixdim > 0):
            return None  # MONAI says what is wrong
        return float(image.shape[0] * np.prod(np.ceil(shape * current / pixdim)))
    if isinstance(transform, Zoom):
        zoom = np.broadcast_to(np.asarray(transform.zoom, dtype=float), shape.shape)
        return float(image.shape[0] * np.prod(np.ceil(shape * np.abs(zoom))))
    return None


def _carried(plain: torch.Tensor, prepared: Any) -> Any:
    """A map ``(1, *S')`` on the network's grid as a ``MetaTensor`` with ``prepared``'s affine and its own
    copy of the inverse records: an inverse consumes the records it reads (and a route that gives up
    half way leaves them half read), and a scan explained by several methods is inverted once per map."""
    from monai.data import MetaTensor

    carried = MetaTensor(
        plain, meta=dict(prepared.meta), applied_operations=copy.deepcopy(list(prepared.applied_operations))
    )
    carried.affine = prepared.affine
    return carried


class Preprocessing:
    """The card's steps as one MONAI ``Compose``, with the inverse for maps.

    Args:
        steps: ``[{"name": ..., "args": {...}}, ...]`` in the order they run.
        channels: channels the network takes; a scan with 3 (RGB ultrasound) is averaged to 1.
        where: the card's path, for error messages.
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]], channels: int = 1, where: str = "model card") -> None:
        from monai.transforms import Compose

        built = [_build(s, where, i) for i, s in enumerate(steps)]  # each step checked (a one-line CardError)
        self.steps = [dict(s) for s in steps]
        self.channels = int(channels)
        self.where = where
        self.compose = Compose(built)
        self._geometric: Any = None  # the geometric steps alone, built on first use by mask()

    def __call__(self, image: torch.Tensor) -> Any:
        """``(C, *S)`` scan (a ``MetaTensor`` from :func:`volcam.load`) → ``(C', *S')`` network input.

        The result is a ``MetaTensor`` that remembers the geometric steps for :meth:`invert`.
        """
        from monai.data import MetaTensor

        if not isinstance(image, MetaTensor):
            image = MetaTensor(torch.as_tensor(image))
        if image.shape[0] != self.channels:
            if self.channels == 1 and image.shape[0] == 3:
                image = image.float().mean(0, keepdim=True)  # colour ultrasound → grey, as the network was trained
            else:
                raise InputError(
                    f"the model takes {self.channels} channel(s); the scan has {image.shape[0]} ({tuple(image.shape)})"
                )
        resampled = self._resample_separably(image)
        if resampled is not None:
            image, rest = resampled
            return self._run(image, rest, "scan")
        # one pass makes floats in the layout MONAI's resampling reads fastest (a DICOM series loads as
        # a view of slice-contiguous memory)
        image = image.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        return self._run(image, self.compose.transforms, "scan")

    def _resample_separably(self, image: Any) -> tuple[Any, Sequence[Any]] | None:
        """The card's leading orientation and linear ``Spacing`` (or ``Resize``) steps in one separable
        pass over the scan as stored, and the steps still to run; ``None`` when the chain does not start
        that way (a clip's chunk of uint8 frames goes to the network's size without a float copy at
        full size, too).

        MONAI runs the steps lazily first: that only computes the grid they lead to (affine and shape)
        and their records for the inverse. The scan then goes to that grid by
        :func:`resample_axis_aligned` straight from its native dtype and memory layout, with no float
        copy of the full scan and no sampling grid: at 512 × 512 × 300, 0.1 s instead of 0.8 s, equal
        to MONAI's own resampling within float32 rounding. Oblique grids take MONAI's path.
        """
        from monai.data import MetaTensor

        from volcam.maps.geometry import resample_axis_aligned

        steps = list(self.compose.transforms)
        k = 0
        while k < len(steps) and type(steps[k]).__name__ == "Orientation":
            k += 1
        if k == len(steps) or not _border_linear_spacing(steps[k]):
            return None
        # a view of the scan with its own meta: the lazy steps record on it, the scan stays as it was
        lazy = MetaTensor(image.as_tensor(), meta=dict(image.meta), applied_operations=list(image.applied_operations))
        for index, step in enumerate(steps[: k + 1]):
            lazy = _applied(step, lazy, index, "scan", lazy=True)
        affine, shape = lazy.peek_pending_affine(), tuple(int(n) for n in lazy.peek_pending_shape())
        if math.prod(shape) * image.shape[0] > MAX_VOXELS:
            return None  # _run names the step that would make too many voxels
        values = resample_axis_aligned(  # affines on the CPU in float64 whatever the scan's device
            image.as_tensor(),
            torch.as_tensor(image.affine, dtype=torch.float64).cpu(),
            torch.as_tensor(affine, dtype=torch.float64).cpu(),
            shape,
        )
        if values is None:
            return None
        records = [*lazy.applied_operations, *lazy.pending_operations]  # what MONAI's apply_pending records
        out = MetaTensor(values, meta=dict(lazy.meta), applied_operations=records)
        out.affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
        return out, steps[k + 1 :]

    def _run(self, image: Any, transforms: Sequence[Any], what: str) -> Any:
        """Each step in turn (they record themselves for the inverse), its output size checked first;
        a failure is one line naming the step and MONAI's own reason."""
        for index, transform in enumerate(transforms):
            name = type(transform).__name__
            voxels = _voxels_after(transform, image)
            if voxels is not None and voxels > MAX_VOXELS:
                raise InputError(
                    f"preprocessing step {index} ({name}) would make {voxels:.3g} voxels of this {what} "
                    f"{tuple(image.shape[1:])} (at most {MAX_VOXELS:.3g}); check the {what}'s spacing and the card"
                )
            image = _applied(transform, image, index, what)
            if image.numel() > MAX_VOXELS:
                raise InputError(f"preprocessing step {index} ({name}) made {image.numel():.3g} voxels; too many")
        return image

    def grid(self, image: torch.Tensor) -> Any | None:
        """What :meth:`__call__` would give for ``image`` ``(C, *S)``, without its values: a ``MetaTensor``
        on the ``meta`` device with the prepared shape ``(C', *S')``, affine and the records
        :meth:`invert` reads; ``None`` when a geometric step cannot run lazily.

        MONAI runs the geometric steps lazily (they only compute the grid they lead to and record
        themselves); intensity steps change no grid and are skipped.
        """
        from monai.data import MetaTensor
        from monai.transforms import InvertibleTransform, LazyTransform

        if not isinstance(image, MetaTensor):
            image = MetaTensor(torch.as_tensor(image))
        # a view of the image with its own meta: the lazy steps record on it, the image stays as it was
        lazy = MetaTensor(image.as_tensor(), meta=dict(image.meta), applied_operations=list(image.applied_operations))
        for index, step in enumerate(self.compose.transforms):
            if isinstance(step, InvertibleTransform):
                if not isinstance(step, LazyTransform):
                    return None
                lazy = _applied(step, lazy, index, "scan", lazy=True)
        shape = (self.channels, *(int(n) for n in lazy.peek_pending_shape()))
        records = [*lazy.applied_operations, *lazy.pending_operations]  # what MONAI's apply_pending records
        out = MetaTensor(torch.empty(shape, device="meta"), meta=dict(lazy.meta), applied_operations=records)
        out.affine = torch.as_tensor(lazy.peek_pending_affine(), dtype=torch.float64).cpu()
        return out

    def frame_by_frame(self, clip: torch.Tensor, grid: Any) -> bool:
        """Whether the steps prepare each frame of ``clip`` ``(C, T, H, W)`` on its own, so that a chunk
        of frames prepared alone gives the whole clip's values: frame ``t`` of the prepared ``grid``
        (:meth:`grid`) lies exactly on frame ``t`` of the clip and no other, and every intensity step
        reads one value at a time (not the clip's range or percentiles)."""
        from monai.transforms import InvertibleTransform

        if grid is None or grid.shape[1] != clip.shape[1] or not hasattr(clip, "affine"):
            return False
        if any(
            not isinstance(t, InvertibleTransform) and type(t).__name__ not in _VALUE_BY_VALUE
            for t in self.compose.transforms
        ):
            return False
        # voxel of the prepared grid -> voxel of the clip: the time axis must map to itself, alone
        m = torch.linalg.inv(torch.as_tensor(clip.affine, dtype=torch.float64).cpu()) @ grid.affine.double()
        unit = torch.zeros(m.shape[0], dtype=torch.float64)
        unit[0] = 1.0
        return bool(torch.allclose(m[0], unit, atol=1e-9) and torch.allclose(m[:, 0], unit, atol=1e-9))

    def chunks(self, clip: torch.Tensor, size: int, device: torch.device) -> Iterator[torch.Tensor]:
        """The clip ``(C, T, H, W)`` prepared ``size`` frames at a time, each ``(C', t, H', W')`` a plain
        float tensor on ``device``; only for steps that work :meth:`frame_by_frame`. Each chunk goes to
        the device as stored (uint8 stays uint8) and is placed where it lies in the clip."""
        from monai.data import MetaTensor

        if not isinstance(clip, MetaTensor):
            raise InputError("a clip is prepared chunk by chunk only as a MetaTensor, which places each chunk")
        plain = clip.as_tensor()
        affine = torch.as_tensor(clip.affine, dtype=torch.float64).cpu()
        meta = {k: v for k, v in clip.meta.items() if k != "affine"}
        for start in range(0, plain.shape[1], size):
            placed = affine.clone()
            placed[:3, 3] += start * affine[:3, 0]  # the chunk's first frame, in the clip's world
            chunk = MetaTensor(plain[:, start : start + size].to(device), meta=dict(meta))
            chunk.affine = placed
            yield self(chunk).as_tensor()

    def invert(self, cam: torch.Tensor, prepared: Any, like: Any = None, *, lazily: bool = False) -> Any:
        """A map on the network's grid ``(1, *S')`` → the scan's grid ``(1, *S)`` with the scan's affine.

        ``prepared`` is what :meth:`__call__` returned for the scan (it holds the steps to undo);
        ``like`` is the scan itself. The cheapest exact route is taken: the crops and pads after the
        last resampling step are undone by index arithmetic (MONAI's own inverses, on the small
        grid), and when what is left is axis-aligned (orientation, one linear Spacing or Resize) the
        map goes to the scan's grid by one separable linear resampling (:func:`resample_axis_aligned`),
        equal to MONAI's inverse to float precision. Other chains (oblique scans, several resampling
        steps, nearest or area modes) take MONAI's full inverse.

        With ``lazily``, the separable route gives a :class:`~volcam.maps.resampled.ResampledMap`
        instead: the same map, resampled slab by slab as writers consume it (no full-size copy); the
        other routes give the tensor as before.
        """
        from monai.data import MetaTensor

        plain = cam.as_tensor() if isinstance(cam, MetaTensor) else cam
        plain = plain.detach().float()
        if plain.ndim == prepared.ndim + 1 and plain.shape[0] == 1:
            plain = plain[0]
        back = self._separable(_carried(plain, prepared), like, lazily) if like is not None else None
        if back is None:  # MONAI's full inverse, from records no other route has read
            back = self.compose.inverse(_carried(plain, prepared).cpu())
        return back if lazily and not isinstance(back, torch.Tensor) else back.cpu().clamp_(0.0, 1.0)

    def _separable(self, carried: Any, like: Any, lazily: bool = False) -> Any:
        """The map on ``like``'s grid by index arithmetic and one separable resampling (a
        :class:`ResampledMap` made when asked, with ``lazily``), or ``None`` when the chain is not one
        this route reproduces exactly."""
        from monai.transforms import InvertibleTransform

        from volcam.maps.geometry import axis_aligned
        from volcam.maps.resampled import ResampledMap

        scan_affine = getattr(like, "affine", None)
        if scan_affine is None or (tuple(like.shape[1:]) != tuple(carried.shape[1:]) and carried.ndim != like.ndim):
            return None
        # Crops and pads only move the grid: whether the network's grid lies along the scan's axes (the
        # test ResampledMap.of makes after them) is known now, before any inverse reads a record. A
        # sheared scan's does not (Spacing gives it a grid with perpendicular axes).
        if axis_aligned(torch.as_tensor(carried.affine).cpu(), torch.as_tensor(scan_affine).cpu()) is None:
            return None
        steps = [t for t in self.compose.transforms if isinstance(t, InvertibleTransform)]
        cut = len(steps)
        while cut and type(steps[cut - 1]).__name__ in _INDEX_STEPS:  # crops and pads: cheap on the small grid
            cut -= 1
        resampling = [t for t in steps[:cut] if type(t).__name__ not in ("Orientation", "Flip", "Rotate90")]
        if len(resampling) > 1 or any(
            type(t).__name__ not in _LINEAR_STEPS or _mode(t) not in ("bilinear", "trilinear", "linear")
            for t in resampling
        ):
            return None  # decided before any inverse runs: MONAI's full inverse gets the records untouched
        for step in reversed(steps[cut:]):
            carried = step.inverse(carried)
        made = ResampledMap.of(carried.as_tensor(), carried.affine, scan_affine, tuple(like.shape[1:]), like.meta)
        if made is None or lazily:
            return made
        return made.region(tuple(slice(0, n) for n in made.shape))

    def mask(self, mask: torch.Tensor, like: Any | None = None) -> torch.Tensor:
        """A mask on the scan's grid ``(*S)`` or ``(1, *S)`` → the network's grid ``(*S')``, boolean.

        Only the card's geometric steps run (those MONAI can invert: orientation, resampling,
        cropping, padding); intensity steps would turn 0/1 into something else. The mask is resampled
        as a float with each step's own interpolation and kept where it is at least one half, so a
        lung or body mask lands where the scan's voxels land. ``like`` (the scan, a ``MetaTensor``)
        gives the affine when ``mask`` is a plain tensor.
        """
        from monai.data import MetaTensor
        from monai.transforms import Compose, InvertibleTransform

        if self._geometric is None:
            self._geometric = Compose([t for t in self.compose.transforms if isinstance(t, InvertibleTransform)])
        plain = mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)
        # the meta holds the affine the geometric steps read
        meta = dict(mask.meta if isinstance(mask, MetaTensor) else getattr(like, "meta", None) or {})
        spatial = like.ndim - 1 if like is not None else plain.ndim - int(plain.shape[0] == 1 and plain.ndim > 1)
        if plain.ndim == spatial:
            plain = plain[None]
        # 0/1 as uint8: a leading orientation + linear resampling runs as one separable pass from it (no
        # float copy of a full-size mask: 576 MB for a clinical cine); MONAI's steps get floats otherwise
        ones = MetaTensor((plain != 0).to(torch.uint8), meta=meta)
        separable = self._resample_separably(ones)
        if separable is not None:
            image, rest = separable
            steps = [t for t in rest if isinstance(t, InvertibleTransform)]
        else:
            image, steps = MetaTensor(ones.as_tensor().float(), meta=meta), self._geometric.transforms
        out = self._run(image, steps, "mask")
        out = out.as_tensor() if isinstance(out, MetaTensor) else out
        return out[0] >= 0.5
