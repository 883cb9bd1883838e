"""DICOM in: a series from a folder, or one file (a slice, an enhanced multi-frame CT/MR, an ultrasound cine).

Read with pydicom: headers first (no pixel data) to group files by ``SeriesInstanceUID`` and order
slices along their normal, then the pixel data of the chosen series only. Volumes come back as
``(C, X, Y, Z)`` = (channels, column, row, slice) like MONAI's ``LoadImage``; cine loops as
``(C, T, H, W)``. See :mod:`volcam.io.image` for the metadata.

No patient identifier is read into a message: errors and warnings name the file, the series UID and
its description, never PatientName/PatientID/dates; pydicom's own warnings (which may quote values)
are silenced while reading.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from volcam.errors import DependencyError, FileFormatError, SeriesError
from volcam.io.dicom_geometry import StackGeometry, stack_geometry
from volcam.io.image import LPS_TO_RAS, make_clip, make_volume, warn_problem
from volcam.io.paths import is_regular_file, require_regular_file

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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's warnings and log lines while reading: they can quote element values."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_header(path: str | os.PathLike, *, pixels: bool = False) -> Dataset:
    """Read one DICOM file (without its pixel data unless ``pixels``); a one-line error if it is not one."""
    require_regular_file(path)  # pydicom would block on a FIFO and never finish /dev/zero
    try:
        with _quiet():
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError:
        raise FileFormatError(f"{path}: not a DICOM file (no DICM preamble or file meta)") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, not a DICOM file") from None
    except OSError as error:
        raise FileFormatError(f"{path}: cannot be read ({error.strerror or _one_line(error)})") from None
    except Exception as error:  # pydicom raises many types on a damaged file; the user needs one line
        raise FileFormatError(f"{path}: damaged or truncated DICOM file ({_one_line(error)})") from None


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", Dataset())
    return _DICOMDIR_SOP in (ds.get("SOPClassUID", ""), meta.get("MediaStorageSOPClassUID", ""))


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and not _is_dicomdir(ds)


@dataclass
class Series:
    """The headers of one series, as found in a folder."""

    uid: str
    description: str
    modality: str
    number: int | None
    headers: list[tuple[Path, Dataset]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Images in the series: files, or frames of a multi-frame file."""
        return sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in self.headers)

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
    for path in files:
        try:
            ds = read_header(path)
        except FileFormatError:
            skipped["not DICOM"] = skipped.get("not DICOM", 0) + 1
            continue
        if not _is_image(ds):
            reason = "DICOMDIR" if _is_dicomdir(ds) else "no image"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)")
        if uid not in by_uid:
            number = ds.get("SeriesNumber")
            by_uid[uid] = Series(
                uid=uid,
                description=str(ds.get("SeriesDescription", "") or "").strip(),
                modality=str(ds.get("Modality", "") or "OT"),
                number=int(number) if number not in (None, "") else None,
            )
        instance = str(ds.get("SOPInstanceUID", "")) or os.fspath(path)
        if instance in seen:  # the same image copied twice in an export is one slice, not two
            skipped["duplicate"] = skipped.get("duplicate", 0) + 1
            continue
        seen.add(instance)
        by_uid[uid].headers.append((path, ds))
    if not by_uid:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        from volcam.io.load import format_of

        others = sorted(p.name for p in files if format_of(p) != "dicom")
        hint = f"; a folder is read as DICOM, give the file itself (e.g. {others[0]})" if others else ""
        raise FileFormatError(f"{root}: no DICOM image in the folder ({len(files)} file(s): {counts}){hint}")
    series = sorted(by_uid.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    return Scan(root, series, skipped)


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
            f"pick one with series= (UID or description): {listing}"
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
            raise SeriesError(f"{scan.root}: {len(found)} series match {wanted!r}; use the UID: {listing}")
    raise SeriesError(f"{scan.root}: no series {wanted!r} in the folder; there are: {listing}")


def _floats(value: Any) -> list[float] | None:
    """A DICOM number or list of numbers as floats; ``None`` when absent or unreadable."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        return [float(v) for v in (value if hasattr(value, "__iter__") else [value])]
    except (TypeError, ValueError):
        return None


def _fallback_step(ds: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _floats(ds.get(keyword))
        if value and value[0] > 0:
            return value[0]
    return None


def series_geometry(headers: list[tuple[Path, Dataset]]) -> StackGeometry:
    """Order the single-frame images of a series and derive its geometry, from headers alone.

    Different slice sizes are fatal (reported in ``fatal``) like mixed orientations are.
    """
    datasets = [ds for _, ds in headers]
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    positions = [_floats(ds.get("ImagePositionPatient")) for ds in datasets]
    orientations = [_floats(ds.get("ImageOrientationPatient")) for ds in datasets]
    have = all(p and len(p) == 3 for p in positions) and all(o and len(o) == 6 for o in orientations)
    first = datasets[0]
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        _pixel_spacing(first),
        _fallback_step(first),
        (_floats(first.get("GantryDetectorTilt")) or [None])[0],
    )
    if len(sizes) > 1:
        shown = ", ".join(f"{r}×{c}" for r, c in sorted(sizes))
        geometry.fatal.insert(0, f"slices have different sizes ({shown})")
    samples = {int(ds.get("SamplesPerPixel", 1) or 1) for ds in datasets}
    if len(samples) > 1:
        geometry.fatal.insert(0, "slices mix grey and colour images")
    spacings = np.array([_pixel_spacing(ds) or (1.0, 1.0) for ds in datasets])
    if np.ptp(spacings, axis=0).max() > 1e-4:
        geometry.fatal.append(f"slices have different pixel spacings ({spacings.min():.4g} to {spacings.max():.4g} mm)")
    if not have and len(datasets) > 1:
        geometry.fatal.append("slices have no ImagePositionPatient/ImageOrientationPatient, so they cannot be ordered")
    return geometry


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _floats(ds.get(keyword))
        if value and len(value) == 2 and min(value) > 0:
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


def _pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """Full dataset and its decoded pixels, ``(frames?, rows, columns, samples?)`` as pydicom gives them."""
    ds = read_header(path, pixels=True)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise FileFormatError(f"{path}: has no pixel data")
    _check_decoder(ds, path)
    try:
        with _quiet():
            array = ds.pixel_array  # pydicom converts YBR to RGB here
            if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                array = apply_color_lut(array, ds)
    except Exception as error:  # truncated data, a codec failing: one line naming the file
        raise FileFormatError(f"{path}: cannot decode the pixel data ({_one_line(error)})") from None
    return ds, array


def _rescale(array: np.ndarray, slope: Any, intercept: Any) -> np.ndarray:
    """Stored values → modality units (HU for CT): ``value · RescaleSlope + RescaleIntercept``."""
    out = array.astype(np.float32)
    s, i = (_floats(slope) or [1.0])[0], (_floats(intercept) or [0.0])[0]
    if s != 1.0:
        out *= np.float32(s)
    if i != 0.0:
        out += np.float32(i)
    return out


def _dicom_meta(ds: Dataset, files: list[Path]) -> dict[str, Any]:
    return {
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_description": str(ds.get("SeriesDescription", "") or "").strip(),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "source_files": [os.fspath(f) for f in files],
    }


def _volume(slices: np.ndarray, geometry: StackGeometry, path: Path, ds: Dataset, files: list[Path], problems: list):
    """``(N, rows, columns[, samples])`` in slice order → ``(C, column, row, slice)`` MetaTensor."""
    if slices.ndim == 3:
        slices = slices[..., None]
    data = slices.transpose(3, 2, 1, 0)
    for problem in geometry.problems:
        warn_problem(problems, f"{path}: {problem}")
    channel_dim = -1 if data.shape[0] > 1 else None
    return make_volume(
        data,
        LPS_TO_RAS @ geometry.affine_lps,
        path=path,
        modality=str(ds.get("Modality", "") or "OT"),
        problems=problems,
        channel_dim=channel_dim,
        slice_positions_lps=geometry.positions.tolist(),
        **_dicom_meta(ds, files),
    )


def _load_series(series: Series, where: Path) -> Any:
    headers = series.headers
    multi = [p for p, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        if len(headers) == 1:
            return _load_file(multi[0])
        raise SeriesError(
            f"{where}: series {series.label} holds {len(multi)} multi-frame file(s) among {len(headers)}; "
            "load one file directly"
        )
    geometry = series_geometry(headers)
    if geometry.fatal:
        raise SeriesError(f"{where}: series {series.label}: {'; '.join(geometry.fatal)}")
    ordered = [headers[i][0] for i in geometry.order]
    arrays = []
    for file in ordered:
        ds, array = _pixels(file)
        arrays.append(_rescale(array, ds.get("RescaleSlope"), ds.get("RescaleIntercept")))
    logger.info("series %s: %d slices from %s", series.uid, len(arrays), where)
    return _volume(np.stack(arrays), geometry, where, ds, ordered, [])


def _frame_value(ds: Dataset, index: int, sequence: str, keyword: str) -> Any:
    """An attribute of frame ``index`` from the per-frame functional groups, else the shared ones."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is None or len(items) <= i:
            continue
        inner = items[i].get(sequence)
        if inner is not None and len(inner) and keyword in inner[0]:
            return inner[0][keyword].value
    return None


def is_clip(ds: Dataset) -> bool:
    """Whether a file is a clip (ultrasound, angiography, colour, or timed frames) rather than slices."""
    timed = any(k in ds for k in ("FrameTime", "FrameTimeVector", "CineRate"))
    return (
        str(ds.get("Modality", "")) in _CLIP_MODALITIES
        or str(ds.get("PhotometricInterpretation", "")) in _COLOR
        or (timed and "PerFrameFunctionalGroupsSequence" not in ds)
    )


def frame_interval(ds: Dataset) -> float | None:
    """Seconds between frames from FrameTime (ms), FrameTimeVector (ms) or CineRate (frames/s)."""
    frame_time = _floats(ds.get("FrameTime"))
    if frame_time and frame_time[0] > 0:
        return frame_time[0] / 1000.0
    vector = _floats(ds.get("FrameTimeVector"))
    if vector and len(vector) > 1 and np.mean(vector[1:]) > 0:
        return float(np.mean(vector[1:])) / 1000.0  # the first entry is the first frame's offset, 0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _floats(ds.get(keyword))
        if rate and rate[0] > 0:
            return 1.0 / rate[0]
    return None


def ultrasound_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) mm per pixel from the largest calibrated ultrasound region, else PixelSpacing."""
    best = None
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        # Units code 3 is centimetres (PS3.3 C.8.5.5.1.15); other units (s, Hz, dB) are not distances.
        if region.get("PhysicalUnitsXDirection") != 3 or region.get("PhysicalUnitsYDirection") != 3:
            continue
        area = (region.get("RegionLocationMaxX1", 0) - region.get("RegionLocationMinX0", 0)) * (
            region.get("RegionLocationMaxY1", 0) - region.get("RegionLocationMinY0", 0)
        )
        spacing = (abs(float(region.PhysicalDeltaY)) * 10.0, abs(float(region.PhysicalDeltaX)) * 10.0)
        if best is None or area > best[0]:
            best = (area, spacing)
    return best[1] if best else _pixel_spacing(ds)


def _load_clip(path: Path, ds: Dataset, array: np.ndarray) -> Any:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
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
        data = _rescale(data, ds.get("RescaleSlope"), ds.get("RescaleIntercept"))
    return make_clip(
        data,
        path=path,
        modality=str(ds.get("Modality", "") or "OT"),
        frame_interval=frame_interval(ds),
        pixel_spacing=ultrasound_spacing(ds),
        problems=[],
        channel_dim=-1 if samples > 1 else float("nan"),
        **_dicom_meta(ds, [path]),
    )


def multiframe_geometry(ds: Dataset) -> StackGeometry:
    """Frame order and geometry of a multi-frame image stack (enhanced CT/MR), from its header alone.

    Positions come from the per-frame functional groups; a classic multi-frame with one top-level
    position has its frames evenly spaced along the normal.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    positions = [_floats(_frame_value(ds, i, "PlanePositionSequence", "ImagePositionPatient")) for i in range(frames)]
    orientations = [
        _floats(_frame_value(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")) for i in range(frames)
    ]
    spacing = _floats(_frame_value(ds, 0, "PixelMeasuresSequence", "PixelSpacing"))
    thickness = _floats(_frame_value(ds, 0, "PixelMeasuresSequence", "SliceThickness"))
    step = _fallback_step(ds) or (thickness[0] if thickness else None)
    if not all(positions) and _floats(ds.get("ImagePositionPatient")) and _floats(ds.get("ImageOrientationPatient")):
        iop = np.array(_floats(ds.ImageOrientationPatient))
        normal = np.cross(iop[:3], iop[3:])
        start = np.array(_floats(ds.ImagePositionPatient))
        positions = [list(start + k * (step or 1.0) * normal) for k in range(frames)]
        orientations = [list(iop)] * frames
    have = all(p and len(p) == 3 for p in positions) and all(o and len(o) == 6 for o in orientations)
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        (spacing[0], spacing[1]) if spacing and len(spacing) == 2 else _pixel_spacing(ds),
        step,
    )
    if not have:
        geometry.order = np.arange(frames)
        geometry.positions = np.zeros((frames, 3))
    return geometry


def _load_multiframe(path: Path, ds: Dataset, array: np.ndarray) -> Any:
    """An enhanced CT/MR (or any multi-frame image stack) as a volume, frames ordered along the normal."""
    geometry = multiframe_geometry(ds)
    if geometry.fatal:
        raise SeriesError(f"{path}: {'; '.join(geometry.fatal)}")
    slices = []
    for i in geometry.order:
        slope = _frame_value(ds, int(i), "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _frame_value(ds, int(i), "PixelValueTransformationSequence", "RescaleIntercept")
        slope = ds.get("RescaleSlope") if slope is None else slope
        intercept = ds.get("RescaleIntercept") if intercept is None else intercept
        slices.append(_rescale(array[i], slope, intercept))
    return _volume(np.stack(slices), geometry, path, ds, [path], [])


def _load_file(path: Path) -> Any:
    ds, array = _pixels(path)
    if is_clip(ds):
        return _load_clip(path, ds, array)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return _load_multiframe(path, ds, array)
    if "PerFrameFunctionalGroupsSequence" in ds:  # an enhanced CT/MR of one frame
        return _load_multiframe(path, ds, array[None])
    geometry = series_geometry([(path, ds)])
    if geometry.fatal:
        raise SeriesError(f"{path}: {'; '.join(geometry.fatal)}")
    return _volume(
        _rescale(array, ds.get("RescaleSlope"), ds.get("RescaleIntercept"))[None], geometry, path, ds, [path], []
    )


def load_dicom(path: str | os.PathLike, series: str | int | None = None) -> Any:
    """A DICOM folder (one series of it) or one DICOM file → ``MetaTensor``; see :func:`volcam.load`."""
    path = Path(path)
    if path.is_dir():
        scan = scan_folder(path)
        return _load_series(select_series(scan, series), path)
    header = read_header(path)  # a one-line error for a file that is not DICOM, before any pixel work
    if _is_dicomdir(header):  # a DICOMDIR index: read the folder it indexes
        return load_dicom(path.parent, series)
    if series is not None:
        raise SeriesError(f"{path}: series= picks a series in a DICOM folder; this is a single image file")
    return _load_file(path)
