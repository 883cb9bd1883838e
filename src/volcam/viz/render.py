"""Pictures for people who would rather look than read: fused overlays and PNG montages.

A montage is a grid of slices (every n-th, or the hottest) with the map over the windowed image, a
colour bar and a title saying what is explained (and, when given, a mask such as the lesions drawn as an
outline, with the slices that hold most of it); for a clip, a strip of frames. Volumes are shown
in the radiological convention whatever their voxel order: axial slices with the patient's right
on the left and anterior at the top, coronal and sagittal with superior at the top. matplotlib is
imported when a picture is made, with its object API (no pyplot state), so it is thread-safe.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import InputError
from volcam.io.atomic import atomic_file
from volcam.io.image import voxel_spacing
from volcam.maps.arrays import image_array, map_voxels
from volcam.maps.colour import COLORMAP, display_range, fuse, percentile_limits
from volcam.maps.resampled import MapValues, is_resampled
from volcam.maps.windowing import Window

# display_range and fuse live in maps.colour
__all__ = ["PICTURE_ALPHA", "PICTURE_THRESHOLD", "display_range", "fuse", "montage"]

#: How the pictures (montages, a clip's video) fuse a map over the image (:func:`volcam.maps.colour.fuse`):
#: the colour's opacity where the map is 1, and the map value at or below which nothing is coloured.
PICTURE_ALPHA = 0.5
PICTURE_THRESHOLD = 0.05


def _mass(values: MapValues, axis: int) -> np.ndarray:
    """The map's sum per index along ``axis`` (an array, or a map made slab by slab)."""
    if is_resampled(values):
        return values.mass(axis)
    return values.sum(axis=tuple(a for a in range(values.ndim) if a != axis))


@dataclass(frozen=True)
class _Reoriented:
    """A volume's voxel order → (L, P, S): the nibabel transform, the new shape, spacing per axis (mm),
    the acquisition's slice axis (in the new order) and each slice's position along it (mm, RAS)."""

    transform: np.ndarray
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    axis: int
    positions: np.ndarray

    def volume(self, values: np.ndarray) -> np.ndarray:
        """``values`` in (L, P, S) order: a view (flips and transpositions)."""
        from nibabel.orientations import apply_orientation

        return apply_orientation(values, self.transform)

    def source_index(self, k: int) -> tuple[int, int]:
        """(source axis, index) of slice ``k`` along the slice axis in (L, P, S) order."""
        source_axis = int(np.flatnonzero(self.transform[:, 0] == self.axis)[0])
        flipped = self.transform[source_axis, 1] < 0
        return source_axis, self.shape[self.axis] - 1 - k if flipped else k

    def slice_of(self, values: MapValues, k: int) -> np.ndarray:
        """Slice ``k`` along the slice axis, in (L, P, S) order, of an array or a map made slab by slab
        (only that slice is made)."""
        if not is_resampled(values):
            return _panel(self.volume(values), self.axis, k)
        source_axis, index = self.source_index(k)
        box = [slice(None)] * values.ndim
        box[source_axis] = slice(index, index + 1)
        thin = self.volume(values[tuple(box)])  # one slice thick, reoriented; the axis kept, length 1
        return _panel(thin, self.axis, 0)


def _reoriented(shape: tuple[int, ...], affine: np.ndarray | None) -> _Reoriented:
    """How a volume of ``shape`` with ``affine`` is shown (:class:`_Reoriented`)."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    if affine is None:
        affine = np.eye(4)
    ornt = io_orientation(affine)
    transform = ornt_transform(ornt, axcodes2ornt(("L", "P", "S")))
    shown = [0, 0, 0]
    for axis, (to, _) in enumerate(transform):
        shown[int(to)] = shape[axis]
    affine = affine @ inv_ornt_aff(transform, shape)
    slice_axis = int(ornt[2, 0])  # the world axis the file's slices step along
    positions = affine[slice_axis, 3] + affine[slice_axis, slice_axis] * np.arange(shown[slice_axis])
    return _Reoriented(transform, tuple(shown), voxel_spacing(affine, 3), slice_axis, positions)


def _panel(volume: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice ``k`` along ``axis`` of an (L, P, S)-ordered ``(X, Y, Z)`` volume, as screen rows × columns."""
    if axis == 2:  # axial: rows anterior → posterior, columns patient right → left
        return volume[:, :, k].T
    if axis == 1:  # coronal: superior at the top, patient right on the left
        return volume[:, k, :].T[::-1]
    return volume[k, :, :].T[::-1]  # sagittal: superior at the top, anterior on the left


