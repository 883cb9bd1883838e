"""DICOM instance files: one written from a dataset built attribute by attribute, and those an output holds.

:func:`save_instance` gives a dataset its file meta and writes it (the synthetic phantoms' source
series, :mod:`volcam.testing.phantoms`; the derived objects are built by highdicom, which gives them
theirs). :func:`dicom_instances` lists the instance files a :func:`volcam.io.write.write_dicom`
output holds: what a store step sends to a PACS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from volcam.errors import InputError
from volcam.io.atomic import is_temporary

__all__ = ["dicom_instances", "save_instance"]


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


def dicom_instances(path: str | os.PathLike) -> list[Path]:
    """The instance files a :func:`volcam.io.write.write_dicom` output holds, in instance order (what a
    store step sends).

    ``path`` is the output folder (a single ``.dcm`` file is its own list).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such DICOM output folder")
    return sorted(
        entry for entry in path.iterdir() if entry.suffix == ".dcm" and entry.is_file() and not is_temporary(entry.name)
    )
