"""DICOM slices from a grid: the one place a slice's geometry comes from an affine, and plain instances are written.

:func:`slice_geometry` places slice ``k`` of an ``(x, y, z)`` grid (the derived objects of a map that
is not on its source's grid, :mod:`volcam.io.dicom_placement`; the synthetic phantoms' source series,
:mod:`volcam.testing.phantoms`). :func:`save_instance` writes a dataset built attribute by attribute
(the phantoms); the derived objects are built by highdicom, which gives them their file meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import InputError
from volcam.io.image import LPS_TO_RAS

__all__ = ["save_instance", "slice_geometry"]


def slice_geometry(affine_ras: np.ndarray, k: int) -> tuple[list[float], list[float], list[float]]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of slice ``k`` of an (x, y, z) grid."""
    lps = LPS_TO_RAS @ affine_ras  # the flip is its own inverse
    row, col = lps[:3, 0], lps[:3, 1]
    if abs(row @ col) > 1e-4 * np.linalg.norm(row) * np.linalg.norm(col):
        raise InputError("the image's in-plane axes are not perpendicular; a DICOM slice cannot hold that grid")
    position = lps @ np.array([0.0, 0.0, float(k), 1.0])
    orientation = np.concatenate([row / np.linalg.norm(row), col / np.linalg.norm(col)])
    return (
        [round(float(v), 6) for v in position[:3]],
        [round(float(v), 8) for v in orientation],
        [round(float(np.linalg.norm(col)), 6), round(float(np.linalg.norm(row)), 6)],
    )


def save_instance(ds: Any, path: Path, deflate: bool = False) -> None:
    """Give ``ds`` its file meta (Explicit VR Little Endian, or Deflated: lossless, a third smaller)
    and write it as a DICOM Part 10 file."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # Deflate (zlib) is a standard transfer syntax every DICOM reader knows: a third smaller, lossless.
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
