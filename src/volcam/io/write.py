"""Maps out, in the source's geometry: NIfTI and a derived DICOM series (pictures: :mod:`volcam.viz.render`).

Every writer takes the map on the source image's grid (``CamResult`` or tensor) and the source
image as :func:`volcam.load` returned it, writes to a temporary name and renames when complete.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import InputError
from volcam.io.atomic import atomic_file, atomic_folder, output_folder, source_paths
from volcam.io.dicom_series import save_instance, slice_geometry
from volcam.maps.arrays import image_array, map_array
from volcam.maps.colour import fuse
from volcam.maps.result import MapInfo
from volcam.maps.windowing import Window

__all__ = ["write_dicom", "write_nifti"]

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# The raw map is stored as integers 0..1000 with RescaleSlope 0.001, so a viewer reads 0..1.
_MAP_SCALE = 1000
_BLOCK = 32  # slices turned into pixels at once: vectorised, while memory stays at a block's size
# Patient, study and frame-of-reference attributes a derived series shares with its source, so a
# PACS files it under the same study; they go into the DICOM files only, never into names or logs.
_SHARED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
)


def _grid(cam: Any, like: Any, result: Any) -> tuple[np.ndarray, MapInfo, np.ndarray, np.ndarray | None, dict]:
    """The map, what it explains, the affine to write it with, and the source image array and meta."""
    values, info, own_affine = map_array(cam, result)
    if like is None:
        if own_affine is None:
            raise InputError("the map has no affine; pass like= (the image it was computed on, from volcam.load)")
        return values, info, own_affine, None, {}
    image, affine, meta = image_array(like)
    if tuple(values.shape) != tuple(image.shape[1:]):
        raise InputError(
            f"map {tuple(values.shape)} is not on the image grid {tuple(image.shape[1:])}; "
            "map it back to the source space first"
        )
    if affine is None:
        raise InputError("like= has no affine; pass the MetaTensor that volcam.load returned")
    return values, info, affine, image, meta


def write_nifti(
    cam: Any,
    path: str | os.PathLike,
    like: Any = None,
    *,
    result: Any = None,
    overwrite: bool = True,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a map as NIfTI (``.nii`` or ``.nii.gz``) with exactly the source's affine.

    Args:
        cam: the map on the source grid: ``CamResult`` or ``(*S)`` / ``(1, *S)`` / ``(1, 1, *S)``.
        path: the file to write.
        like: the source image (its affine wins over the map's own); optional when ``cam`` is a
            ``MetaTensor`` with the source's affine.
        result: the ``CamResult`` for the header description when ``cam`` is a bare tensor.
        inputs: files and folders that must not be touched, besides ``like``'s own source (an
            output that is, holds or lies inside one is refused).

    The affine goes into the sform (exact up to float32) and the qform (rotation part), with the
    source's codes when it was a NIfTI, so the map overlays its source in napari, ITK-SNAP or Slicer.
    """
    from volcam.io.nifti import save_nifti

    values, info, affine, _, meta = _grid(cam, like, result)
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    if values.ndim == 2:
        values = values[..., None]
    codes = (int(meta.get("qform_code", 1) or 1), int(meta.get("sform_code", 1) or 1))
    protected = [*inputs, *source_paths(like), *source_paths(cam)]
    with atomic_file(path, overwrite=overwrite, inputs=protected) as temporary:
        save_nifti(values, affine, temporary, codes, description=info.title()[:79])
    return path


def _source_headers(meta: dict, depth: int, affine: np.ndarray) -> tuple[Any, list[Any] | None]:
    """The first source header (for the shared modules) and one header per slice when they still fit.

    Per-slice headers are used only while the image is still on the grid it was loaded with (same
    affine, one source file per slice); a resampled image gets its geometry from its affine.
    """
    from volcam.io.dicom import read_header

    files = list(meta.get("source_files") or [])
    if not files or not all(Path(f).is_file() for f in files[:1]):
        return None, None
    first = read_header(files[0])
    original = meta.get("original_affine")
    same_grid = original is not None and np.allclose(np.asarray(original, float), affine, atol=1e-6)
    if len(files) != depth or not same_grid or not all(Path(f).is_file() for f in files):
        return first, None
    return first, [read_header(f) for f in files]