def _choose(scores: np.ndarray, every: int | None, hottest: int | None, max_panels: int) -> list[int]:
    """Indices to show: the ``hottest`` by map mass, else every ``every``-th (default: fit ``max_panels``)."""
    n = len(scores)
    if hottest is not None:
        return sorted(np.argsort(-scores, kind="stable")[: max(1, min(hottest, n))].tolist())
    step = every or max(1, int(np.ceil(n / max_panels)))
    chosen = list(range(0, n, step))
    return chosen[:max_panels]


def montage(
    image: Any,
    cam: Any,
    path: str | os.PathLike,
    *,
    result: Any = None,
    window: Window | None = None,
    every: int | None = None,
    hottest: int | None = None,
    max_panels: int = 16,
    columns: int | None = None,
    colormap: str = COLORMAP,
    alpha: float = PICTURE_ALPHA,
    threshold: float = PICTURE_THRESHOLD,
    title: str | None = None,
    outline: Any = None,
    outlined: int = 0,
    overwrite: bool = True,
) -> Path:
    """Save a PNG montage of ``cam`` over ``image``: slices of a volume or frames of a clip.

    Args:
        image: the source, as :func:`volcam.load` returns it: ``(C, X, Y, Z)`` volume or
            ``(C, T, H, W)`` clip (``meta["axes"] == "thw"``).
        cam: the map on the same grid: a ``CamResult`` or ``(*S)`` / ``(1, *S)`` / ``(1, 1, *S)``.
        path: the ``.png`` to write (atomically).
        result: the ``CamResult`` the map came from, for the title, when ``cam`` is a bare tensor.
        window: CT window preset or (width, level) in HU; CT defaults to ``"soft_tissue"``.
        every: show every n-th slice or frame; ``hottest``: show the n with the most map mass.
        max_panels: at most this many panels when neither is given.
        title: replaces the generated "method · class · score" title.
        outline: a mask on the same grid (``(*S)`` or ``(1, *S)``, e.g. the lesions): its edge is drawn
            in white on each panel; ``outlined``: also show the n slices (frames) with the most of it.

    Returns:
        The path written.
    """
    data, affine, meta = image_array(image)
    values, info, _ = map_voxels(cam, result)  # a map still to be resampled is read slice by slice
    if tuple(values.shape) != tuple(data.shape[1:]):
        raise InputError(f"map {tuple(values.shape)} is not on the image grid {tuple(data.shape[1:])}")
    pick = functools.partial(_choose, every=every, hottest=hottest, max_panels=max_panels)
    mask = None if outline is None else _Outline(_outline_mask(outline, tuple(values.shape)), outlined)
    if meta.get("axes") == "thw":
        panels = _clip_panels(data, values, meta, pick, window, mask)
    else:
        panels = _volume_panels(data, values, affine, meta.get("modality"), window, pick, mask)
    figure = _figure(panels, columns, colormap=colormap, alpha=alpha, threshold=threshold)
    figure.suptitle(info.title() if title is None else title, fontsize=10)
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png", dpi=100, facecolor="white")
    return path


@dataclass(frozen=True)
class _Panels:
    """What a montage shows: (grey picture, map) per panel, their labels, the pixel aspect (row/column
    spacing) and how many columns suit them."""

    pictures: list[tuple[np.ndarray, np.ndarray]]
    labels: list[str]
    aspect: float
    columns: int
    outlines: tuple[np.ndarray, ...] = ()  # a mask's slice per panel, drawn as its edge


@dataclass(frozen=True)
class _Outline:
    """A mask to outline ``(*S)`` bool, and how many of the slices holding most of it to show besides."""

    mask: np.ndarray
    slices: int = 0

    def add_slices(self, chosen: list[int], mass: np.ndarray) -> list[int]:
        """``chosen`` and the ``slices`` indices of ``mass`` (the mask's voxels per slice) with the most, sorted."""
        most = [int(k) for k in np.argsort(-mass, kind="stable")[: self.slices] if mass[k] > 0]
        return sorted(set(chosen) | set(most))


