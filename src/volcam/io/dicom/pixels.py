"""DICOM pixel data: checked before it is decoded, decoded, and rescaled to modality units.

The plain case is read without pydicom's conversion machinery, to the same values: uncompressed
little-endian pixel data (greyscale, RGB, palette indices) from its place in the file
(:func:`_native_slice` for a slice of a series, :func:`_read_native` for a file's frames;
``tests/test_io_dicom_fast.py`` and ``tests/test_io_clips_shipped.py`` check every file pydicom
ships). Everything else goes through pydicom's decoders, with a one-line error naming what to
install when none reads the data. A single file (:func:`read_pixels`: a clip, a multi-frame image)
becomes one array in its stored type, laid out frame after frame as the file stores them: read
straight into it, or decoded one frame at a time into it; never the pixel data as bytes and as an
array at once. Decoding is not threaded: pydicom's decoding is Python around file reads (and
openjpeg holds the GIL), so two threads were no faster on uncompressed, RLE or JPEG 2000 series.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from volcam.errors import DependencyError, FileFormatError, MemoryLimitError, first_line
from volcam.io.dicom.headers import (
    FieldError,
    frame_count,
    header_int,
    header_numbers,
    header_text,
    quiet,
    read_header,
)
from volcam.io.memory import check_fits, empty

__all__ = ["decode", "decode_frames", "image_bytes", "is_clip", "read_pixels", "rescale", "rescale_of"]


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
    text = header_text(getattr(ds, "file_meta", None) or Dataset(), "TransferSyntaxUID", path)
    if not text:
        return
    syntax = UID(text)
    try:
        if not syntax.is_compressed:
            return
    except ValueError:  # a UID, but no transfer syntax pydicom knows
        raise FileFormatError(
            f"{path}: the file meta's TransferSyntaxUID {text[:64]!r} names no transfer syntax"
        ) from None
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


def image_bytes(ds: Dataset, path: str | os.PathLike, *, stored: bool = False) -> int:
    """Bytes the decoded image of one file takes: rows × columns × frames × samples × bytes a sample.

    A sample counts 4 bytes (float32, what a rescaled volume becomes), or with ``stored`` its stored
    size (BitsAllocated / 8; palette colour as 3 samples of 1 byte). Read from the header (a
    :class:`FieldError` if any of these is not a whole number ≥ 1), so a reader can refuse a file
    that claims more than the memory there is before decoding it.
    """
    palette = ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    samples = 3 if palette else header_int(ds, "SamplesPerPixel", path, 1)
    itemsize = np.dtype(np.float32).itemsize
    if stored:
        itemsize = 1 if palette else max(1, header_int(ds, "BitsAllocated", path, 8) // 8)
    return header_int(ds, "Rows", path) * header_int(ds, "Columns", path) * frame_count(ds, path) * samples * itemsize


_CLIP_MODALITIES = {"US", "IVUS", "XA", "RF", "ES"}
_COLOR = {"RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}


def is_clip(ds: Dataset) -> bool:
    """Whether a file is a clip (ultrasound, angiography, colour, or timed frames) rather than slices."""
    timed = any(k in ds for k in ("FrameTime", "FrameTimeVector", "CineRate"))
    return (
        str(ds.get("Modality", "")) in _CLIP_MODALITIES
        or str(ds.get("PhotometricInterpretation", "")) in _COLOR
        or (timed and "PerFrameFunctionalGroupsSequence" not in ds)
    )


def _has_pixels(ds: Dataset, path: Path) -> str:
    """The keyword of ``ds``'s pixel data; a one-line error when it has none."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            return keyword
    raise FileFormatError(f"{path}: has no pixel data")


# Uncompressed little-endian transfer syntaxes: the pixel data is the array's bytes as they are.
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
# Photometric interpretations whose stored samples are the decoded ones (no colour conversion), and
# how many samples a pixel has in each; palette colour is read as its indices.
_AS_STORED = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3}


@dataclass(frozen=True)
class _Native:
    """Where and how uncompressed pixel data lies in its file."""

    offset: int  # bytes from the start of the file to the first frame
    dtype: np.dtype  # one sample, little-endian
    shape: tuple[int, int, int, int]  # (frames, rows, columns, samples)
    planar: bool  # a colour frame stored plane by plane (R…, G…, B…), not pixel by pixel
    unused: int  # high bits above BitsStored: sign-extended or cleared, as pydicom does