def _slice_pixels(
    values: np.ndarray,
    grey: np.ndarray | None,
    start: int,
    stop: int,
    colormap: str,
    alpha: float,
    threshold: float,
) -> np.ndarray:
    """Slices ``start:stop`` of an ``(x, y, z)`` map as stored pixels ``(n, rows, columns[, 3])``: the
    colour overlay on ``grey`` (uint8 RGB), or the map as uint16 0..1000. One strided copy per block
    makes each slice contiguous, so every later step runs at memory speed."""
    heat = np.ascontiguousarray(values[:, :, start:stop].transpose(2, 1, 0))  # (n, rows, columns)
    if grey is not None:
        under = np.ascontiguousarray(grey[:, :, start:stop].transpose(2, 1, 0))
        return fuse(under, heat, colormap=colormap, alpha=alpha, threshold=threshold)
    np.clip(heat, 0.0, 1.0, out=heat)
    heat *= _MAP_SCALE
    return np.rint(heat, out=heat).astype(np.uint16)


def _description(info: MapInfo, kind: str) -> str:
    what = "overlay" if kind == "overlay" else "map 0-1"
    label = f" {info.label}" if info.label is not None else ""
    return f"volcam {info.method or 'CAM'} {what}{label}"[:64]


def write_dicom(
    cam: Any,
    folder: str | os.PathLike,
    like: Any,
    *,
    result: Any = None,
    kind: str = "overlay",
    window: Window | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    threshold: float = 0.05,
    description: str | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a map over a volume as a derived DICOM series: one instance per slice, in ``folder``.

    Args:
        cam: the map on ``like``'s grid (``CamResult`` or tensor).
        folder: where the series goes (``0001.dcm``, ``0002.dcm``, ...); created atomically.
        like: the source volume from :func:`volcam.load` (``(C, X, Y, Z)`` with its metadata).
        kind: ``"overlay"``: the map fused over the windowed image as RGB secondary capture;
            ``"map"``: the map itself as 16-bit grey, read as 0..1 through RescaleSlope.
        window: CT window for the overlay's grey (``"soft_tissue"`` by default for CT).
        description: SeriesDescription (64 characters at most); the default names the method,
            kind and class.
        series_number: SeriesNumber; the source's + 1000 (overlay) or + 2000 (map) by default.
        overwrite: replace ``folder`` if volcam wrote it (a folder of the user's is never replaced).
        inputs: files and folders that must not be touched, besides ``like``'s source.

    The series gets a new SeriesInstanceUID and SOP Instance UIDs, keeps the source's
    StudyInstanceUID, FrameOfReferenceUID and patient module (so a PACS files it with the study),
    and each slice's position, orientation and pixel spacing: the source slice's own when the
    image is still on its loaded grid, else from the affine. A source that was not DICOM gets a
    new study and frame of reference.
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    from volcam._version import __version__
    from volcam.maps.colour import display_range

    if kind not in ("overlay", "map"):
        raise InputError(f"kind={kind!r}; use 'overlay' (RGB over the image) or 'map' (grey 0..1)")
    values, info, affine, image, meta = _grid(cam, like, result)
    if image is None or meta.get("axes", "xyz") != "xyz" or values.ndim != 3:
        raise InputError("a derived DICOM series needs a volume from volcam.load as like= (clips: use a montage)")
    depth = values.shape[2]
    first, per_slice = _source_headers(meta, depth, affine)
    modality = str(meta.get("modality") or "OT")
    grey = display_range(image[0], modality, window) if kind == "overlay" else None
    now = datetime.datetime.now()
    series_uid = generate_uid()
    study_uid = (
        str(first.StudyInstanceUID) if first is not None and "StudyInstanceUID" in first else meta.get("study_uid")
    ) or generate_uid()
    frame_uid = meta.get("frame_of_reference_uid") or generate_uid()
    if first is not None and "SeriesNumber" in first and first.SeriesNumber not in (None, ""):
        base_number = int(first.SeriesNumber)
    else:
        base_number = 0
    number = series_number if series_number is not None else base_number + (1000 if kind == "overlay" else 2000)
    derivation = (
        f"Class activation map by volcam {__version__}: {info.title()}"
        + (f", layer {info.layer}" if info.layer else "")
        + (". Colour overlay on the windowed image" if kind == "overlay" else ". Map values 0 to 1 (RescaleSlope)")
        + ". Research output, not for diagnosis."
    )

    protected = [*inputs, *source_paths(like)]
    writing = (
        output_folder(folder, inputs=protected, ours=_derived_series)
        if overwrite
        else atomic_folder(folder, overwrite=False, inputs=protected)
    )
    with writing as temporary:
        pixels: np.ndarray | None = None
        for k in range(depth):
            if k % _BLOCK == 0:  # the pixels of the next block of slices, contiguous, in one vectorised pass
                pixels = _slice_pixels(values, grey, k, min(k + _BLOCK, depth), colormap, alpha, threshold)
            assert pixels is not None
            source = per_slice[k] if per_slice else None
            if source is not None and "ImagePositionPatient" in source and "ImageOrientationPatient" in source:
                position = [float(v) for v in source.ImagePositionPatient]
                orientation = [float(v) for v in source.ImageOrientationPatient]
                spacing = [float(v) for v in source.PixelSpacing]
            else:
                position, orientation, spacing = slice_geometry(affine, k)
            ds = Dataset()
            if first is not None:
                for keyword in _SHARED:
                    if keyword in first:
                        ds[keyword] = first[keyword]
            ds.StudyInstanceUID = study_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.SOPClassUID = _SECONDARY_CAPTURE
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = number
            ds.InstanceNumber = k + 1
            ds.Modality = modality
            ds.SeriesDescription = description[:64] if description else _description(info, kind)
            ds.DerivationDescription = derivation[:1024]
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.ConversionType = "WSD"
            ds.Manufacturer = "volcam"
            ds.SoftwareVersions = __version__
            ds.BurnedInAnnotation = "NO"
            ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
            ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S")
            ds.ImagePositionPatient = position
            ds.ImageOrientationPatient = orientation
            ds.PixelSpacing = spacing
            step = float(np.linalg.norm(affine[:3, 2]))
            ds.SliceThickness = round(step, 6)
            ds.SpacingBetweenSlices = round(step, 6)
            normal = np.cross(orientation[:3], orientation[3:])
            ds.SliceLocation = round(float(np.dot(normal, position)), 6)
            if source is not None:
                reference = Dataset()
                reference.ReferencedSOPClassUID = source.SOPClassUID
                reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
                ds.SourceImageSequence = [reference]
            ds.Rows, ds.Columns = values.shape[1], values.shape[0]
            ds.PixelRepresentation = 0
            ds.PixelData = pixels[k % _BLOCK].tobytes()
            if grey is not None:  # kind == "overlay"
                ds.SamplesPerPixel = 3
                ds.PhotometricInterpretation = "RGB"
                ds.PlanarConfiguration = 0
                ds.BitsAllocated = ds.BitsStored = 8
                ds.HighBit = 7
            else:
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.BitsAllocated = ds.BitsStored = 16
                ds.HighBit = 15
                ds.RescaleSlope = 1.0 / _MAP_SCALE
                ds.RescaleIntercept = 0
                ds.RescaleType = "US"
                ds.WindowCenter = 0.5
                ds.WindowWidth = 1.0
            save_instance(ds, temporary / f"{k + 1:04d}.dcm")
    return Path(folder)


def _derived_series(folder: Path) -> bool:
    """Whether every file in ``folder`` is a DICOM instance volcam wrote (Manufacturer "volcam"): the
    only kind of series folder :func:`write_dicom` replaces."""
    import pydicom

    files = list(folder.iterdir())
    try:
        return bool(files) and all(
            entry.is_file()
            and not entry.is_symlink()
            and str(pydicom.dcmread(entry, stop_before_pixels=True, specific_tags=["Manufacturer"]).get("Manufacturer"))
            == "volcam"
            for entry in files
        )
    except Exception:  # anything that is not a readable DICOM file is not ours
        return False