def _outline_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as a boolean array of ``shape`` (a leading channel of 1 dropped); an InputError if it is not."""
    plain = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if plain.ndim == len(shape) + 1 and plain.shape[0] == 1:
        plain = plain[0]
    if tuple(plain.shape) != shape:
        raise InputError(f"outline mask {tuple(plain.shape)} is not on the image grid {shape}")
    return plain != 0


def _clip_panels(
    data: np.ndarray,
    values: MapValues,
    meta: dict,
    pick: Callable[[np.ndarray], list[int]],
    window: Window | None,
    outline: _Outline | None = None,
) -> _Panels:
    """The frames with the most map mass (``data`` ``(C, T, H, W)`` as loaded, ``values`` ``(T, H, W)``);
    rows and columns as the scanner showed them. Only the frames shown are scaled for display, with the
    grey range of the whole clip."""
    modality = meta.get("modality")
    limits = percentile_limits(data, axis=1) if window is None else None
    chosen = pick(_mass(values, 0))
    if outline is not None:
        chosen = outline.add_slices(chosen, _mass(outline.mask, 0))
    shown = [display_range(data[:, t], modality, window, limits).transpose(1, 2, 0) for t in chosen]  # (H, W, C)
    pictures = [
        (frame if frame.shape[-1] == 3 else frame[..., 0], values[t]) for frame, t in zip(shown, chosen, strict=True)
    ]
    interval = meta.get("frame_interval")
    labels = [f"t = {t * interval:.2f} s" if interval else f"frame {t}" for t in chosen]
    spacing = meta.get("spacing", (1, 1, 1))
    outlines = () if outline is None else tuple(outline.mask[t] for t in chosen)
    return _Panels(pictures, labels, spacing[1] / spacing[2], len(pictures), outlines)


def _volume_panels(
    data: np.ndarray,
    values: MapValues,
    affine: np.ndarray | None,
    modality: str | None,
    window: Window | None,
    pick: Callable[[np.ndarray], list[int]],
    outline: _Outline | None = None,
) -> _Panels:
    """The slices with the most map mass of a volume ``(C, X, Y, Z)`` (channel 0 as grey), in the
    viewer's orientation."""
    # A CT window is pointwise: only the panels shown are windowed (not a float copy of the whole CT);
    # an image without one (MR) is scaled by its whole volume's percentiles.
    pointwise = window is not None or (modality or "").upper() == "CT"
    gray = data if pointwise else display_range(data, modality, window)
    shown = _reoriented(tuple(values.shape), affine)
    grey, axis, spacing = shown.volume(gray[0]), shown.axis, shown.spacing
    source_axis, first = shown.source_index(0)
    mass = _mass(values, source_axis)  # map mass per slice, in the file's order
    chosen = pick(mass if first == 0 else mass[::-1])
    if outline is not None:
        held = _mass(outline.mask, source_axis)
        chosen = outline.add_slices(chosen, held if first == 0 else held[::-1])
    pictures = [
        (display_range(_panel(grey, axis, k), modality, window) if pointwise else _panel(grey, axis, k),
         shown.slice_of(values, k))
        for k in chosen
    ]  # fmt: skip
    labels = [f"{'xyz'[axis]} = {shown.positions[k]:.1f} mm" for k in chosen]  # RAS patient coordinate
    rows_axis, cols_axis = {2: (1, 0), 1: (2, 0), 0: (2, 1)}[axis]
    outlines = () if outline is None else tuple(shown.slice_of(outline.mask, k) for k in chosen)
    aspect = spacing[rows_axis] / spacing[cols_axis]
    return _Panels(pictures, labels, aspect, min(len(pictures), 4), outlines)


def _figure(panels: _Panels, columns: int | None, **fusing: Any) -> Any:
    """A matplotlib ``Figure`` (no pyplot: no global state) of the panels with the maps fused over them
    (:func:`volcam.maps.colour.fuse`) and a colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    columns = columns or panels.columns
    rows = int(np.ceil(len(panels.pictures) / columns))
    height, width = panels.pictures[0][1].shape
    panel_inches = 2.6
    figure = Figure(
        figsize=(columns * panel_inches + 0.9, rows * panel_inches * min(2.0, height * panels.aspect / width) + 0.8)
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    for ax in grid.ravel():
        ax.set_axis_off()
    for i, (ax, (picture, heat), label) in enumerate(zip(grid.ravel(), panels.pictures, panels.labels, strict=False)):
        ax.imshow(fuse(picture, heat, **fusing), aspect=panels.aspect)
        if i < len(panels.outlines) and panels.outlines[i].any():
            ax.contour(panels.outlines[i].astype(np.float32), levels=[0.5], colors="white", linewidths=0.9)
        ax.set_title(label, fontsize=8)
    bar = figure.colorbar(
        ScalarMappable(Normalize(0, 1), fusing["colormap"]), ax=grid.ravel().tolist(), fraction=0.03, pad=0.02
    )
    bar.set_label("map (0 = none, 1 = strongest)", fontsize=8)
    return figure
