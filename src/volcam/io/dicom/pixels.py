"""DICOM pixel data: checked before it is decoded, decoded, and rescaled to modality units.

The plain case is read without pydicom's conversion machinery, to the same values: an uncompressed
little-endian greyscale frame from its place in the file (:func:`_native_slice`;
``tests/test_io_dicom_fast.py`` checks every file pydicom ships). Everything else goes through
pydicom's decoders, with a one-line error naming what to install when none reads the data.
Decoding is not threaded: pydicom's decoding is Python around file reads (and openjpeg holds the
GIL), so two threads were no faster on uncompressed, RLE or JPEG 2000 series.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from volcam.errors import DependencyError, FileFormatError, first_line
from volcam.io.dicom.headers import FieldError, frame_count, header_int, header_numbers, quiet, read_header
from volcam.io.memory import check_fits

__all__ = ["decode", "image_bytes", "read_pixels", "rescale", "rescale_of"]


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA = BaseTag(0x7FE00010)


def _codec_hint(syntax_name: str) -> str:
    """The packages that decode a transfer syntax, as a pip command."""
    if "2000" in syntax_name:
        packages = "pylibjpeg pylibjpeg-openjpeg"
    elif "JPEG" in syntax_name:
        packages = "pylibjpeg pylibjpeg-libjpeg"
    elif "RLE" in syntax_name:
        packages = "pylibjpeg pylibjpeg-rle"
    else:
        packages = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"
    return f"pip install {packages} (or pip install 'volcam[codecs]')"


def _check_decoder(ds: Dataset, path: Path) -> None:
    """A one-line error naming what to install when the pixel data is compressed and no decoder is."""
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DependencyError(f"{path}: pixel data is {syntax.name}, which no installed decoder reads") from None
    if not decoder.is_available:
        raise DependencyError(
            f"{path}: pixel data is compressed as {syntax.name} and no decoder is installed: "
            + _codec_hint(syntax.name)
        )


def image_bytes(ds: Dataset, path: str | os.PathLike) -> int:
    """Bytes the decoded image of one file takes as float32: rows × columns × frames × samples × 4.

    Read from the header (a :class:`FieldError` if any of these is not a whole number ≥ 1), so a
    reader can refuse a file that claims more than the memory there is before decoding it.
    """
    samples = (
        3 if ds.get("PhotometricInterpretation") == "PALETTE COLOR" else header_int(ds, "SamplesPerPixel", path, 1)
    )
    return (
        header_int(ds, "Rows", path)
        * header_int(ds, "Columns", path)
        * frame_count(ds, path)
        * samples
        * np.dtype(np.float32).itemsize
    )


def _has_pixels(ds: Dataset, path: Path) -> str:
    """The keyword of ``ds``'s pixel data; a one-line error when it has none."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            return keyword
    raise FileFormatError(f"{path}: has no pixel data")


# Uncompressed little-endian transfer syntaxes: the pixel data is the array's bytes as they are.
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _native_slice(ds: Dataset, path: Path) -> np.ndarray | None:
    """One greyscale frame stored uncompressed, read from its place in the file as pydicom decodes it
    (unused high bits corrected as pydicom does: sign-extended, or cleared); ``None`` for anything else.

    pydicom's decoder costs about 0.6 ms a file in setup, validation and copies; this is the plain
    case every CT and MR series exported uncompressed is in (0.15 s of a 300-slice CT's load).
    """
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if syntax not in _NATIVE_SYNTAXES or not isinstance(element, RawDataElement) or element.value is not None:
        return None  # compressed, big-endian or deflated; or the pixel data already in memory
    try:
        rows, columns = header_int(ds, "Rows", path), header_int(ds, "Columns", path)
        allocated, stored = header_int(ds, "BitsAllocated", path), header_int(ds, "BitsStored", path)
        signed = header_int(ds, "PixelRepresentation", path, 0, minimum=0)
        simple = (
            frame_count(ds, path) == 1
            and header_int(ds, "SamplesPerPixel", path, 1) == 1
            and str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2")
            and allocated in (8, 16, 32)
            and stored <= allocated
            and signed in (0, 1)
        )
    except FieldError:
        return None  # pydicom's decoder says what is wrong
    count = rows * columns
    if not simple or element.length not in (count * allocated // 8, count * allocated // 8 + 1):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    with open(path, "rb") as file:
        file.seek(element.value_tell)
        array = np.fromfile(file, dtype, count=count)
    if array.size != count:
        return None  # truncated: pydicom's decoder gives the one-line error
    if stored < allocated:
        unused = allocated - stored
        np.left_shift(array, unused, out=array)
        np.right_shift(array, unused, out=array)  # arithmetic for signed types: the sign extends
    return array.reshape(rows, columns).astype(dtype.newbyteorder("="), copy=False)


def decode(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixels ``(frames?, rows, columns, samples?)`` as pydicom gives them, palette applied.

    Not quieted: the caller is. For a header read with ``defer`` the pixel data is read from the
    file here and dropped again afterwards (the element goes back to deferred), so a series'
    headers never hold all of its pixel data at once.
    """
    keyword = _has_pixels(ds, path)
    native = _native_slice(ds, path) if keyword == "PixelData" else None
    if native is not None:
        return native
    _check_decoder(ds, path)
    kept = ds.get_item(keyword, keep_deferred=True)
    try:
        array = ds.pixel_array  # pydicom converts YBR to RGB here
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
    except MemoryError:
        raise FileFormatError(f"{path}: not enough memory to decode the pixel data") from None
    except Exception as error:  # truncated data, a codec failing: one line naming the file
        raise FileFormatError(f"{path}: cannot decode the pixel data ({first_line(error)})") from None
    finally:
        if kept is not None and kept.value is None:  # deferred: drop the bytes and pydicom's cached array
            ds[keyword] = kept
    return array


def read_pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """Full dataset and its decoded pixels, ``(frames?, rows, columns, samples?)`` as pydicom gives them."""
    ds = read_header(path, pixels=True)
    _has_pixels(ds, path)
    # Decoding allocates what the header claims, whatever the file's size (a compressed frame can
    # claim any size): check that first, and the fields it depends on.
    check_fits(image_bytes(ds, path), path, "decoding the pixel data")
    with quiet():
        return ds, decode(ds, path)


def rescale_of(ds: Dataset, path: Path, item: Dataset | None = None) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a file, or of a frame's item when it has them; (1, 0) if absent.

    Not optional when present: values on a wrong scale would pass for HU, so a broken one is an error.
    """
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        found = header_numbers(item, keyword, path, count=1) if item is not None else None
        if found is None:
            found = header_numbers(ds, keyword, path, count=1)
        values.append(found[0] if found else default)
    return values[0], values[1]


def rescale(array: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored values → modality units (HU for CT) as float32: ``value · RescaleSlope + RescaleIntercept``."""
    out = array.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out
