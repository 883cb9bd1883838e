"""DICOM in: a series from a folder, or one file (a slice, an enhanced multi-frame CT/MR, an ultrasound cine).

Read with pydicom, each file once: the headers of a folder (pixel data left in the file, deferred)
to group files by ``SeriesInstanceUID`` and order slices along their normal, then the pixel data of
the chosen series only, written slice by slice into the one preallocated result (no list of
slices, no transposed copy). The plain case is read without pydicom's conversion machinery, to the
same values (``tests/test_io_dicom_fast.py`` checks every file pydicom ships): header numbers from
their stored bytes (:func:`_stored_numbers`) and uncompressed little-endian greyscale frames from
their place in the file (:func:`_native_slice`); everything else goes through pydicom's decoders.
Decoding is not threaded: pydicom's decoding is Python around file reads (and openjpeg holds the
GIL), so two threads were no faster on uncompressed, RLE or JPEG 2000 series. Volumes come back as
``(C, X, Y, Z)`` = (channels, column, row, slice) like MONAI's ``LoadImage``, int16 in modality
units when that is exact (RescaleSlope 1, an integer RescaleIntercept, values that fit: most CT),
else float32; cine loops as float32 ``(C, T, H, W)``. See :mod:`volcam.io.image` for the metadata.

A 512×512×300 CT series (int16, 150 MB of files, in the page cache) loads in 0.31 s, against 0.46 s
with pydicom's conversions, 3.9 s when each file was parsed twice and the slices were stacked as
float32 and transposed; SimpleITK's ImageSeriesReader takes 0.29 s on the same files (2 cores,
``benchmarks/clinical.py``).

No patient identifier is read into a message: errors and warnings name the file, the series UID and
its description, never PatientName/PatientID/dates; pydicom's own warnings (which may quote values)
are silenced while reading.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from volcam.errors import DependencyError, FileFormatError, SeriesError, first_line, one_line
from volcam.io.dicom_geometry import StackGeometry, directions, orientation_problem, stack_geometry
from volcam.io.image import LPS_TO_RAS, make_clip, make_volume, warn_problem
from volcam.io.memory import check_fits
from volcam.io.paths import is_regular_file, require_regular_file

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "Scan",
    "Series",
    "frame_interval",
    "is_clip",
    "load_dicom",
    "multiframe_geometry",
    "read_header",
    "scan_folder",
    "select_series",
    "series_geometry",
    "ultrasound_spacing",
]

logger = logging.getLogger("volcam.io")

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_CLIP_MODALITIES = {"US", "IVUS", "XA", "RF", "ES"}
_COLOR = {"RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}


# Values longer than this stay in the file when a folder is scanned (pixel data, icons, private
# blobs): pydicom reads them on first access, so each file is parsed once and nothing large is held.
_DEFER_BYTES = 4096
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA = BaseTag(0x7FE00010)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_BELOW_ERROR = _BelowError()
_QUIET = threading.local()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's warnings and log lines below ERROR while reading: they can quote element values.

    Re-entrant: only the outermost block of a thread changes the (process-wide) warning filters and
    pydicom's logger, so a series' thousands of header look-ups inside one block pay for it once.
    """
    depth = getattr(_QUIET, "depth", 0)
    _QUIET.depth = depth + 1
    if depth:
        try:
            yield
        finally:
            _QUIET.depth = depth
        return
    log = logging.getLogger("pydicom")
    log.addFilter(_BELOW_ERROR)  # a filter, not setLevel: that clears every logger's cache each time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.removeFilter(_BELOW_ERROR)
        _QUIET.depth = depth


def read_header(path: str | os.PathLike, *, pixels: bool = False, defer: bool = False) -> Dataset:
    """Read one DICOM file (without its pixel data unless ``pixels``); a one-line error if it is not one.

    With ``defer`` the pixel data (and any value over 4 KiB) stays in the file and pydicom reads it
    when it is first accessed: the header of a folder's scan is all :func:`_decode` needs later.
    """
    require_regular_file(path)  # pydicom would block on a FIFO and never finish /dev/zero
    try:
        with _quiet():
            if defer:
                return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError:
        raise FileFormatError(f"{path}: not a DICOM file (no DICM preamble or file meta)") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, not a DICOM file") from None
    except OSError as error:
        raise FileFormatError(f"{path}: cannot be read ({error.strerror or first_line(error)})") from None
    except Exception as error:  # pydicom raises many types on a damaged file; the user needs one line
        raise FileFormatError(f"{path}: damaged or truncated DICOM file ({first_line(error)})") from None


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", Dataset())
    return _DICOMDIR_SOP in (ds.get("SOPClassUID", ""), meta.get("MediaStorageSOPClassUID", ""))


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and not _is_dicomdir(ds)


