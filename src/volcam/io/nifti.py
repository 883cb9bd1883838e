"""NIfTI in and out with nibabel: the file's own voxel order, its affine as is (NIfTI world is RAS+)."""

from __future__ import annotations

import gzip
import logging
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from volcam.errors import FileFormatError, InputError, first_line, one_line
from volcam.io.image import affine_problem, make_volume, warn_problem
from volcam.io.memory import check_fits
from volcam.io.paths import check_fits_file, require_regular_file

__all__ = ["load_nifti", "save_nifti"]


class _Collect(logging.Handler):
    """Keeps what nibabel logs while it checks a header (``pixdim[1,2,3] should be non-zero; setting 0
    dims to 1``): those are fixes made to the geometry, for ``problems`` rather than stderr."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(one_line(record.getMessage()))


def _open(path: Path, problems: list[str] | None = None) -> Any:
    require_regular_file(path)
    log = logging.getLogger("nibabel.global")
    collect, propagate = _Collect(), log.propagate
    log.addHandler(collect)
    log.propagate = False
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, EOFError, OSError, ValueError) as error:
        raise FileFormatError(f"{path}: not a readable NIfTI file ({first_line(error)})") from None
    except Exception as error:  # nibabel raises other types (HeaderDataError, struct.error) on a damaged header
        raise FileFormatError(f"{path}: not a readable NIfTI file ({first_line(error)})") from None
    finally:
        log.removeHandler(collect)
        log.propagate = propagate
    for message in collect.messages:
        if problems is not None:
            warn_problem(problems, f"{path}: nibabel fixed the header: {message}")
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair | nib.Nifti2Pair):
        raise FileFormatError(f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})")
    return image


def _usable(affine: np.ndarray) -> str | None:
    """Why a 4×4 affine places no voxel (NaN, infinity, a zero or singular matrix); ``None`` if it does."""
    if not np.isfinite(affine).all():
        return "holds NaN or infinity"
    if affine_problem(affine) is not None:
        return "is zero or singular (a zero voxel size or parallel axes)"
    return None


def _affine(image: Any, path: Path, problems: list[str]) -> np.ndarray:
    """The affine nibabel would use (sform, else qform, else pixdim), or the next usable one with a problem.

    nibabel takes the sform whenever its code is set, even when it holds NaN or is singular; then the
    qform (when its code is set) is the right result, as the NIfTI standard means it to be.
    """
    header = image.header
    candidates = []
    if int(header["sform_code"]) > 0:
        candidates.append(("sform", lambda: header.get_sform()))
    if int(header["qform_code"]) > 0:
        candidates.append(("qform", lambda: header.get_qform()))
    if not candidates:
        candidates.append(("pixdim", lambda: header.get_base_affine()))
    reasons = []
    for name, get in candidates:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns on odd quaternions; the check below decides
            try:
                affine = np.asarray(get(), dtype=np.float64)
            except Exception as error:  # a quaternion nibabel cannot turn into a rotation
                reasons.append(f"the {name} cannot be read ({first_line(error)})")
                continue
        reason = _usable(affine)
        if reason is None:
            if reasons:
                warn_problem(problems, f"{path}: {'; '.join(reasons)}; the {name} is used instead")
            return affine
        reasons.append(f"the {name} {reason}")
    raise FileFormatError(f"{path}: no usable voxel-to-world affine: {'; '.join(reasons)}")


def _check_size(image: Any, path: Path, shape: tuple[int, ...], volume: int | None) -> None:
    """Refuse, from the header alone, an image with no voxels or more than the file or the memory holds."""
    if any(n <= 0 for n in shape):
        raise FileFormatError(f"{path}: the header gives a size of {'×'.join(map(str, shape))}: no voxels")
    header = image.header
    voxels = int(np.prod(shape, dtype=object))  # Python ints: a claimed 2^63 voxels must not wrap
    stored = voxels * header.get_data_dtype().itemsize
    data_file = image.file_map["image"].filename
    if data_file is not None:
        check_fits_file(path, data_file, stored, int(header.get_data_offset()))
    wanted = voxels // shape[3] if len(shape) == 4 and volume is not None else voxels
    check_fits(wanted * np.dtype(np.float32).itemsize, path, f"the image ({'×'.join(map(str, shape))})")


def load_nifti(path: str | os.PathLike, volume: int | None = None) -> Any:
    """A 3D NIfTI → ``(1, X, Y, Z)`` MetaTensor; a 4D one needs ``volume=`` to pick one volume.

    The affine is nibabel's (sform when set, else qform), which is RAS+ already, and the array keeps
    the file's voxel order, so the result equals MONAI's ``LoadImage`` on the same file. A sform that
    holds NaN or is singular gives way to the qform, with a warning. Scaling (``scl_slope``/
    ``scl_inter``) is applied. NaN or infinite voxels, no voxels, and a header claiming more data than
    the file or the memory holds are errors.
    """
    path = Path(path)
    problems: list[str] = []
    image = _open(path, problems)
    full = tuple(int(n) for n in image.shape)
    shape = full
    # Trailing singleton axes (a 3D volume stored as X×Y×Z×1) are not a fourth dimension.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 4:
        if volume is None:
            raise FileFormatError(
                f"{path}: a 4D NIfTI ({'×'.join(map(str, shape))}) where a 3D volume is expected; "
                f"pick one of its {shape[3]} volumes with volume= (--volume on the command line)"
            )
        if not 0 <= volume < shape[3]:
            raise InputError(f"{path}: volume={volume} is out of range (the file has {shape[3]} volumes)")
    elif len(shape) > 4:
        raise FileFormatError(f"{path}: a {len(shape)}D NIfTI; volcam reads 3D volumes (or one volume of a 4D file)")
    elif volume not in (None, 0):
        raise InputError(f"{path}: volume={volume} given for a {len(shape)}D file with one volume")
    _check_size(image, path, full, volume)
    affine = _affine(image, path, problems)
    try:
        proxy = image.dataobj
        data = np.asarray(proxy[..., volume] if len(shape) == 4 else proxy, dtype=np.float32)
    except MemoryError:
        raise FileFormatError(f"{path}: not enough memory to read the image data") from None
    except (OSError, EOFError, ValueError, gzip.BadGzipFile, zlib.error) as error:
        raise FileFormatError(f"{path}: the image data is truncated or unreadable ({first_line(error)})") from None
    data = data.reshape(shape[:3] if len(shape) >= 3 else shape)
    while data.ndim < 3:
        data = data[..., None]
    header = image.header
    extra = {
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
    }
    return make_volume(data[None], affine, path=path, modality=None, problems=problems, **extra)


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
