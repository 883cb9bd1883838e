"""A single file's frames, decoded one by one into one channel-first array in their stored type
(:func:`volcam.io.dicom.pixels.read_pixels`), are what pydicom's ``pixel_array`` gives (palette colour
applied, in 8-bit video range) on every image file shipped with pydicom and pydicom-data: uncompressed
read from the file by volcam (grey, RGB by pixel or by plane, palette indices, unused high bits),
compressed (JPEG Baseline YBR, JPEG-LS, JPEG 2000, RLE), big-endian and deflated by pydicom's decoders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.pixels import apply_color_lut

import volcam.io.dicom.pixels as pixels
from volcam.errors import FileFormatError
from volcam.io.dicom.headers import read_header


def _shipped() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it could not download the rest: offline
        files = get_testdata_files("**/*")
    return sorted(Path(f) for f in files if Path(f).suffix.lower() in (".dcm", "") and Path(f).is_file())


def _has_pixels(path: Path) -> bool:
    try:
        ds = read_header(path, defer=True)
    except Exception:
        return False
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


IMAGES = [p for p in _shipped() if _has_pixels(p)]


def pydicom_pixels(path: Path) -> np.ndarray:
    """``pixel_array`` as volcam shows it: palette colour looked up, 16-bit entries brought to 8 bits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
            array = apply_color_lut(array, ds)
            if array.max() > 255:
                return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
            return array.astype(np.uint8)
    return array


def test_the_shipped_files_cover_clips_and_every_route() -> None:
    kinds = set()
    for path in IMAGES:
        ds = read_header(path, defer=True)
        kinds.add((str(ds.get("PhotometricInterpretation")), pixels._native_layout(ds, path) is not None))
    assert {("RGB", True), ("PALETTE COLOR", True), ("MONOCHROME2", True)} <= kinds
    assert {("YBR_FULL_422", False), ("YBR_FULL", False), ("RGB", False)} <= kinds


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_frames_read_into_one_array_are_pydicoms(path: Path) -> None:
    try:
        expected = pydicom_pixels(path)
    except Exception:
        with pytest.raises(FileFormatError) as caught:  # a broken file: both refuse it, volcam in one line
            pixels.read_pixels(path)
        assert "\n" not in str(caught.value)
        return
    _, decoded = pixels.read_pixels(path)
    assert decoded.shape == expected.shape and decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)
