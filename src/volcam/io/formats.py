"""The one table of what volcam reads: file suffixes by format, DICOMweb URLs, and the format of a path.

The readers (:func:`volcam.load`), the folder and manifest reader, the napari plugin's reader and
its ``napari.yaml`` all ask this table (a test keeps ``napari.yaml`` in step), so a suffix one of
them knows is known to all. So do the two-file formats (a NIfTI pair or Analyze ``.hdr``/``.img``,
a MetaImage ``.mhd`` or a detached NRRD ``.nhdr`` and their data file): :func:`companion_files` names
the file each needs beside it, which :func:`volcam.load` checks before any reader opens one. A text
starting with ``http://`` or ``https://`` is a DICOMweb address (:mod:`volcam.io.dicom.web`),
wherever a scan path is accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "DICOMWEB_PATTERNS",
    "DICOM_SUFFIXES",
    "ITK_SUFFIXES",
    "NIFTI_SUFFIXES",
    "READABLE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "companion_files",
    "format_of",
    "full_suffix",
    "is_image_name",
    "is_url",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")  # and files with no suffix at all: DICOM often has none
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg")
READABLE_SUFFIXES = (*DICOM_SUFFIXES, *NIFTI_SUFFIXES, *ITK_SUFFIXES, *VIDEO_SUFFIXES)
# Suffixes of two parts, kept whole: a writer picks the format (and compression) from the name.
_DOUBLE = (".nii.gz", ".img.gz", ".tar.gz")
_URL_SCHEMES = ("http://", "https://")
# A study or series on a DICOMweb server, as napari's reader patterns (fnmatch on the whole address).
DICOMWEB_PATTERNS = ("http://*/studies/*", "https://*/studies/*")


def is_url(path: object) -> bool:
    """Whether ``path`` is a web address (``http://`` or ``https://``, any case): a DICOMweb study or series.

    Only text can be one: a ``Path`` has already folded the ``//`` of an address into one slash.
    """
    return isinstance(path, str) and path.strip().lower().startswith(_URL_SCHEMES)


def full_suffix(name: str | os.PathLike) -> str:
    """``".nii.gz"`` for ``ct.nii.gz``, ``".dcm"`` for ``a.dcm``, ``""`` for ``IM0001``."""
    text = Path(name).name
    lower = text.lower()
    for double in _DOUBLE:
        if lower.endswith(double):
            return text[-len(double) :]
    return Path(text).suffix


def is_image_name(name: str | os.PathLike) -> bool:
    """Whether a file of this name is one volcam would try to read: a known suffix, or none (DICOM)."""
    lower = Path(name).name.lower()
    return "." not in lower or lower.endswith(READABLE_SUFFIXES)


# A NIfTI pair or Analyze image: header and voxels in two files of one name (optionally compressed).
_PAIRED = {".hdr": ".img", ".img": ".hdr"}
# The data file a detached header names: MetaImage's "ElementDataFile = x.raw", NRRD's "data file: x.raw".
_DATA_FILE = {
    ".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE),
    ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE),
}
_HEADER_BYTES = 1 << 16  # a detached header names its data file within its first lines


def companion_files(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """The files a two-file image needs beside ``path``, each with what it holds: a ``.hdr``'s ``.img``
    (voxels) and an ``.img``'s ``.hdr`` (header), a ``.mhd``'s or ``.nhdr``'s data file as its header
    names it (one file; a list or a numbered pattern is left to the reader). ``[]`` for one-file formats.
    """
    path = Path(path)
    name = path.name
    compressed = name.lower().endswith(".gz")
    stem = name[:-3] if compressed else name
    suffix = Path(stem).suffix
    other = _PAIRED.get(suffix.lower())
    if other is not None:
        other = other.upper() if suffix.isupper() else other  # nibabel keeps the case it was given
        role = "image data" if other.lower() == ".img" else "header"
        return [(path.with_name(stem[: -len(suffix)] + other + (name[-3:] if compressed else "")), role)]
    pattern = _DATA_FILE.get(suffix.lower()) if not compressed else None
    if pattern is None:
        return []
    try:
        with open(path, "rb") as file:
            header = file.read(_HEADER_BYTES).decode("latin-1")
    except OSError:
        return []  # the reader says why it cannot be read
    found = pattern.search(header)
    if found is None:
        return []
    data = found.group(1).strip()
    if data.upper() in ("LOCAL", "LIST") or "%" in data or " " in data or data.upper().startswith("LIST"):
        return []  # in the header itself, or many files: the reader's business
    return [(path.parent / data, "image data")]


def format_of(path: str | os.PathLike) -> str:
    """``"dicomweb"`` (an address), ``"dicom-folder"``, ``"nifti"``, ``"itk"``, ``"video"`` or ``"dicom"``
    (the default guess)."""
    if is_url(path):
        return "dicomweb"
    path = Path(path)
    if path.is_dir():
        return "dicom-folder"
    name = path.name.lower()
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("itk", ITK_SUFFIXES), ("video", VIDEO_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return "dicom"