def _native_layout(ds: Dataset, path: Path) -> _Native | None:
    """The layout of pixel data stored uncompressed, little-endian, whole samples of 8, 16 or 32 bits,
    left in the file (read with ``defer``); ``None`` for anything else (pydicom's decoders read it)."""
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if syntax not in _NATIVE_SYNTAXES or not isinstance(element, RawDataElement) or element.value is not None:
        return None  # compressed, big-endian or deflated; or the pixel data already in memory
    try:
        shape = (
            frame_count(ds, path),
            header_int(ds, "Rows", path),
            header_int(ds, "Columns", path),
            header_int(ds, "SamplesPerPixel", path, 1),
        )
        allocated, stored = header_int(ds, "BitsAllocated", path), header_int(ds, "BitsStored", path)
        signed = header_int(ds, "PixelRepresentation", path, 0, minimum=0)
        planar = header_int(ds, "PlanarConfiguration", path, 0, minimum=0) if shape[3] > 1 else 0
    except FieldError:
        return None  # pydicom's decoder says what is wrong
    plain = (
        _AS_STORED.get(str(ds.get("PhotometricInterpretation", ""))) == shape[3]
        and allocated in (8, 16, 32)
        and stored <= allocated
        and signed in (0, 1)
        and planar in (0, 1)
    )
    size = int(np.prod(shape)) * allocated // 8
    if not plain or element.length not in (size, size + 1):  # + 1: the pad byte of odd-length data
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    return _Native(element.value_tell, dtype, shape, planar == 1, allocated - stored)


def _clear_unused(array: np.ndarray, unused: int) -> None:
    """The high bits above BitsStored sign-extended (signed types) or cleared, in place, as pydicom does."""
    if unused:
        np.left_shift(array, unused, out=array)
        np.right_shift(array, unused, out=array)  # arithmetic for signed types: the sign extends


def _native_slice(ds: Dataset, path: Path) -> np.ndarray | None:
    """One greyscale frame stored uncompressed, read from its place in the file as pydicom decodes it
    (unused high bits corrected as pydicom does: sign-extended, or cleared); ``None`` for anything else.

    pydicom's decoder costs about 0.6 ms a file in setup, validation and copies; this is the plain
    case every CT and MR series exported uncompressed is in (0.15 s of a 300-slice CT's load).
    """
    layout = _native_layout(ds, path)
    if layout is None or layout.shape[::3] != (1, 1) or ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return None
    count = layout.shape[1] * layout.shape[2]
    with open(path, "rb") as file:
        file.seek(layout.offset)
        array = np.fromfile(file, layout.dtype, count=count)
    if array.size != count:
        return None  # truncated: pydicom's decoder gives the one-line error
    _clear_unused(array, layout.unused)
    return array.reshape(layout.shape[1:3]).astype(layout.dtype.newbyteorder("="), copy=False)


def _read_native(layout: _Native, path: Path) -> np.ndarray:
    """Every frame read from the file straight into one array, as stored: ``(T, H, W, S)``, or
    ``(T, S, H, W)`` for colour stored by plane (no copy of the pixel data, no scratch buffer)."""
    frames, rows, columns, samples = layout.shape
    shape = (frames, samples, rows, columns) if layout.planar else (frames, rows, columns, samples)
    out = empty(shape, layout.dtype)
    with open(path, "rb") as file:
        file.seek(layout.offset)
        done = file.readinto(out.data.cast("B"))
    if done != out.nbytes:
        frame = done // max(out[0].nbytes, 1) + 1
        raise FileFormatError(f"{path}: cannot decode the pixel data (the file ends in frame {frame} of {frames})")
    _clear_unused(out, layout.unused)
    return out.astype(layout.dtype.newbyteorder("="), copy=False)


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
        raise MemoryLimitError(f"{path}: not enough memory to decode the pixel data") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # truncated data, a codec failing (a Rust codec's panic is a BaseException)
        raise FileFormatError(f"{path}: cannot decode the pixel data ({first_line(error)})") from None
    finally:
        if kept is not None and kept.value is None:  # deferred: drop the bytes and pydicom's cached array
            ds[keyword] = kept
    return array


