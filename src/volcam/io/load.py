"""``volcam.load``: any supported file, DICOM folder or DICOMweb address → one channel-first ``MetaTensor``.

The format is chosen by what the path is (a folder is a DICOM series, an ``http(s)://`` address a
series on a DICOMweb server) and its suffix; a file with an unknown suffix is tried as DICOM, since
many DICOM files have none. Each reader module imports
its library (pydicom, nibabel, SimpleITK, PyAV) only when a file of its kind is read, so
``import volcam`` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from volcam.errors import FileFormatError, InputError
from volcam.io.formats import NIFTI_SUFFIXES, companion_files, format_of
from volcam.io.paths import not_regular_reason, require_regular_file

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["NIFTI_SUFFIXES", "format_of", "load"]


def load(path: str | os.PathLike, series: str | int | None = None, *, volume: int | None = None) -> MetaTensor:
    """Read an image file or a DICOM folder as a channel-first MONAI ``MetaTensor``.

    Args:
        path: a DICOM folder (searched recursively) or file; ``.nii``/``.nii.gz``; ``.nrrd``/
            ``.mha``; ``.mp4``/``.avi`` (needs ``volcam[video]``); or, as text, a DICOMweb address
            ``http(s)://host/<root>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]``
            (retrieved with WADO-RS and read as a DICOM folder; credentials from the environment,
            see :mod:`volcam.io.dicom.web`).
        series: for a folder or study holding several DICOM series, which one: its
            SeriesInstanceUID, its SeriesDescription or its SeriesNumber. Without it such a folder
            is an error that lists the series.
        volume: for a 4D NIfTI, the index of the volume to read (4D is an error without it).

    Returns:
        A volume ``(C, X, Y, Z)`` in the file's voxel order with ``affine`` (RAS+, mm) as MONAI's
        ``LoadImage`` gives it, or a clip ``(C, T, H, W)`` (ultrasound cine, video) whose spacing
        is (frame interval in s, mm, mm). Values are in the modality's units (HU for CT) and in
        the scan's native dtype where that is exact: int16 for a CT stored as integers with
        RescaleSlope 1 and an integer RescaleIntercept (most CT), a NIfTI's own dtype when it is
        not scaled (uint16 and uint32 become int32 and int64, float64 float32), a clip's stored
        type (uint8 grey or RGB, 0-255, for ultrasound and video; uint16 stays uint16); float32
        when a rescale or scaling needs it. A clip is a view of its frames as stored, frame after
        frame (each ``(H, W, C)``). Convert with ``.float()`` to compute.
        ``meta`` holds ``modality``, ``spacing``, ``frame_interval``, ``problems`` and, for DICOM,
        the series and study UIDs; see :mod:`volcam.io.image`.

    Raises:
        FileFormatError: the path is missing, not a regular file (a FIFO, a device), empty, not an
            image, damaged, ambiguous, holds NaNs or claims more memory than there is.
        DependencyError: a codec or video decoder is needed and not installed (the message says which).

    For an address, a server that cannot be reached, refuses the credentials, has no such study or
    series, breaks off the transfer or is not DICOMweb is a one-line :class:`FileFormatError`.

    Problems that do not stop loading (missing slices, uneven spacing, gantry tilt, unknown
    spacing) are issued as :class:`~volcam.errors.VolcamWarning` and kept in ``meta["problems"]``.
    """
    if format_of(path) == "dicomweb":
        if volume is not None:
            raise InputError(
                f"{path}: volume= picks a volume of a 4D NIfTI (--volume on the command line); "
                "this is a DICOMweb address"
            )
        from volcam.io.dicom.web import load_url

        return load_url(str(path), series)
    path = Path(path)
    if not path.is_dir():
        require_regular_file(path)  # a FIFO or /dev/zero would block or never end: refuse before opening
        _require_companions(path)
    kind = format_of(path)
    if series is not None and kind not in ("dicom-folder", "dicom"):
        raise InputError(
            f"{path}: series= picks a series in a DICOM folder (--series on the command line); this is a single file"
        )
    if volume is not None and kind != "nifti":
        raise InputError(
            f"{path}: volume= picks a volume of a 4D NIfTI (--volume on the command line); this is not a NIfTI file"
        )
    if kind == "nifti":
        from volcam.io.nifti import load_nifti

        return load_nifti(path, volume)
    if kind == "itk":
        from volcam.io.itk import load_itk

        return load_itk(path)
    if kind == "video":
        from volcam.io.video import load_video

        return load_video(path)
    from volcam.io.dicom.reader import load_dicom

    return load_dicom(path, series)


def _require_companions(path: Path) -> None:
    """A one-line :class:`FileFormatError` when a two-file image lacks the file it needs beside it (a
    ``.hdr`` its ``.img``, a ``.mhd`` its data file), or that file is no regular file (a FIFO would block)."""
    for companion, role in companion_files(path):
        reason = not_regular_reason(companion)
        if reason is not None:
            what = "is missing" if reason.startswith("missing") else f"is {reason}"
            raise FileFormatError(
                f"{path}: {companion.name}, the {role} this file needs beside it, {what}; "
                "keep the two files of the image together"
            )