@dataclass
class Series:
    """The headers of one series, as found in a folder (read once: the pixel data is deferred)."""

    uid: str
    description: str
    modality: str
    number: int | None
    headers: list[tuple[Path, Dataset]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Images in the series: files, or frames of a multi-frame file."""
        total = 0
        for path, ds in self.headers:
            try:
                total += frame_count(ds, path)
            except FieldError:  # loading the series says what is wrong; a count is no place for it
                total += 1
        return total

    @property
    def label(self) -> str:
        """One line naming the series without patient identifiers."""
        description = f" '{self.description}'" if self.description else ""
        return f"{self.uid}{description} ({self.modality}, {len(self.headers)} file(s))"


@dataclass
class Scan:
    """What a folder holds: its image series and how many files were passed over, by reason."""

    root: Path
    series: list[Series]
    skipped: dict[str, int]


def _regular_files(root: Path) -> tuple[list[Path], dict[str, int]]:
    """The regular files under ``root`` (recursively, sorted) and the count of other entries passed over.

    FIFOs, sockets, devices and broken links are counted as ``"not a regular file"`` and never
    opened: opening a FIFO blocks. Links to folders are not followed (no loops).
    """
    files: list[Path] = []
    skipped: dict[str, int] = {}
    for entry in root.rglob("*"):
        if entry.is_dir():
            continue
        if is_regular_file(entry):
            files.append(entry)
        else:
            skipped["not a regular file"] = skipped.get("not a regular file", 0) + 1
    return sorted(files), skipped


def scan_folder(folder: str | os.PathLike) -> Scan:
    """Read the headers of every file under ``folder`` (recursively) and group images by series.

    Entries that are not regular files (FIFOs, devices: never opened), files that are not DICOM,
    DICOMDIR indexes, DICOM objects without an image (reports, RT plans) and second copies of an
    instance (same SOPInstanceUID) are skipped and counted; an empty folder or one with no DICOM
    image is an error.
    """
    root = Path(folder)
    files, skipped = _regular_files(root)
    if not files:
        if skipped:
            raise FileFormatError(
                f"{root}: no regular file in the folder, only {skipped['not a regular file']} FIFO(s), "
                "device(s) or broken link(s)"
            )
        raise FileFormatError(f"{root}: the folder is empty")
    by_uid: dict[str, Series] = {}
    seen: set[str] = set()
    with _quiet():
        for path in files:
            _scan_file(path, by_uid, seen, skipped)
    if not by_uid:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        from volcam.io.formats import format_of

        others = sorted(p.name for p in files if format_of(p) != "dicom")
        hint = f"; a folder is read as DICOM, give the file itself (e.g. {others[0]})" if others else ""
        raise FileFormatError(f"{root}: no DICOM image in the folder ({len(files)} file(s): {counts}){hint}")
    series = sorted(by_uid.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    return Scan(root, series, skipped)


def _scan_file(path: Path, by_uid: dict[str, Series], seen: set[str], skipped: dict[str, int]) -> None:
    """Read one file's header (pixel data deferred) into its series, or count why it was passed over."""
    try:
        ds = read_header(path, defer=True)
    except FileFormatError:
        skipped["not DICOM"] = skipped.get("not DICOM", 0) + 1
        return
    if not _is_image(ds):
        reason = "DICOMDIR" if _is_dicomdir(ds) else "no image"
        skipped[reason] = skipped.get(reason, 0) + 1
        return
    uid = _text(ds, "SeriesInstanceUID", path) or "(no SeriesInstanceUID)"
    if uid not in by_uid:
        number = optional_numbers(ds, "SeriesNumber", path, None, count=1)
        by_uid[uid] = Series(
            uid=uid,
            description=_text(ds, "SeriesDescription", path),
            modality=_text(ds, "Modality", path) or "OT",
            number=int(number[0]) if number and number[0] == int(number[0]) else None,
        )
    instance = _text(ds, "SOPInstanceUID", path) or os.fspath(path)
    if instance in seen:  # the same image copied twice in an export is one slice, not two
        skipped["duplicate"] = skipped.get("duplicate", 0) + 1
        return
    seen.add(instance)
    by_uid[uid].headers.append((path, ds))


def select_series(scan: Scan, series: str | int | None) -> Series:
    """The series asked for: by UID, by description (case-insensitive) or by SeriesNumber.

    With ``series=None`` a folder must hold exactly one series; otherwise the error lists them.
    """
    listing = "; ".join(s.label for s in scan.series)
    if series is None:
        if len(scan.series) == 1:
            return scan.series[0]
        raise SeriesError(
            f"{scan.root}: {len(scan.series)} series in the folder; "
            f"pick one with series= (--series on the command line; a UID, description or number): {listing}"
        )
    wanted = str(series).strip()
    for match in (
        lambda s: s.uid == wanted,
        lambda s: s.description.lower() == wanted.lower(),
        lambda s: s.number is not None and str(s.number) == wanted,
    ):
        found = [s for s in scan.series if match(s)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise SeriesError(
                f"{scan.root}: {len(found)} series match {one_line(wanted)!r}; pick one by its UID with series= "
                f"(--series on the command line): {listing}"
            )
    raise SeriesError(f"{scan.root}: no series {one_line(wanted)!r} in the folder; there are: {listing}")


class FieldError(FileFormatError):
    """A header attribute that is present but not what the standard says (text where numbers belong).

    ``problem`` is the reason without the file (``"PixelSpacing is 'abc\\def', not 2 numbers"``), so a
    caller can report it as a warning or as one entry of a series' problems.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.problem = problem


def _shown(value: Any) -> str:
    """A header value for a message: one line, at most 40 characters, quoted."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        value = "\\".join(str(v) for v in value)
    text = one_line(str(value))
    return "'" + (text if len(text) <= 40 else text[:39] + "…") + "'"


def _raw(ds: Dataset, keyword: str, path: str | os.PathLike) -> Any:
    """``ds``'s value of ``keyword``; ``None`` when absent or empty. pydicom converts a value on first
    access and may raise (any type) on a malformed one: that becomes a :class:`FieldError`."""
    try:
        if keyword not in ds:
            return None
        with _quiet():
            value = ds[keyword].value
    except Exception as error:  # a value pydicom cannot convert; no I/O happens here
        raise FieldError(path, f"{keyword} cannot be read ({first_line(error)})") from None
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        return None
    if hasattr(value, "__len__") and not isinstance(value, str | bytes) and len(value) == 0:
        return None
    return value


def _as_floats(value: Any) -> list[float] | None:
    """A DICOM number, list of numbers or backslash-separated text as floats; ``None`` if any is not one."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.split("\\")
    items = value if hasattr(value, "__iter__") else [value]
    try:
        return [float(str(v).strip()) if isinstance(v, str | bytes) else float(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        return None


# Binary numeric VRs as struct codes: their values are read from the stored bytes.
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[BaseTag, str] | None:
    """The tag and dictionary VR of ``keyword`` (looked up once: pydicom's ``Tag(keyword)`` costs µs)."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else (BaseTag(tag), dictionary_VR(tag))


def _stored_numbers(ds: Dataset, keyword: str) -> bytes | tuple[float, ...] | None:
    """A numeric attribute pydicom has not converted yet, from its stored bytes: the text of a DS or IS
    value (parsed by :func:`_as_floats`), the numbers of a binary one; ``None`` when it has been
    converted, is absent or empty, or is stored under another VR than the dictionary's.

    pydicom's conversion validates each value (``DSfloat``: about 50 µs each) behind a chain of
    hooks; the geometry of a 300-slice CT reads about 4000 values (0.1–0.2 s), and the checks that
    matter (text, count, NaN, sign) are :func:`header_numbers`' own.
    """
    found = _tag_and_vr(keyword)
    if found is None:
        return None
    tag, vr = found
    element = ds.get_item(tag, keep_deferred=True)
    if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes) or element.VR not in (None, vr):
        return None
    if vr in ("DS", "IS"):
        return element.value.strip(b" \0") or None
    code = _BINARY_VRS.get(vr)
    if code is None or len(element.value) % struct.calcsize(code):
        return None
    order = "<" if element.is_little_endian else ">"
    return struct.unpack(f"{order}{len(element.value) // struct.calcsize(code)}{code}", element.value) or None


def header_numbers(
    ds: Dataset, keyword: str, path: str | os.PathLike, *, count: int | None = None, positive: bool = False
) -> list[float] | None:
    """``keyword`` as finite floats (exactly ``count`` of them when given); ``None`` when absent or empty.

    The one place volcam reads a numeric header attribute: a value that is text (``"abc\\def"``), of
    the wrong length, NaN, infinite or (with ``positive``) zero or negative raises a one-line
    :class:`FieldError` naming the file and the keyword.
    """
    value = _stored_numbers(ds, keyword)
    if value is None:
        value = _raw(ds, keyword, path)
    if value is None:
        return None
    numbers = _as_floats(value)
    wanted = f"{count} numbers" if count and count > 1 else "a number" if count == 1 else "numbers"
    if numbers is None:
        raise FieldError(path, f"{keyword} is {_shown(value)}, not {wanted}")
    if count is not None and len(numbers) != count:
        raise FieldError(path, f"{keyword} holds {len(numbers)} value(s) ({_shown(value)}), not {wanted}")
    if not all(np.isfinite(numbers)):
        raise FieldError(path, f"{keyword} holds NaN or infinity ({_shown(value)})")
    if positive and min(numbers) <= 0:
        raise FieldError(path, f"{keyword} is {_shown(value)}, not positive")
    return numbers


def header_int(
    ds: Dataset, keyword: str, path: str | os.PathLike, default: int | None = None, *, minimum: int = 1
) -> int:
    """``keyword`` as a whole number ≥ ``minimum`` (``Rows``, ``NumberOfFrames``); ``default`` when absent.

    Raises a :class:`FieldError` for text, a fraction or a number out of range, and when the
    attribute is absent without a default.
    """
    numbers = header_numbers(ds, keyword, path, count=1)
    if numbers is None:
        if default is None:
            raise FieldError(path, f"has no {keyword}")
        return default
    value = numbers[0]
    if value != int(value) or value < minimum:
        raise FieldError(path, f"{keyword} is {_shown(_raw(ds, keyword, path))}, not a whole number ≥ {minimum}")
    return int(value)


def optional_numbers(
    ds: Dataset,
    keyword: str,
    path: str | os.PathLike,
    problems: list[str] | None,
    *,
    count: int | None = None,
    positive: bool = False,
) -> list[float] | None:
    """:func:`header_numbers` for an attribute volcam can do without (a frame time, a slice thickness):
    a broken value is ignored and the reason appended to ``problems`` (the caller warns) instead of raised."""
    try:
        return header_numbers(ds, keyword, path, count=count, positive=positive)
    except FieldError as error:
        if problems is not None:
            problems.append(f"{error.problem}; ignored")
        return None


def _text(ds: Dataset, keyword: str, path: str | os.PathLike) -> str:
    """A text attribute (a UID, a description) as one line; ``""`` when absent or unreadable.

    Values go into messages, so a SeriesDescription holding a newline cannot split one in two.
    """
    try:
        value = _raw(ds, keyword, path)
    except FieldError:
        return ""
    return "" if value is None else one_line(str(value))


def frame_count(ds: Dataset, path: str | os.PathLike) -> int:
    """``NumberOfFrames`` (1 when absent); a one-line :class:`FieldError` when it is not a whole number ≥ 1."""
    return header_int(ds, "NumberOfFrames", path, 1)


def _fallback_step(ds: Dataset, path: str | os.PathLike, problems: list[str] | None = None) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = optional_numbers(ds, keyword, path, problems, count=1, positive=True)
        if value:
            return value[0]
    return None


def _few(messages: list[str], limit: int = 3) -> list[str]:
    """At most ``limit`` messages, then how many more: a series of 500 broken files stays one line."""
    unique = list(dict.fromkeys(messages))
    return unique[:limit] + ([f"and {len(unique) - limit} more"] if len(unique) > limit else [])


def _slice_header(
    path: Path, ds: Dataset, prefix: str, problems: list[str]
) -> tuple[tuple[int, int], int, list[float] | None, list[float] | None, tuple[float, float] | None]:
    """(rows, columns), samples, position, orientation and pixel spacing of one slice.

    A broken size, position or orientation raises a :class:`FieldError`; a broken pixel spacing is
    a problem (1 mm assumed).
    """
    size = (header_int(ds, "Rows", path), header_int(ds, "Columns", path))
    samples = header_int(ds, "SamplesPerPixel", path, 1)
    position = header_numbers(ds, "ImagePositionPatient", path, count=3)
    orientation = header_numbers(ds, "ImageOrientationPatient", path, count=6)
    local: list[str] = []
    spacing = _pixel_spacing(ds, path, local)
    problems.extend(prefix + p for p in local)
    return size, samples, position, orientation, spacing


def series_geometry(headers: list[tuple[Path, Dataset]]) -> StackGeometry:
    """Order the single-frame images of a series and derive its geometry, from headers alone.

    Different slice sizes are fatal (reported in ``fatal``) like mixed orientations are, and so is a
    size, position or orientation that is not numbers (each names its file).
    """
    several = len(headers) > 1
    broken: list[str] = []
    problems: list[str] = []
    sizes, samples, positions, orientations, spacings = set(), set(), [], [], []
    for path, ds in headers:
        prefix = f"{path.name}: " if several else ""
        try:
            size, sample, position, orientation, spacing = _slice_header(path, ds, prefix, problems)
        except FieldError as error:
            broken.append(prefix + error.problem)
            continue
        sizes.add(size)
        samples.add(sample)
        positions.append(position)
        orientations.append(orientation)
        spacings.append(spacing)
    first_path, first = headers[0]
    have = (
        not broken
        and all(p is not None for p in positions)
        and all(o is not None for o in orientations)
        and bool(positions)
    )
    known = [s for s in spacings if s is not None]
    step = _fallback_step(first, first_path, problems)
    tilt = optional_numbers(first, "GantryDetectorTilt", first_path, problems, count=1)
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        known[0] if known else None,
        step,
        tilt[0] if tilt else None,
    )
    if broken:
        geometry.fatal[:0] = _few(broken)
        return geometry
    geometry.problems[:0] = _few(problems)
    if len(sizes) > 1:
        shown = ", ".join(f"{r}×{c}" for r, c in sorted(sizes))
        geometry.fatal.insert(0, f"slices have different sizes ({shown})")
    if len(samples) > 1:
        geometry.fatal.insert(0, "slices mix grey and colour images")
    if known and np.ptp(np.array(known), axis=0).max() > 1e-4:
        low, high = np.min(known), np.max(known)
        geometry.fatal.append(f"slices have different pixel spacings ({low:.4g} to {high:.4g} mm)")
    if not have and several:
        geometry.fatal.append("slices have no ImagePositionPatient/ImageOrientationPatient, so they cannot be ordered")
    return geometry


def _pixel_spacing(
    ds: Dataset, path: str | os.PathLike, problems: list[str] | None = None
) -> tuple[float, float] | None:
    """(row, column) mm from ``PixelSpacing`` (else ``ImagerPixelSpacing``); a broken one is a problem."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = optional_numbers(ds, keyword, path, problems, count=2, positive=True)
        if value:
            return value[0], value[1]
    return None


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


def _decode(ds: Dataset, path: Path) -> np.ndarray:
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


def _pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """Full dataset and its decoded pixels, ``(frames?, rows, columns, samples?)`` as pydicom gives them."""
    ds = read_header(path, pixels=True)
    _has_pixels(ds, path)
    # Decoding allocates what the header claims, whatever the file's size (a compressed frame can
    # claim any size): check that first, and the fields it depends on.
    check_fits(image_bytes(ds, path), path, "decoding the pixel data")
    with _quiet():
        return ds, _decode(ds, path)


def _rescale_of(ds: Dataset, path: Path, item: Dataset | None = None) -> tuple[float, float]:
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


def _rescale(array: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored values → modality units (HU for CT) as float32: ``value · RescaleSlope + RescaleIntercept``."""
    out = array.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


_INT16 = np.iinfo(np.int16)


def _exact_int16(pixels: np.ndarray, slope: float, intercept: float) -> bool:
    """Whether ``pixels · slope + intercept`` is a whole number that int16 holds, for every pixel."""
    if pixels.dtype.kind not in "iub" or slope != 1.0 or intercept != int(intercept):
        return False
    if pixels.size == 0:
        return True
    low, high = int(pixels.min()) + int(intercept), int(pixels.max()) + int(intercept)
    return _INT16.min <= low and high <= _INT16.max


class _Stack:
    """Slices, given in order, in one array of modality units, exposed as ``(C, X, Y, Z)``.

    The memory holds slice after slice (``(Z, rows, columns, C)``, as the files store them), so each
    slice is one contiguous copy; :attr:`data` is the ``(C, X, Y, Z)`` view of it (MONAI's layout,
    a transpose without a copy, as MONAI's own ITK reader gives). The array is int16 while every
    slice is exact in it (RescaleSlope 1, an integer RescaleIntercept, values that fit: CT in HU)
    and becomes float32, once, at the first slice that is not.
    """

    def __init__(self, count: int, first: np.ndarray, slope: float, intercept: float) -> None:
        rows, columns = first.shape[:2]
        samples = first.shape[2] if first.ndim == 3 else 1
        dtype = np.int16 if _exact_int16(first, slope, intercept) else np.float32
        self.slice_shape = first.shape
        self._slices = np.empty((count, rows, columns, samples), dtype)
        self._next = 0

    @property
    def data(self) -> np.ndarray:
        """``(C, X, Y, Z)``: columns along x, rows along y, slices along z (a view)."""
        return self._slices.transpose(3, 2, 1, 0)

    def put(self, k: int, pixels: np.ndarray, slope: float, intercept: float) -> None:
        """Write slice ``k`` (the next one); the caller has checked that its shape is the first slice's."""
        assert k == self._next, "slices are put in order"
        if self._slices.dtype == np.int16 and not _exact_int16(pixels, slope, intercept):
            self._slices = self._slices.astype(np.float32)  # the slices so far are exact in float32 too
        source = pixels if pixels.ndim == 3 else pixels[..., None]
        target = self._slices[k]
        if self._slices.dtype == np.int16:
            if source.dtype.kind in "iu" and source.dtype.itemsize <= 2 and source.max(initial=0) <= _INT16.max:
                # every value is itself an int16 and so is its sum with the intercept (checked above):
                # int16 arithmetic, 5× faster than forming the sum in int32
                np.add(source.astype(np.int16, copy=False), np.int16(intercept), out=target)
            else:  # uint16 values above 32767 with a negative intercept: the sum formed in int32 fits
                np.add(source, np.int32(intercept), out=target, casting="unsafe")
        else:
            target[...] = _rescale(source, slope, intercept)
        self._next += 1


def _dicom_meta(ds: Dataset, files: list[Path]) -> dict[str, Any]:
    path = files[0] if files else ""
    return {
        "series_uid": _text(ds, "SeriesInstanceUID", path),
        "series_description": _text(ds, "SeriesDescription", path),
        "study_uid": _text(ds, "StudyInstanceUID", path),
        "frame_of_reference_uid": _text(ds, "FrameOfReferenceUID", path),
        "source_files": [os.fspath(f) for f in files],
    }


def _volume(data: np.ndarray, geometry: StackGeometry, path: Path, ds: Dataset, files: list[Path], problems: list):
    """``(C, column, row, slice)`` data in slice order → MetaTensor."""
    for problem in geometry.problems:
        warn_problem(problems, f"{path}: {problem}")
    channel_dim = -1 if data.shape[0] > 1 else None
    return make_volume(
        data,
        LPS_TO_RAS @ geometry.affine_lps,
        path=path,
        modality=_text(ds, "Modality", path) or "OT",
        problems=problems,
        channel_dim=channel_dim,
        slice_positions_lps=geometry.positions.tolist(),
        **_dicom_meta(ds, files),
    )


def _load_series(series: Series, where: Path) -> MetaTensor:
    headers = series.headers
    try:
        multi = [p for p, ds in headers if frame_count(ds, p) > 1]
    except FieldError as error:
        raise SeriesError(f"{where}: series {series.label}: {error}") from None
    if multi:
        if len(headers) == 1:
            return _load_file(multi[0])
        raise SeriesError(
            f"{where}: series {series.label} holds {len(multi)} multi-frame file(s) among {len(headers)}; "
            "load one file directly"
        )
    with _quiet():
        geometry = series_geometry(headers)
        if geometry.fatal:
            raise SeriesError(f"{where}: series {series.label}: {'; '.join(geometry.fatal)}")
        ordered = [headers[i] for i in geometry.order]
        first_path, first = ordered[0]
        # The whole stack, before any slice is decoded: a folder of small files can add up to more
        # than memory. Counted as float32, what it becomes when a slice is not exact in int16.
        check_fits(len(ordered) * image_bytes(first, first_path), where, f"the series ({len(ordered)} slices)")
        rescales = [_rescale_of(ds, path) for path, ds in ordered]

        stack: _Stack | None = None
        for k, (path, ds) in enumerate(ordered):
            require_regular_file(path)  # the file may have become a FIFO since the scan
            pixels = _decode(ds, path)
            if stack is None:  # filled in place: no list of slices and a stacked copy at once
                stack = _Stack(len(ordered), pixels, *rescales[0])
            if pixels.shape != stack.slice_shape:
                raise SeriesError(
                    f"{path}: the pixel data is {pixels.shape}, the series' first slice {stack.slice_shape}"
                )
            stack.put(k, pixels, *rescales[k])
    logger.info("series %s: %d slices from %s", series.uid, len(ordered), where)
    assert stack is not None  # ordered holds geometry.order[0]: at least one slice
    return _volume(stack.data, geometry, where, ordered[-1][1], [path for path, _ in ordered], [])


def _frame_item(ds: Dataset, index: int, sequence: str, keyword: str) -> Dataset | None:
    """The item holding ``keyword`` for frame ``index``: from the per-frame functional groups, else the
    shared ones; ``None`` when neither has it."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is None or len(items) <= i:
            continue
        inner = items[i].get(sequence)
        if inner is not None and len(inner) and keyword in inner[0]:
            return inner[0]
    return None


def _frame_numbers(
    ds: Dataset, path: Path, index: int, sequence: str, keyword: str, count: int | None = None
) -> list[float] | None:
    """:func:`header_numbers` of ``keyword`` for frame ``index`` (see :func:`_frame_item`)."""
    item = _frame_item(ds, index, sequence, keyword)
    return None if item is None else header_numbers(item, keyword, path, count=count)


def is_clip(ds: Dataset) -> bool:
    """Whether a file is a clip (ultrasound, angiography, colour, or timed frames) rather than slices."""
    timed = any(k in ds for k in ("FrameTime", "FrameTimeVector", "CineRate"))
    return (
        str(ds.get("Modality", "")) in _CLIP_MODALITIES
        or str(ds.get("PhotometricInterpretation", "")) in _COLOR
        or (timed and "PerFrameFunctionalGroupsSequence" not in ds)
    )


def frame_interval(ds: Dataset, problems: list[str] | None = None) -> float | None:
    """Seconds between frames from FrameTime (ms), FrameTimeVector (ms) or CineRate (frames/s).

    A broken value is passed over (and appended to ``problems``) for the next source.
    """
    path = getattr(ds, "filename", None) or "(dataset)"
    frame_time = optional_numbers(ds, "FrameTime", path, problems, count=1)
    if frame_time and frame_time[0] > 0:
        return frame_time[0] / 1000.0
    vector = optional_numbers(ds, "FrameTimeVector", path, problems)
    if vector and len(vector) > 1 and np.mean(vector[1:]) > 0:
        return float(np.mean(vector[1:])) / 1000.0  # the first entry is the first frame's offset, 0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = optional_numbers(ds, keyword, path, problems, count=1)
        if rate and rate[0] > 0:
            return 1.0 / rate[0]
    return None


def ultrasound_spacing(ds: Dataset, problems: list[str] | None = None) -> tuple[float, float] | None:
    """(row, column) mm per pixel from the largest calibrated ultrasound region, else PixelSpacing."""
    path = getattr(ds, "filename", None) or "(dataset)"
    best = None
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        # Units code 3 is centimetres (PS3.3 C.8.5.5.1.15); other units (s, Hz, dB) are not distances.
        units = [
            optional_numbers(region, k, path, None, count=1)
            for k in ("PhysicalUnitsXDirection", "PhysicalUnitsYDirection")
        ]
        if units != [[3.0], [3.0]]:
            continue
        corners = [
            (optional_numbers(region, k, path, None, count=1) or [0.0])[0]
            for k in ("RegionLocationMinX0", "RegionLocationMaxX1", "RegionLocationMinY0", "RegionLocationMaxY1")
        ]
        area = (corners[1] - corners[0]) * (corners[3] - corners[2])
        dy = optional_numbers(region, "PhysicalDeltaY", path, problems, count=1)
        dx = optional_numbers(region, "PhysicalDeltaX", path, problems, count=1)
        if not dy or not dx or dy[0] == 0 or dx[0] == 0:
            continue
        spacing = (abs(dy[0]) * 10.0, abs(dx[0]) * 10.0)
        if best is None or area > best[0]:
            best = (area, spacing)
    return best[1] if best else _pixel_spacing(ds, path, problems)


def _load_clip(path: Path, ds: Dataset, array: np.ndarray) -> MetaTensor:
    frames = frame_count(ds, path)
    samples = header_int(ds, "SamplesPerPixel", path, 1)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        samples = 3
        if array.max(initial=0) > 255:  # 16-bit palette entries: keep 8-bit video range
            array = array / 257.0
    if frames == 1:
        array = array[None]
    if samples == 1:
        array = array[..., None]
    data = array.transpose(3, 0, 1, 2).astype(np.float32)
    if samples == 1:
        data = _rescale(data, *_rescale_of(ds, path))
    found: list[str] = []
    interval = frame_interval(ds, found)
    spacing = ultrasound_spacing(ds, found)
    problems: list[str] = []
    for problem in found:
        warn_problem(problems, f"{path}: {problem}")
    return make_clip(
        data,
        path=path,
        modality=_text(ds, "Modality", path) or "OT",
        frame_interval=interval,
        pixel_spacing=spacing,
        problems=problems,
        channel_dim=-1 if samples > 1 else float("nan"),
        **_dicom_meta(ds, [path]),
    )


def _frame_offsets(ds: Dataset, path: Path, frames: int, start: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    """Distance of each frame from ``start`` along ``normal`` (mm) from ``GridFrameOffsetVector``; ``None``
    when absent.

    RT Dose (PS3.3 C.8.8.3.2): offsets are relative to ImagePositionPatient when the first is 0, else
    they are the frames' absolute coordinates along the normal (z for the transverse plane it requires).
    """
    offsets = header_numbers(ds, "GridFrameOffsetVector", path)
    if offsets is None:
        return None
    if len(offsets) != frames:
        raise FieldError(path, f"GridFrameOffsetVector has {len(offsets)} value(s) for {frames} frames")
    offsets_mm = np.asarray(offsets, float)
    return offsets_mm if offsets_mm[0] == 0 else offsets_mm - float(start @ normal)


def multiframe_geometry(ds: Dataset, path: str | os.PathLike | None = None) -> StackGeometry:
    """Frame order and geometry of a multi-frame image stack (enhanced CT/MR, RT Dose), from its header alone.

    Positions come from the per-frame functional groups; a classic multi-frame with one top-level
    position has its frames at ``GridFrameOffsetVector`` along the normal (RT Dose), else evenly
    spaced by the slice spacing. A position, orientation or frame count that is not numbers is
    ``fatal``; a broken optional field is a problem.
    """
    path = Path(path or getattr(ds, "filename", None) or "(dataset)")
    problems: list[str] = []
    try:
        frames = frame_count(ds, path)
        positions = [
            _frame_numbers(ds, path, i, "PlanePositionSequence", "ImagePositionPatient", 3) for i in range(frames)
        ]
        orientations = [
            _frame_numbers(ds, path, i, "PlaneOrientationSequence", "ImageOrientationPatient", 6) for i in range(frames)
        ]
        start = header_numbers(ds, "ImagePositionPatient", path, count=3)
        iop = header_numbers(ds, "ImageOrientationPatient", path, count=6)
        item = _frame_item(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
        spacing = _pixel_spacing(item, path, problems) if item is not None else None
        item = _frame_item(ds, 0, "PixelMeasuresSequence", "SliceThickness")
        thickness = _fallback_step(item, path, problems) if item is not None else None
        step = _fallback_step(ds, path, problems) or thickness
        offsets, normal = None, None
        if not all(positions) and start and iop and orientation_problem(np.array(iop)) is None:
            _, _, normal = directions(np.array(iop))
            offsets = _frame_offsets(ds, path, frames, np.array(start), normal)
    except FieldError as error:
        geometry = stack_geometry(None, None, None)
        geometry.fatal.append(error.problem)
        return geometry
    if not all(positions) and start and iop:
        orientations = [iop] * frames
        if normal is not None:
            if offsets is None:
                if step is None and frames > 1:
                    problems.append("no slice spacing in the file: 1 mm between frames assumed")
                offsets = np.arange(frames) * (step or 1.0)
            positions = [list(np.array(start) + offset * normal) for offset in offsets]
        else:
            positions = [start] * frames  # stack_geometry reports the orientation
    have = all(p and len(p) == 3 for p in positions) and all(o and len(o) == 6 for o in orientations)
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        spacing or _pixel_spacing(ds, path, problems),
        step,
    )
    geometry.problems[:0] = problems
    if not have:
        geometry.order = np.arange(frames)
        geometry.positions = np.zeros((frames, 3))
    return geometry


def _load_multiframe(path: Path, ds: Dataset, array: np.ndarray) -> MetaTensor:
    """An enhanced CT/MR (or any multi-frame image stack) as a volume, frames ordered along the normal."""
    geometry = multiframe_geometry(ds, path)
    if geometry.fatal:
        raise SeriesError(f"{path}: {'; '.join(geometry.fatal)}")
    if len(array) != len(geometry.order):
        raise FileFormatError(f"{path}: the pixel data holds {len(array)} frames, the header {len(geometry.order)}")
    stack: _Stack | None = None
    for k, i in enumerate(geometry.order):
        item = _frame_item(ds, int(i), "PixelValueTransformationSequence", "RescaleSlope") or _frame_item(
            ds, int(i), "PixelValueTransformationSequence", "RescaleIntercept"
        )
        rescale = _rescale_of(ds, path, item)
        if stack is None:
            stack = _Stack(len(array), array[i], *rescale)
        stack.put(k, array[i], *rescale)
    assert stack is not None  # a file has at least one frame
    return _volume(stack.data, geometry, path, ds, [path], [])


def _load_file(path: Path) -> MetaTensor:
    ds, array = _pixels(path)
    if is_clip(ds):
        return _load_clip(path, ds, array)
    if frame_count(ds, path) > 1:
        return _load_multiframe(path, ds, array)
    if "PerFrameFunctionalGroupsSequence" in ds:  # an enhanced CT/MR of one frame
        return _load_multiframe(path, ds, array[None])
    geometry = series_geometry([(path, ds)])
    if geometry.fatal:
        raise SeriesError(f"{path}: {'; '.join(geometry.fatal)}")
    rescale = _rescale_of(ds, path)
    stack = _Stack(1, array, *rescale)
    stack.put(0, array, *rescale)
    return _volume(stack.data, geometry, path, ds, [path], [])


def load_dicom(path: str | os.PathLike, series: str | int | None = None) -> MetaTensor:
    """A DICOM folder (one series of it) or one DICOM file → ``MetaTensor``; see :func:`volcam.load`."""
    path = Path(path)
    if path.is_dir():
        scan = scan_folder(path)
        return _load_series(select_series(scan, series), path)
    header = read_header(path)  # a one-line error for a file that is not DICOM, before any pixel work
    if _is_dicomdir(header):  # a DICOMDIR index: read the folder it indexes
        return load_dicom(path.parent, series)
    if series is not None:
        raise SeriesError(
            f"{path}: series= picks a series in a DICOM folder (--series on the command line); "
            "this is a single image file"
        )
    return _load_file(path)