def _palette_table(ds: Dataset, path: Path) -> np.ndarray:
    """Palette colour: the RGB of every index BitsStored can hold, ``(2**bits, 3)`` uint8 (16-bit
    entries brought to 8-bit video range, as scanners mean them)."""
    from pydicom.pixels import apply_color_lut

    bits = min(header_int(ds, "BitsStored", path, 8), 16)
    table = apply_color_lut(np.arange(2**bits, dtype=np.uint8 if bits <= 8 else np.uint16), ds)
    if table.max(initial=0) > 255:
        return ((table.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return table.astype(np.uint8)


def _decoded_frames(ds: Dataset, path: Path) -> Iterator[np.ndarray]:
    """Each frame as pydicom's decoders give it, ``(rows, columns[, samples])``, YBR converted to RGB."""
    from pydicom.pixels import iter_pixels

    _check_decoder(ds, path)
    return iter_pixels(ds)


def _decode_each(ds: Dataset, path: Path, frames: int, palette: np.ndarray | None) -> np.ndarray:
    """Frames decoded by pydicom one at a time (palette looked up) into one ``(T, H, W, S)`` array,
    which the first frame allocates in its type."""
    out: np.ndarray | None = None
    count = 0
    for frame in _decoded_frames(ds, path):
        shaped = frame if frame.ndim == 3 else frame[..., None]
        if palette is not None:
            shaped = palette[shaped[..., 0]]
        if out is None:
            out = empty((frames, *shaped.shape), shaped.dtype)
        if count == frames:
            raise FileFormatError(f"{path}: the pixel data holds more frames than the header's {frames}")
        if shaped.shape != out.shape[1:]:
            raise FileFormatError(f"{path}: frame {count + 1} is {shaped.shape}, the first {out.shape[1:]}")
        out[count] = shaped
        count += 1
    if out is None or count != frames:
        raise FileFormatError(f"{path}: the pixel data holds {count} frames, the header {frames}")
    return out


def _look_up(palette: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Palette indices ``(T, H, W, 1)`` → RGB ``(T, H, W, 3)``, frame by frame (no index array per frame)."""
    out = empty((*indices.shape[:3], 3), palette.dtype)
    for k, frame in enumerate(indices):
        out[k] = palette[frame[..., 0]]
    return out


def decode_frames(ds: Dataset, path: Path) -> np.ndarray:
    """Every frame of one file → ``(C, T, H, W)`` in its stored type (palette colour as uint8 RGB,
    YBR as RGB the way pydicom converts it), decoded into one array without a float copy.

    The array is a view of memory laid out frame after frame, as the file stores them (``(T, H, W,
    C)``, or ``(T, C, H, W)`` for colour stored by plane), as a DICOM series' ``(C, X, Y, Z)`` is of
    its slices: uncompressed data is read from the file straight into it, compressed frames are
    decoded by pydicom one at a time and each copied in once. Not quieted: the caller is.
    """
    keyword = _has_pixels(ds, path)
    frames = frame_count(ds, path)
    layout = _native_layout(ds, path) if keyword == "PixelData" else None
    kept = ds.get_item(keyword, keep_deferred=True)
    try:
        palette = _palette_table(ds, path) if ds.get("PhotometricInterpretation") == "PALETTE COLOR" else None
        if layout is None:
            return _decode_each(ds, path, frames, palette).transpose(3, 0, 1, 2)
        stored = _read_native(layout, path)
        if layout.planar:
            return stored.transpose(1, 0, 2, 3)
        return (stored if palette is None else _look_up(palette, stored)).transpose(3, 0, 1, 2)
    except (FileFormatError, DependencyError):
        raise
    except MemoryError:
        raise MemoryLimitError(f"{path}: not enough memory to decode the pixel data") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # truncated data, a codec failing (a Rust codec's panic is a BaseException)
        raise FileFormatError(f"{path}: cannot decode the pixel data ({first_line(error)})") from None
    finally:
        if kept is not None and kept.value is None:  # deferred: drop the bytes pydicom read
            ds[keyword] = kept


def read_pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """Full dataset and its decoded pixels ``(frames?, rows, columns, samples?)`` as pydicom gives them
    (palette colour applied): a view of the array :func:`decode_frames` fills."""
    ds = read_header(path, defer=True)
    _has_pixels(ds, path)
    # Decoding allocates what the header claims, whatever the file's size (a compressed frame can
    # claim any size): check that first, and the fields it depends on. A clip stays as stored; the
    # frames of anything else become a volume, float32 when rescaled.
    check_fits(image_bytes(ds, path, stored=is_clip(ds)), path, "decoding the pixel data")
    with quiet():
        data = decode_frames(ds, path)
    pixels = data.transpose(1, 2, 3, 0)
    if pixels.shape[3] == 1:
        pixels = pixels[..., 0]
    return ds, pixels[0] if pixels.shape[0] == 1 and frame_count(ds, path) == 1 else pixels


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
