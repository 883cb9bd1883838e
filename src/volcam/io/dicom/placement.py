"""Where a map's slices go in a derived DICOM object, and which source instances they come from.

A map written as DICOM (parametric map, segmentation, overlay) lies on its source's frame of
reference. Its frames go in the order viewers stack them (:func:`viewer_order`): ascending position
along the slice normal ``row × column``, as a series' own instances sort. OHIF puts a parametric
map's frames into the source volume in file order and dcmqi (3D Slicer) stacks them in file order,
so any other order shows the map on the mirrored slices. :func:`place_map` decides, from the map's
affine and the scan's metadata alone:

- when the map's grid is the source series' own grid, or that grid flipped or with its axes
  permuted (a ``Flip``/``Orientation`` transform), the frames are a *view* of the map in the
  source's own row/column/slice layout, each at its source slice's own position (also past a gap
  in the series, which a regular grid cannot hold) and referring to that slice's instance;
- any other grid (resampled, cropped) is written slice by slice, each frame placed from the affine
  (its slice axis reversed when it runs against the normal); highdicom still refers frames to the
  source slices they coincide with;
- a scan that was not DICOM gets a stand-in source with a new study and frame of reference, and
  the derived object refers to no instance.

The frames are never copied: ``(slices, rows, columns)`` views of the map (:attr:`Placement.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volcam.errors import InputError
from volcam.io.dicom.geometry import directions, slice_geometry
from volcam.io.image import LPS_TO_RAS

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["Placement", "place_map", "viewer_order"]

# Type 2 attributes the derived objects copy from their source (highdicom reads them as attributes):
# a source without them gets them empty, which is what DICOM asks for an unknown value and adds no
# identifier the source did not hold.
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_ON_GRID = 1e-3  # voxels: how close the map's grid must lie to the source's to be the same grid


def viewer_order(positions: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """The order viewers stack frames in: indices sorting ``positions`` ``(N, 3)`` (LPS mm) ascending
    along the normal ``row × column`` of ``orientation`` (ImageOrientationPatient), as OHIF
    (cornerstone), dcmqi and volcam's own reader sort a series' instances; stable for equal positions."""
    distance = np.asarray(positions, dtype=float).reshape(-1, 3) @ directions(np.asarray(orientation, dtype=float))[2]
    return np.argsort(distance, kind="stable")


@dataclass
class Placement:
    """The map's frames and the geometry and sources a derived DICOM object needs, frames in
    :func:`viewer_order` (ascending along the slice normal).

    Attributes:
        values: the map ``(x, y, z)`` float32 (its :attr:`frames` are views of it).
        references: source headers for highdicom, one per instance (patient, study, frame of
            reference, geometry; Type 2 patient and study attributes present, empty if unknown).
        positions: ``(slices, 3)`` ImagePositionPatient per frame, mm (LPS), ascending along the normal.
        orientation: ImageOrientationPatient (row direction, then column direction).
        pixel_spacing: (between rows, between columns) mm.
        thickness: mm between slices along their normal.
        stand_in: the references are a stand-in for a source that was not DICOM: the object must
            refer to no instance.
        source_slices: whether frame ``k`` is source slice ``k`` (its own grid and layout).
        frame_numbers: for a multi-frame source, the file's frame number (1-based) of each frame.
        axes, flips: how the map's ``(x, y, z)`` axes were laid out as the frames (see :meth:`layout`).
    """

    values: np.ndarray
    references: list[Dataset]
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    thickness: float
    stand_in: bool
    source_slices: bool
    frame_numbers: np.ndarray | None = None
    axes: tuple[int, ...] = (0, 1, 2)
    flips: tuple[bool, ...] = (False, False, False)

    def layout(self, volume: np.ndarray) -> np.ndarray:
        """Any ``(x, y, z, ...)`` array on the map's grid (the scan itself) laid out as the frames are:
        ``(slices, rows, columns, ...)``, a view."""
        view = volume.transpose(*self.axes, *range(3, volume.ndim))
        for axis, flip in enumerate(self.flips):
            if flip:
                view = np.flip(view, axis=axis)
        return view.swapaxes(0, 2)

    @property
    def frames(self) -> np.ndarray:
        """The map's slices ``(slices, rows, columns)`` in the order and layout they are written: a view."""
        return self.layout(self.values)

    @property
    def first(self) -> Dataset:
        """The header the patient, study and frame of reference are taken from."""
        return self.references[0]


def _reference(ds: Dataset) -> Dataset:
    """A copy of a source header without pixel data, its missing Type 2 patient/study attributes empty."""
    ref = ds.copy()
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ref:
            del ref[keyword]
    for keyword in _TYPE_2:
        if keyword not in ref:
            setattr(ref, keyword, None)
    if str(ref.get("PatientIdentityRemoved", "")).upper() == "YES" and not (
        "DeidentificationMethod" in ref or "DeidentificationMethodCodeSequence" in ref
    ):  # the source's claim is kept; DICOM then needs a method, which the source did not state
        ref.DeidentificationMethod = "not stated by the source"
    return ref


