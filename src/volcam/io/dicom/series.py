"""A DICOM folder's image series: every file's header read once (pixel data deferred), grouped by
``SeriesInstanceUID``, and the one asked for chosen.

No patient identifier is read into a message: a series is named by its UID, description, modality
and file count (:attr:`Series.label`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from volcam.errors import FileFormatError, SeriesError, one_line
from volcam.io.dicom.headers import FieldError, frame_count, header_text, optional_numbers, quiet, read_header
from volcam.io.formats import format_of
from volcam.io.paths import is_regular_file

__all__ = ["Scan", "Series", "is_dicomdir", "scan_folder", "select_series"]


_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


def is_dicomdir(ds: Dataset) -> bool:
    """Whether ``ds`` is a DICOMDIR: the index of a folder (or of removable media), no image. Read through
    :func:`~volcam.io.dicom.headers.header_text`: a UID pydicom cannot convert (an unknown VR) is none."""
    meta = getattr(ds, "file_meta", None) or Dataset()
    found = (header_text(ds, "SOPClassUID", "header"), header_text(meta, "MediaStorageSOPClassUID", "file meta"))
    return _DICOMDIR_SOP in found


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and not is_dicomdir(ds)


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
    with quiet():
        for path in files:
            _scan_file(path, by_uid, seen, skipped)
    if not by_uid:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))

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
        reason = "DICOMDIR" if is_dicomdir(ds) else "no image"
        skipped[reason] = skipped.get(reason, 0) + 1
        return
    instance = header_text(ds, "SOPInstanceUID", path) or os.fspath(path)
    if instance in seen:  # the same image copied twice in an export is one slice, not two
        skipped["duplicate"] = skipped.get("duplicate", 0) + 1
        return
    seen.add(instance)
    # A series comes into being with its first header: a copy passed over as a duplicate (whatever
    # SeriesInstanceUID it gives) makes no series without one.
    uid = header_text(ds, "SeriesInstanceUID", path) or "(no SeriesInstanceUID)"
    if uid not in by_uid:
        by_uid[uid] = _new_series(uid, ds, path)
    by_uid[uid].headers.append((path, ds))


def _new_series(uid: str, ds: Dataset, path: Path) -> Series:
    """A series named by its first header's SeriesDescription, Modality and SeriesNumber (its headers
    come after)."""
    number = optional_numbers(ds, "SeriesNumber", path, None, count=1)
    return Series(
        uid=uid,
        description=header_text(ds, "SeriesDescription", path),
        modality=header_text(ds, "Modality", path) or "OT",
        number=int(number[0]) if number and number[0] == int(number[0]) else None,
    )


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
