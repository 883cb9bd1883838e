"""Scans as a viewer shows them: radiological orientation, physical scale and origin, grey range.

A volume from :func:`volcam.load` is ``(C, X, Y, Z)`` in the file's voxel order with a RAS affine.
Viewers such as napari show the last two array axes as rows (down) and columns (right) and slide
along the first, so the display order here is (superior, posterior, left): axial slices with the
patient's anterior at the top and the patient's right on the screen's left (the radiological
convention), slice 0 the most inferior. World coordinates are then DICOM's LPS+ in mm, in (S, P, L)
order, so ``scale`` is the voxel size and ``translate`` the position of the first displayed voxel.
Clips ``(C, T, H, W)`` are shown as they are: time (s), rows (mm), columns (mm).

An oblique volume is shown on its nearest axes (the small rotation is dropped from the display,
``oblique`` says so); maps computed on the scan go through the same reordering, so they line up.
A map on another grid of the same world (the network's input grid) is shown in its own display
order and placed over the scan by :meth:`DisplayGeometry.placing`: an affine from its displayed
array to the scan's display coordinates, so a viewer draws it without resampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from volcam.io.image import LPS_TO_RAS, voxel_spacing
from volcam.maps.colour import percentile_limits
from volcam.maps.windowing import window_bounds

__all__ = ["DisplayGeometry", "display_geometry", "display_limits"]

_LPS_DISPLAY = (2, 1, 0)  # display axis d shows the LPS world axis _LPS_DISPLAY[d]: S, P, L


@dataclass(frozen=True)
class DisplayGeometry:
    """How a scan's voxel grid becomes the displayed array, and back.

    Attributes:
        order: display axis ``d`` shows source spatial axis ``order[d]``.
        flip: whether display axis ``d`` runs against its source axis.
        shape: the source's spatial shape, e.g. (X, Y, Z) or (T, H, W).
        scale: size of a displayed voxel per display axis (mm; s on a clip's time axis).
        translate: world position of the first displayed voxel (LPS mm in (S, P, L) order; 0 on clips).
        axes: display axis names, ``"zyx"`` for a volume, ``"tyx"`` for a clip.
        affine: the source's 4×4 RAS affine (what writers need to put a map back in place).
        oblique: the volume's axes are rotated from the patient's; the display drops the rotation.
    """

    order: tuple[int, ...]
    flip: tuple[bool, ...]
    shape: tuple[int, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axes: str
    affine: tuple[tuple[float, ...], ...]
    oblique: bool = False

    def to_display(self, values: Any) -> np.ndarray:
        """Source-ordered ``(*S)`` or ``(*S, C)`` (RGB last) → displayed ``(*D)`` / ``(*D, C)``."""
        values = np.asarray(values)
        extra = tuple(range(len(self.order), values.ndim))
        out = np.transpose(values, tuple(self.order) + extra)
        flipped = tuple(d for d, f in enumerate(self.flip) if f)
        return np.flip(out, flipped) if flipped else out

    def to_source(self, values: Any) -> np.ndarray:
        """The inverse of :meth:`to_display`: a displayed array back in the source's voxel order."""
        values = np.asarray(values)
        flipped = tuple(d for d, f in enumerate(self.flip) if f)
        out = np.flip(values, flipped) if flipped else values
        inverse = tuple(int(i) for i in np.argsort(self.order))
        return np.transpose(out, inverse + tuple(range(len(self.order), values.ndim)))

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-ready values (a viewer layer's metadata keeps them for the writer)."""
        return {
            "order": list(self.order),
            "flip": list(self.flip),
            "shape": list(self.shape),
            "scale": list(self.scale),
            "translate": list(self.translate),
            "axes": self.axes,
            "affine": [list(row) for row in self.affine],
            "oblique": self.oblique,
        }

    def source_of_display(self) -> np.ndarray:
        """The homogeneous matrix taking a displayed index to the source voxel it shows."""
        n = len(self.order)
        matrix = np.zeros((n + 1, n + 1))
        for d, (axis, flip) in enumerate(zip(self.order, self.flip, strict=True)):
            matrix[axis, d] = -1.0 if flip else 1.0
            matrix[axis, n] = self.shape[axis] - 1.0 if flip else 0.0
        matrix[n, n] = 1.0
        return matrix

    def display_world(self) -> np.ndarray:
        """The homogeneous matrix taking a displayed index to the viewer's world (``scale``, ``translate``)."""
        n = len(self.order)
        matrix = np.diag([*self.scale, 1.0])
        matrix[:n, n] = self.translate
        return matrix

    def placing(self, other: DisplayGeometry) -> np.ndarray:
        """The affine taking ``other``'s displayed index to this scan's display world.

        ``other`` is a grid in the same RAS world (its ``affine`` from its voxels to that world), e.g.
        the network input's; a viewer given this affine draws ``other.to_display(map)`` where it lies
        over this scan's layer (``scale``/``translate`` of this geometry). For an oblique scan the
        scan's display drops its rotation; the affine drops the same rotation, so the two line up.
        """
        mine, theirs = np.asarray(self.affine, dtype=np.float64), np.asarray(other.affine, dtype=np.float64)
        scan_voxel = np.linalg.solve(mine, theirs @ other.source_of_display())
        return self.display_world() @ np.linalg.inv(self.source_of_display()) @ scan_voxel

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> DisplayGeometry:
        return cls(
            order=tuple(int(v) for v in data["order"]),
            flip=tuple(bool(v) for v in data["flip"]),
            shape=tuple(int(v) for v in data["shape"]),
            scale=tuple(float(v) for v in data["scale"]),
            translate=tuple(float(v) for v in data["translate"]),
            axes=str(data["axes"]),
            affine=tuple(tuple(float(v) for v in row) for row in data["affine"]),
            oblique=bool(data.get("oblique", False)),
        )


def display_geometry(scan: Any) -> DisplayGeometry:
    """The :class:`DisplayGeometry` of a ``(C, *S)`` scan from :func:`volcam.load` (a MetaTensor)."""
    meta = dict(getattr(scan, "meta", {}) or {})
    shape = tuple(int(v) for v in scan.shape[1:])
    affine = np.asarray(getattr(scan, "affine", np.eye(4)), dtype=np.float64)
    rows = tuple(tuple(float(v) for v in row) for row in affine)
    if meta.get("axes") == "thw" or len(shape) != 3:
        spacing = tuple(float(v) for v in meta.get("spacing") or voxel_spacing(affine, len(shape)))
        axes = "tyx" if meta.get("axes") == "thw" else "zyx"[-len(shape) :]
        return DisplayGeometry(
            tuple(range(len(shape))), (False,) * len(shape), shape, spacing, (0.0,) * len(shape), axes, rows
        )
    from nibabel.orientations import io_orientation

    lps = LPS_TO_RAS @ affine
    ornt = io_orientation(lps)  # per voxel axis: the LPS world axis it runs along, and its sign
    columns = lps[:3, :3]
    sizes = np.linalg.norm(columns, axis=0)
    order, flip = [], []
    for world in _LPS_DISPLAY:
        axis = int(np.flatnonzero(ornt[:, 0] == world)[0])
        order.append(axis)
        flip.append(bool(ornt[axis, 1] < 0))
    first = np.array([shape[a] - 1 if f else 0 for a, f in zip(order, flip, strict=True)], dtype=np.float64)
    index = np.zeros(4)
    index[list(order)] = first
    index[3] = 1.0
    origin = lps @ index
    unit = columns / sizes
    oblique = bool(np.abs(np.abs(unit) - np.eye(3)[:, ornt[:, 0].astype(int)]).max() > 1e-3)
    return DisplayGeometry(
        order=tuple(order),
        flip=tuple(flip),
        shape=shape,
        scale=tuple(float(sizes[a]) for a in order),
        translate=tuple(float(origin[w]) for w in _LPS_DISPLAY),
        axes="zyx",
        affine=rows,
        oblique=oblique,
    )


def display_limits(values: np.ndarray, modality: str | None, window: str | tuple[float, float] = "lung") -> tuple:
    """Grey limits (low, high) for showing ``values`` (slices along axis 0): the CT ``window`` in HU, else
    the 1st-99th percentiles (:func:`volcam.maps.colour.percentile_limits`)."""
    if (modality or "").upper() == "CT":
        return window_bounds(window)
    return percentile_limits(values, axis=0)