def _source_grid(meta: dict) -> tuple[list[Dataset], Any, tuple[int, int, int], bool] | None:
    """The source instances of a DICOM scan (ordered headers, in the loader's slice order), their
    stack geometry, the source grid's shape ``(columns, rows, slices)`` and whether it is one
    multi-frame file; ``None`` if the scan was not DICOM. A source without a frame of reference gets
    a new one (the derived objects need one)."""
    from pydicom.uid import generate_uid

    from volcam.io.dicom.headers import read_header
    from volcam.io.dicom.stacks import multiframe_geometry, series_geometry

    files = [Path(f) for f in meta.get("source_files") or []]
    if not files:
        return None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(
            f"{missing[0]}: a source file of the scan is gone; a derived DICOM object needs the source "
            "series' headers (patient, study, frame of reference, references)"
        )
    headers = [read_header(f) for f in files]
    first = headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    multiframe = len(headers) == 1 and (frames > 1 or "PerFrameFunctionalGroupsSequence" in first)
    if multiframe:
        geometry = multiframe_geometry(first, files[0])
        count = frames
    else:
        geometry = series_geometry(list(zip(files, headers, strict=True)))
        count = len(headers)
        headers = [headers[i] for i in geometry.order]
    if geometry.fatal or not geometry.known:
        why = "; ".join(geometry.fatal) or "its slices have no ImagePositionPatient/ImageOrientationPatient"
        raise InputError(f"{files[0]}: the source cannot place a derived DICOM object ({why})")
    shape = (int(first.Columns), int(first.Rows), count)
    references = [_reference(ds) for ds in headers]
    if "FrameOfReferenceUID" not in first:  # the derived object needs one; a new one is shared by all
        frame_of_reference = generate_uid()
        for ref in references:
            ref.FrameOfReferenceUID = frame_of_reference
    return references, geometry, shape, multiframe


def _source_layout(
    shape: tuple[int, ...], affine: np.ndarray, source_affine: np.ndarray, source_shape: tuple[int, int, int]
) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
    """How a grid of ``shape`` on ``affine`` is the source grid ``(columns, rows, slices)``: the map axis
    along each source axis and whether it runs backwards; ``None`` when they are not the same voxels."""
    index = np.linalg.inv(source_affine) @ affine  # map voxel index -> source voxel index
    linear = np.round(index[:3, :3])
    one_per_axis = np.all(np.abs(linear).sum(axis=0) == 1) and np.all(np.abs(linear).sum(axis=1) == 1)
    if not one_per_axis or not np.allclose(index[:3, :3], linear, atol=_ON_GRID):
        return None  # not the same voxels with axes flipped or permuted
    axes = tuple(int(np.flatnonzero(linear[i])[0]) for i in range(3))
    if tuple(shape[a] for a in axes) != tuple(source_shape):
        return None
    flips = tuple(bool(linear[i, axes[i]] < 0) for i in range(3))
    first = [source_shape[i] - 1 if flips[i] else 0 for i in range(3)]  # where the map's voxel 0 lies
    if not np.allclose(index[:3, 3], first, atol=_ON_GRID):
        return None
    return axes, flips


def _from_affine(affine: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
    """Positions, orientation, pixel spacing and slice distance of an ``(x, y, z)`` grid's slices."""
    geometry = [slice_geometry(affine, k) for k in range(depth)]
    positions = np.array([g[0] for g in geometry], dtype=float)
    orientation = np.array(geometry[0][1], dtype=float)
    spacing = (float(geometry[0][2][0]), float(geometry[0][2][1]))
    normal = np.cross(orientation[:3], orientation[3:])
    thickness = abs(float((LPS_TO_RAS @ affine)[:3, 2] @ normal))
    return positions, orientation, spacing, thickness or 1.0


def _stand_in(
    size: tuple[int, int],
    positions: np.ndarray,
    orientation: np.ndarray,
    spacing: tuple[float, float],
    thickness: float,
    modality: str,
) -> Dataset:
    """A source header for a scan that was not DICOM: a new study (made now) and frame of reference, no patient."""
    import datetime

    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    now = datetime.datetime.now()
    ds = Dataset()
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = size
    ds.ImagePositionPatient = [float(v) for v in positions[0]]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    return _reference(ds)


def place_map(values: np.ndarray, affine: np.ndarray, meta: dict) -> Placement:
    """Where the slices of a map ``(x, y, z)`` with a RAS ``affine`` go, given its scan's ``meta``.

    Raises:
        InputError: the scan's source files are gone, its source holds no geometry, or the map's
            in-plane axes are not perpendicular (no DICOM slice holds that grid).
    """
    source = _source_grid(meta)
    if source is not None:
        references, geometry, shape, multiframe = source
        layout = _source_layout(values.shape, affine, LPS_TO_RAS @ geometry.affine_lps, shape)
        if layout is not None:  # the source's slices, which its geometry holds in viewer order
            _, orientation, spacing, thickness = _from_affine(LPS_TO_RAS @ geometry.affine_lps, 1)
            return Placement(
                values=values,
                references=references,
                positions=np.asarray(geometry.positions, dtype=float),
                orientation=orientation,
                pixel_spacing=spacing,
                thickness=float(geometry.step) or thickness,
                stand_in=False,
                source_slices=True,
                frame_numbers=np.asarray(geometry.order) + 1 if multiframe else None,
                axes=layout[0],
                flips=layout[1],
            )
    positions, orientation, spacing, thickness = _from_affine(affine, values.shape[2])
    flips = (False, False, False)
    if values.shape[2] > 1 and viewer_order(positions[[0, -1]], orientation)[0] == 1:
        # The map's slice axis runs against the normal: its frames are its slices from the last.
        positions, flips = positions[::-1].copy(), (False, False, True)
    if source is not None:
        references = source[0]
        stand_in = False
    else:
        modality = str(meta.get("modality") or "OT")
        rows, columns = values.shape[1], values.shape[0]
        references = [_stand_in((rows, columns), positions, orientation, spacing, thickness, modality)]
        stand_in = True
    return Placement(values, references, positions, orientation, spacing, thickness, stand_in, False, flips=flips)
