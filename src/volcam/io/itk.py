"""The other ITK formats (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) with SimpleITK.

ITK keeps origin, spacing and direction in LPS+ and gives arrays as (z, y, x); volcam turns that
into MONAI's (x, y, z) order with a RAS+ affine, as ``LoadImage`` with ``ITKReader`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, FileFormatError
from volcam.io.image import LPS_TO_RAS, make_volume
from volcam.io.paths import require_regular_file

__all__ = ["affine_lps", "load_itk"]


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


def load_itk(path: str | os.PathLike) -> Any:
    """A 2D or 3D scalar or vector image → ``(C, X, Y, Z)`` MetaTensor (components become channels)."""
    sitk = _sitk()
    path = Path(path)
    require_regular_file(path)
    try:
        image = sitk.ReadImage(os.fspath(path))
    except RuntimeError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "unreadable"
        raise FileFormatError(f"{path}: not a readable image file ({reason})") from None
    if image.GetDimension() not in (2, 3):
        raise FileFormatError(f"{path}: a {image.GetDimension()}D image; volcam reads 2D and 3D images")
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
