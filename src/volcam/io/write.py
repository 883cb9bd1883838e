"""Maps out, in the source's geometry: NIfTI, and DICOM objects (pictures: :mod:`volcam.viz.render`).

Every writer takes the map on the source image's grid (an explanation or a tensor) and the source
image as :func:`volcam.load` returned it, writes to a temporary name and renames when complete.

DICOM outputs are always a folder of instance files (``0001.dcm``, ...), whatever the kind: a
parametric map or a segmentation is one multi-frame instance, an overlay one instance per slice.
:func:`volcam.io.dicom.instances.dicom_instances` lists what an output holds (what a store step sends
to a PACS).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volcam._version import __version__
from volcam.errors import InputError, first_line
from volcam.io.atomic import atomic_file, atomic_folder, output_folder, source_paths
from volcam.maps.arrays import image_array, map_array, map_voxels
from volcam.maps.colour import COLORMAP, fuse
from volcam.maps.result import MapInfo
from volcam.maps.windowing import Window

if TYPE_CHECKING:
    from volcam.io.dicom.objects import Provenance
    from volcam.io.dicom.placement import Placement

__all__ = ["dicom_kinds", "write_dicom", "write_nifti"]

_BLOCK = (
    8  # overlay slices coloured at once: vectorised (2 M pixels at 512²), while fuse's float temporaries stay ~100 MB
)


def _grid(
    cam: Any, like: Any, result: Any, lazily: bool = False
) -> tuple[Any, MapInfo, np.ndarray, np.ndarray | None, dict]:
    """The map, what it explains, the affine to write it with, and the source image array and meta;
    with ``lazily``, a map still to be resampled stays a :class:`~volcam.maps.resampled.ResampledMap`."""
    values, info, own_affine = map_voxels(cam, result) if lazily else map_array(cam, result)
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

    values, info, affine, _, meta = _grid(cam, like, result, lazily=True)
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    if values.ndim == 2:
        values = np.asarray(values)[..., None]
    codes = (int(meta.get("qform_code", 1) or 1), int(meta.get("sform_code", 1) or 1))
    protected = [*inputs, *source_paths(like), *source_paths(cam)]
    with atomic_file(path, overwrite=overwrite, inputs=protected) as temporary:
        save_nifti(values, affine, temporary, codes, description=info.title()[:79])
    return path


def _overlay_pixels(
    placement: Placement,
    image: np.ndarray,
    modality: str,
    window: Window | None,
    colormap: str,
    alpha: float,
    threshold: float,
) -> Iterator[np.ndarray]:
    """The overlay's RGB slices ``(n, rows, columns, 3)`` uint8, a block of slices at a time.

    A CT window is pointwise, so the grey is made per block (no full-size float copy); an image
    without a window (MR, ultrasound) is scaled by its whole volume's percentiles, once.
    """
    from volcam.maps.colour import display_range

    volume = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)  # grey, or RGB last
    whole = window is None and modality.upper() != "CT"
    under = placement.layout(display_range(volume, modality, window) if whole else volume)
    frames = placement.frames
    for start in range(0, len(frames), _BLOCK):
        heat = np.ascontiguousarray(frames[start : start + _BLOCK])  # one strided copy: slices contiguous
        grey = np.ascontiguousarray(under[start : start + _BLOCK])
        if not whole:
            grey = display_range(grey, modality, window)
        yield fuse(grey, heat, colormap=colormap, alpha=alpha, threshold=threshold)


def write_dicom(
    cam: Any,
    path: str | os.PathLike,
    like: Any,
    *,
    result: Any = None,
    kind: str = "parametric-map",
    threshold: float | None = None,
    fractional: bool = False,
    window: Window | None = None,
    colormap: str = COLORMAP,
    alpha: float = 0.5,
    description: str | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a map over a volume as a standard DICOM object, into the folder ``path``.

    Args:
        cam: the map on ``like``'s grid (an explanation, e.g. ``Model.explain``'s, or a tensor).
        path: the output folder; it holds the object's instance files (``0001.dcm``, ...; list them
            with :func:`volcam.io.dicom.instances.dicom_instances`) and is created whole or not at all.
        like: the source volume from :func:`volcam.load` (``(C, X, Y, Z)`` with its metadata).
        result: what a bare tensor ``cam`` explains (method, class, layer, model) for the descriptions.
        kind: ``"parametric-map"`` (one multi-frame Parametric Map: the map's values 0-1 as float32,
            a real-world value mapping naming method, class and layer; viewers overlay it on the
            CT); ``"segmentation"`` (one multi-frame Segmentation: BINARY where the map exceeds
            ``threshold``, or with ``fractional`` the map itself in 1/255 steps); ``"overlay"`` (the
            map coloured over the windowed image, one RGB Secondary Capture per slice).
        threshold: parametric map: values at or below it are stored as 0, so that viewers leave
            the image clear there (0.1 by default; OHIF colours every positive value; 0 keeps them
            all); segmentation: the map value the segment exceeds (0.5 by default); overlay: map
            values at or below it are not coloured (0.05 by default). The defaults:
            :data:`volcam.io.dicom.objects.THRESHOLDS`.
        window: the overlay's CT window (``"soft_tissue"`` by default for CT).
        description: SeriesDescription (64 characters at most); the default names method, kind,
            class and model.
        series_number: SeriesNumber; the source's + 2000 (map), + 3000 (segmentation) or + 1000
            (overlay) by default.
        overwrite: replace ``path`` if volcam wrote it (a folder of the user's is never replaced).
        inputs: files and folders that must not be touched, besides ``like``'s source.

    The object keeps the source's study, patient module and frame of reference (a PACS files it with
    the study; a scan that was not DICOM gets a new study and frame of reference), refers to the source
    instances its frames come from, and records volcam's version, the model card's name and SHA-256,
    method, layer, class and options (SoftwareVersions, SeriesDescription, ContentDescription,
    DerivationDescription; a segmentation's algorithm parameters). Frames sit at the source slices'
    own positions while the map is on the source's grid (also flipped or with permuted axes), else
    where the map's affine puts them.

    Raises:
        InputError: an unknown kind, a map off ``like``'s grid, a clip (no DICOM object holds a map
            of a cine without a patient frame of reference: write NIfTI), a source that places nothing.
    """
    import pydicom

    from volcam.io.dicom.objects import KINDS, Provenance
    from volcam.io.dicom.placement import place_map

    if kind not in KINDS:
        raise InputError(f"kind={kind!r}; use one of {', '.join(KINDS)}")
    values, info, affine, image, meta = _volume_grid(cam, like, result)
    placement = place_map(values, affine, meta)
    provenance = Provenance(info, __version__)
    overlay = (window, colormap, alpha)
    with _dicom_folder(path, overwrite, [*inputs, *source_paths(like)]) as temporary:
        try:  # highdicom's (or pydicom's) refusal of what it is given is one line naming the output
            datasets = _derived(kind, placement, provenance, image, meta, threshold, fractional, overlay, series_number)
            for number, ds in enumerate(datasets, start=1):
                if description:
                    ds.SeriesDescription = description[:64]
                pydicom.dcmwrite(temporary / f"{number:04d}.dcm", ds, enforce_file_format=True)
        except ValueError as error:
            raise InputError(f"{path}: cannot build the DICOM {kind} ({first_line(error)})") from None
    return Path(path)


