"""volcam reads the plain case of DICOM itself: header numbers from their stored bytes, uncompressed
greyscale pixel data from its place in the file. Both must give exactly what pydicom gives, on every
file shipped with pydicom and pydicom-data (compressed, big-endian, colour, multi-frame and broken
files go through pydicom itself)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.multival import MultiValue

import volcam.io.dicom.pixels as pixels
from volcam.io.dicom.headers import FieldError, header_numbers, read_header

# Numeric attributes volcam's readers take from headers: DS, IS and binary (US, SS, FD) values.
NUMERIC = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "SeriesNumber",
    "FrameTime",
)


def _shipped() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it could not download the rest: offline
        files = get_testdata_files("**/*")
    return sorted(Path(f) for f in files if Path(f).suffix.lower() in (".dcm", "") and Path(f).is_file())


def _header(path: Path):
    try:
        return read_header(path, defer=True)
    except Exception:
        return None


def _images() -> list[Path]:
    return [p for p in _shipped() if (ds := _header(p)) is not None and "PixelData" in ds]


def _native(path: Path) -> bool:
    return pixels._native_slice(read_header(path, defer=True), path) is not None


IMAGES = _images()
NATIVE = [p for p in IMAGES if _native(p)]


def test_the_shipped_files_cover_the_native_route_and_others() -> None:
    # signed 16/14/12 bits stored in 16, unsigned 15/12/10 (overlays in the unused bits of one), 8-bit,
    # implicit and explicit VR little endian
    stored = {(int(d.BitsStored), int(d.PixelRepresentation)) for d in map(pydicom.dcmread, NATIVE)}
    assert {(16, 1), (14, 1), (12, 1), (15, 0), (12, 0), (10, 0), (8, 0)} <= stored
    assert len(IMAGES) - len(NATIVE) >= 100  # compressed, big-endian, colour, multi-frame: pydicom's decoders


@pytest.mark.parametrize("path", NATIVE, ids=lambda p: p.name)
def test_pixels_read_natively_are_pydicoms(path: Path) -> None:
    native = pixels._native_slice(read_header(path, defer=True), path)
    expected = pydicom.dcmread(path).pixel_array
    assert native is not None and native.dtype == expected.dtype
    np.testing.assert_array_equal(native, expected)


@pytest.mark.parametrize("path", [p for p in _shipped() if _header(p) is not None], ids=lambda p: p.name)
def test_numbers_from_stored_bytes_are_pydicoms(path: Path) -> None:
    fast, slow = read_header(path, defer=True), read_header(path, defer=True)  # pydicom converts slow's
    for keyword in NUMERIC:
        try:
            ours = header_numbers(fast, keyword, path)
        except FieldError as error:
            ours = error.problem
        value = slow.get(keyword)  # by keyword: the converted value
        if value is None or value == "" or (isinstance(value, list | MultiValue) and not len(value)):
            assert ours is None, keyword
            continue
        values = list(value) if isinstance(value, list | MultiValue) else [value]
        try:
            theirs = [float(v) for v in values]
        except (TypeError, ValueError):
            assert isinstance(ours, str), keyword  # not numbers: a one-line problem, not a traceback
            continue
        if isinstance(ours, str):
            assert not np.all(np.isfinite(theirs)), (keyword, ours)  # only NaN/infinity is refused
            continue
        assert ours == theirs, keyword
