"""Real files for the I/O tests: pydicom's and nibabel's test data, and series built from real slices.

Everything here is data that no one on this project wrote: pydicom's bundled files, those of the
``pydicom-data`` package (found offline once installed) and nibabel's test images. Where a test
needs a series with a property no shipped series has (shuffled names, a second series mixed in,
a gap, a tilt), it is built from copies of the real ``CT_small.dcm`` slice with pydicom.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

# Patient identifiers present in CT_small.dcm: they must never appear in volcam's output.
CT_SMALL_IDENTIFIERS = ("CompressedSamples", "1CT1")


def pydicom_file(name: str) -> Path:
    """A pydicom test file by name, from pydicom itself or the installed ``pydicom-data`` package."""
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (pip install pydicom-data)")
    return Path(path)


def dicomdir_tests() -> Path:
    """pydicom's DICOMDIR test tree: CT, MR and CR series in nested folders."""
    return pydicom_file("DICOMDIR").parent


def nibabel_data(name: str) -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / name


def make_series(
    folder: Path,
    n: int = 6,
    *,
    step: float = 5.0,
    skip: tuple[int, ...] = (),
    shear: float = 0.0,
    description: str = "volcam test series",
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """Write ``n`` slices of one series into ``folder``, built from the real CT_small slice.

    Slice ``k`` sits ``k * step`` mm above the original along z (moved ``k * shear`` mm in y, a
    gantry tilt), holds the original pixels plus ``10 * k`` HU (so order can be checked), and gets
    a random file name and a shuffled InstanceNumber: neither may decide the slice order.
    Slices in ``skip`` are left out (missing slices). Returns the SeriesInstanceUID and the files
    in slice order.
    """
    rng = random.Random(seed)
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    pixels = source.pixel_array.astype(np.int16)
    series_uid = generate_uid()
    kept = [k for k in range(n) if k not in skip]
    numbers = list(range(1, len(kept) + 1))
    rng.shuffle(numbers)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, number in zip(kept, numbers, strict=True):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * shear, z + k * step]
        ds.SliceLocation = z + k * step
        ds.InstanceNumber = number
        ds.PixelData = (pixels + 10 * k).astype(np.int16).tobytes()
        path = folder / f"{rng.getrandbits(48):012x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return series_uid, files


def copy_tree(source: Path, target: Path) -> Path:
    """Copy a folder of test files (so tests may add files to it)."""
    import shutil

    shutil.copytree(source, target)
    return target


def file_count(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def as_stored_in_parametric_map(cam) -> np.ndarray:
    """A map's values as a parametric map written with the default threshold holds them: those at or
    below it 0, the rest as computed."""
    from volcam.io.dicom.objects import THRESHOLDS

    values = np.asarray(cam, dtype=np.float32)
    return np.where(values > THRESHOLDS["parametric-map"], values, np.float32(0.0))