def _volume_grid(cam: Any, like: Any, result: Any) -> tuple[np.ndarray, MapInfo, np.ndarray, np.ndarray, dict]:
    """:func:`_grid` for a derived DICOM object: the map ``(x, y, z)`` on the grid of a volume ``like``
    (a clip has no patient frame of reference to place it on)."""
    values, info, affine, image, meta = _grid(cam, like, result)
    if image is None:
        raise InputError("a derived DICOM object needs the scan the map was computed on (like=, from volcam.load)")
    if meta.get("axes", "xyz") != "xyz" or values.ndim != 3:
        raise InputError(
            "a map of a clip cannot be a DICOM parametric map, segmentation or overlay: a cine has no patient "
            "frame of reference to place one on (highdicom, the DICOM standard); write it as NIfTI"
        )
    return values, info, affine, image, meta


def _dicom_folder(
    path: str | os.PathLike, overwrite: bool, protected: Sequence[str | os.PathLike]
) -> AbstractContextManager[Path]:
    """The temporary folder a DICOM output is written into, which becomes ``path``: with ``overwrite`` it
    replaces only a folder of volcam's own instances (:func:`_derived_series`), else ``path`` must be new."""
    if overwrite:
        return output_folder(path, inputs=protected, ours=_derived_series)
    return atomic_folder(path, overwrite=False, inputs=protected)


def _derived(
    kind: str,
    placement: Placement,
    provenance: Provenance,
    image: np.ndarray,
    meta: dict,
    threshold: float | None,
    fractional: bool,
    overlay: tuple[Window | None, str, float],
    series_number: int | None,
) -> Iterator[Any]:
    """The datasets of a derived object of ``kind``, in instance order: one multi-frame parametric map or
    segmentation, or an overlay's slices (coloured a block at a time as they are written, from
    ``overlay``: window, colormap, alpha). ``threshold`` ``None`` is the kind's default."""
    from volcam.io.dicom.objects import THRESHOLDS, overlay_images, parametric_map, segmentation

    cut = THRESHOLDS[kind] if threshold is None else threshold
    if kind == "overlay":
        modality = str(meta.get("modality") or "OT")
        pixels = _overlay_pixels(placement, image, modality, *overlay, cut)
        return overlay_images(placement, pixels, provenance, series_number)
    if kind == "segmentation":
        return iter([segmentation(placement, provenance, cut, fractional, series_number)])
    return iter([parametric_map(placement, provenance, cut, series_number)])


def dicom_kinds(given: str | Sequence[str]) -> tuple[str, ...]:
    """``"parametric-map,overlay"`` (or a list of such) → the DICOM kinds named, each known, in order."""
    from volcam.io.dicom.objects import KINDS

    texts = [given] if isinstance(given, str) else list(given)
    kinds = tuple(dict.fromkeys(k.strip() for text in texts for k in text.split(",") if k.strip()))
    for kind in kinds:
        if kind not in KINDS:
            raise InputError(f"unknown DICOM kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return kinds


def _derived_series(folder: Path) -> bool:
    """Whether every file in ``folder`` is a DICOM instance volcam wrote (its ``MANUFACTURER``): the
    only kind of series folder :func:`write_dicom` replaces."""
    import pydicom

    from volcam.io.dicom.objects import MANUFACTURER

    files = list(folder.iterdir())
    try:
        return bool(files) and all(
            entry.is_file()
            and not entry.is_symlink()
            and str(pydicom.dcmread(entry, stop_before_pixels=True, specific_tags=["Manufacturer"]).get("Manufacturer"))
            == MANUFACTURER
            for entry in files
        )
    except Exception:  # anything that is not a readable DICOM file is not ours
        return False
