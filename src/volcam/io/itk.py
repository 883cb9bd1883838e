"""The other ITK formats (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) with SimpleITK.

ITK keeps origin, spacing and direction in LPS+ and gives arrays as (z, y, x); volcam turns that
into MONAI's (x, y, z) order with a RAS+ affine, as ``LoadImage`` with ``ITKReader`` does.

SimpleITK's readers are C++ that trust the header: a malformed MetaImage header made MetaIO crash
the process or loop forever (fuzz campaign, issue 27). So the header is checked in Python first
(:mod:`volcam.io.itk_header`), SimpleITK is given the one reader of the file's suffix (no other
reader probes the file), and what SimpleITK then reports is checked before any voxel is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, FileFormatError, MemoryLimitError, one_line
from volcam.io.image import LPS_TO_RAS, make_volume
from volcam.io.itk_header import check_itk_header
from volcam.io.memory import check_fits
from volcam.io.paths import require_regular_file

__all__ = ["affine_lps", "load_itk"]

# The one SimpleITK reader for each suffix volcam reads with it (load.py sends only these here)
_IMAGE_IO = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO"}


def _sitk() -> Any:
    try:
        import SimpleITK
    except ImportError:
        raise DependencyError("reading .nrrd/.mha files needs SimpleITK: pip install SimpleITK") from None
    return SimpleITK


def affine_lps(image: Any) -> np.ndarray:
    """4×4 (x, y, z) index → LPS mm affine of a SimpleITK image (2D images get z = 1 mm)."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection(), float).reshape(dim, dim)
    affine = np.eye(4)
    affine[:dim, :dim] = direction * np.array(image.GetSpacing(), float)
    affine[:dim, 3] = image.GetOrigin()
    return affine


def _reason(error: BaseException) -> str:
    """ITK's messages end with the reason after lines of source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return one_line(lines[-1])[:160] if lines else type(error).__name__


def _check_header(reader: Any, path: Path) -> None:
    """Dimension, size, memory and geometry from the header, so a claimed huge image allocates nothing."""
    dim = reader.GetDimension()
    if dim not in (2, 3):
        raise FileFormatError(f"{path}: a {dim}D image; volcam reads 2D and 3D images")
    size = tuple(int(n) for n in reader.GetSize())
    if min(size) <= 0:
        raise FileFormatError(f"{path}: the header gives a size of {'×'.join(map(str, size))}: no voxels")
    kind = str(_sitk().GetPixelIDValueAsString(reader.GetPixelID()))
    if "complex" in kind.lower():  # a type volcam cannot read: said from the header, nothing allocated
        raise FileFormatError(
            f"{path}: voxels of type {kind}; volcam reads real numbers (integers or floats) and RGB/RGBA colour"
        )
    components = int(reader.GetNumberOfComponents())
    voxels = int(np.prod(size, dtype=object)) * max(components, 1)
    check_fits(voxels * np.dtype(np.float32).itemsize, path, f"the image ({'×'.join(map(str, size))})")
    geometry = np.concatenate([reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()]).astype(float)
    if not np.isfinite(geometry).all():
        raise FileFormatError(f"{path}: the header's spacing, origin or direction holds NaN or infinity")
    if min(reader.GetSpacing()) <= 0:
        raise FileFormatError(f"{path}: the header's spacing {tuple(reader.GetSpacing())} is not positive")


def load_itk(path: str | os.PathLike) -> Any:
    """A 2D or 3D scalar or vector image → ``(C, X, Y, Z)`` MetaTensor (components become channels)."""
    sitk = _sitk()
    path = Path(path)
    require_regular_file(path)
    check_itk_header(path)  # before any C++ sees the file: a header MetaIO cannot take is one line
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    image_io = _IMAGE_IO.get(path.suffix.lower())
    if image_io is not None:
        reader.SetImageIO(image_io)
    try:
        reader.ReadImageInformation()  # the header only: size and geometry are checked before any voxel
        _check_header(reader, path)
        image = reader.Execute()
    except RuntimeError as error:
        raise FileFormatError(f"{path}: not a readable image file ({_reason(error)})") from None
    except MemoryLimitError:
        raise  # the header check's own line: what the image would need and what there is
    except MemoryError:
        raise FileFormatError(f"{path}: not enough memory to read the image data") from None
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x[, components])
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        array = array[..., None]
    if image.GetDimension() == 2:
        array = array[None]
    data = array.transpose(3, 2, 1, 0)
    return make_volume(
        data,
        LPS_TO_RAS @ affine_lps(image),
        path=path,
        modality=None,
        channel_dim=-1 if components > 1 else None,
    )
