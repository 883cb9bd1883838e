"""NIfTI in and out with nibabel: the file's own voxel order, its affine as is (NIfTI world is RAS+)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from volcam.errors import FileFormatError, InputError, first_line
from volcam.io.image import make_volume
from volcam.io.paths import require_regular_file

__all__ = ["load_nifti", "save_nifti"]


def _open(path: Path) -> Any:
    require_regular_file(path)
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, EOFError, OSError, ValueError) as error:
        raise FileFormatError(f"{path}: not a readable NIfTI file ({first_line(error)})") from None
    except Exception as error:  # nibabel raises other types (HeaderDataError, struct.error) on a damaged header
        raise FileFormatError(f"{path}: not a readable NIfTI file ({first_line(error)})") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair | nib.Nifti2Pair):
        raise FileFormatError(f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})")
    return image


def load_nifti(path: str | os.PathLike, volume: int | None = None) -> Any:
    """A 3D NIfTI → ``(1, X, Y, Z)`` MetaTensor; a 4D one needs ``volume=`` to pick one volume.

    The affine is nibabel's (sform when set, else qform), which is RAS+ already, and the array keeps
    the file's voxel order, so the result equals MONAI's ``LoadImage`` on the same file. Scaling
    (``scl_slope``/``scl_inter``) is applied. NaN or infinite voxels are an error.
    """
    path = Path(path)
    image = _open(path)
    shape = image.shape
    # Trailing singleton axes (a 3D volume stored as X×Y×Z×1) are not a fourth dimension.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 4:
        if volume is None:
            raise FileFormatError(
                f"{path}: a 4D NIfTI ({'×'.join(map(str, shape))}) where a 3D volume is expected; "
                f"pick one of its {shape[3]} volumes with volume="
            )
        if not 0 <= volume < shape[3]:
            raise InputError(f"{path}: volume={volume} is out of range (the file has {shape[3]} volumes)")
    elif len(shape) > 4:
        raise FileFormatError(f"{path}: a {len(shape)}D NIfTI; volcam reads 3D volumes (or one volume of a 4D file)")
    elif volume not in (None, 0):
        raise InputError(f"{path}: volume={volume} given for a {len(shape)}D file with one volume")
    try:
        proxy = image.dataobj
        data = np.asarray(proxy[..., volume] if len(shape) == 4 else proxy, dtype=np.float32)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as error:
        raise FileFormatError(f"{path}: the image data is truncated or unreadable ({error})") from None
    data = data.reshape(shape[:3] if len(shape) >= 3 else shape)
    while data.ndim < 3:
        data = data[..., None]
    header = image.header
    extra = {
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
    }
    return make_volume(data[None], image.affine, path=path, modality=None, **extra)


def save_nifti(
    data: np.ndarray, affine: np.ndarray, path: Path, codes: tuple[int, int] = (1, 1), description: str = ""
) -> None:
    """Write ``(X, Y, Z)`` float32 data with ``affine`` as both sform and qform (sform wins on reading).

    The sform stores the affine exactly (up to float32), so the map overlays its source voxel for
    voxel; ``codes`` are the (qform, sform) codes to keep the source's meaning of the world space.
    """
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    qform_code, sform_code = (int(c) or 1 for c in codes)
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine, code=qform_code)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description[:79].encode("ascii", "replace")
    nib.save(image, path)
