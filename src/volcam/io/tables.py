"""What a cohort is made of: cases read from a manifest (CSV/Parquet) or a folder of scans.

A manifest is a table with one row per case::

    case,image,mask,label
    case001,scans/case001.nii.gz,masks/case001.nii.gz,covid
    case002,scans/case002/,,normal          # a DICOM series folder, no mask
    case003,http://pacs:8042/dicom-web/studies/1.2.3/series/1.2.4,,covid   # a series on a PACS

Columns (names are case-insensitive): ``image`` (or ``image_path``, ``path``, ``scan``), optional
``case`` (or ``case_id``, ``id``; by default the image's name), ``mask`` (or ``mask_path``) and
``label`` (a class name or index), and ``region`` (or ``region_mask``, ``lungs``: a body or lung mask on
the scan's grid that the energy, VxAP, MaxF1 and deletion/insertion stay within). This is the one reader
of scan lists: cohorts and L-CAM training both use it.
Relative paths are taken from the manifest's folder; an ``http(s)://`` image is a DICOMweb study or
series address (:mod:`volcam.io.dicom.web`) and needs a case id of its own. The case id names the case's output folder,
so it must be a plain name; the id comes from the manifest, never from the scan's headers (no
patient name ends up in a file name). A folder instead of a manifest makes one case per scan
(a file, or a sub-folder holding a DICOM series) named after the file; ``X_mask.nii.gz`` beside
``X.nii.gz`` is X's mask.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volcam.errors import FileFormatError, InputError, first_line, one_line
from volcam.io.formats import full_suffix, is_image_name, is_url
from volcam.io.paths import is_regular_file

__all__ = ["Case", "input_signature", "read_cases"]

_COLUMNS = {
    "case": ("case", "case_id", "id"),
    "image": ("image", "image_path", "path", "scan"),
    "mask": ("mask", "mask_path"),
    "label": ("label",),
    "region": ("region", "region_mask", "lungs"),
}
# Names the run writes into the output folder itself: a case may not take them.
RESERVED = frozenset({"results.parquet", "results.csv", "summary.md", "distributions.png", "cohort.json"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+=-]*$")
_MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class Case:
    """One case of a cohort.

    Attributes:
        case_id: the manifest's id; names the output folder ``OUT/<case_id>/``.
        image: the scan (a file or a DICOM folder), absolute; or a DICOMweb address (text).
        mask: the lesion mask on the scan's grid, or ``None``.
        label: the true class as written in the manifest (name or index), or ``None``.
        region: a body or lung mask on the scan's grid that the scores stay within, or ``None``.
    """

    case_id: str
    image: Path | str
    mask: Path | str | None = None
    label: str | None = None
    region: Path | str | None = None


def _cell(value: Any) -> str | None:
    """A manifest cell as text; empty and missing cells (NaN, None, '') are ``None``."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a label column of ints read back as floats because of a gap
    text = str(value).strip()
    return text or None


def _pick(columns: list[str], role: str, where: Path) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    for name in _COLUMNS[role]:
        if name in lowered:
            return lowered[name]
    if role == "image":
        wanted = " or ".join(repr(n) for n in _COLUMNS[role])
        found = ", ".join(one_line(str(c)) for c in columns)  # a header cell may hold a line break
        raise InputError(f"{where}: no {role} column ({wanted}); its columns: {found}")
    return None


def check_case_id(case_id: str, where: str) -> None:
    """An :class:`InputError` unless ``case_id`` is a plain folder name (no separators, no leading dot)."""
    if not _SAFE_ID.match(case_id) or case_id in RESERVED or case_id.endswith((".tmp", ".old")):
        raise InputError(
            f"{where}: case id {case_id!r} cannot name a folder; use letters, digits and _ . - @ + = "
            "(not starting with a dot)"
        )


def _read_table(path: Path) -> Any:
    import pandas as pd

    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".tsv", ".txt")):
            # Everything as text: ids like "007" keep their zeros, empty cells stay empty.
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if name.endswith(".tsv") else ",")
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path}: cannot read the manifest ({first_line(error)})") from None
    raise InputError(f"{path}: a manifest is a .csv, .tsv or .parquet file (or give a folder of scans)")


def _from_manifest(path: Path) -> list[Case]:
    table = _read_table(path)
    columns = [str(c) for c in table.columns]
    table.columns = columns
    roles = {role: _pick(columns, role, path) for role in _COLUMNS}
    cases = []
    for number, row in enumerate(table.to_dict("records"), start=2):  # row 1 is the header
        where = f"{path}, row {number}"
        image = _cell(row[roles["image"]])
        if image is not None and is_url(image) and not (roles["case"] and _cell(row[roles["case"]])):
            raise InputError(f"{where}: a DICOMweb address needs a case id (a case column): UIDs do not name folders")
        # no case column (e.g. ``path,label`` for L-CAM training): the id is the image's name
        case_id = (
            _cell(row[roles["case"]]) if roles["case"] else (_scan_name(path.parent / image)[0] if image else None)
        )
        if case_id is None or image is None:
            raise InputError(f"{where}: every case needs an id and an image path")
        check_case_id(case_id, where)
        mask = _cell(row[roles["mask"]]) if roles["mask"] else None
        label = _cell(row[roles["label"]]) if roles["label"] else None
        region = _cell(row[roles["region"]]) if roles["region"] else None
        # an absolute path in the manifest stays as it is (pathlib drops the folder)
        mask_path, region_path = (None if cell is None else _place(path, cell) for cell in (mask, region))
        cases.append(Case(case_id, _place(path, image), mask_path, label, region_path))
    return cases


def _place(manifest: Path, cell: str) -> Path | str:
    """A manifest's cell as a scan: a DICOMweb address as it is, a path from the manifest's folder."""
    return cell.strip() if is_url(cell) else manifest.parent / cell


def _scan_name(path: Path) -> tuple[str, bool]:
    """(case id, is a mask) of a file or folder in a folder of scans."""

    suffix = full_suffix(path) if path.is_file() else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    return (stem[: -len(_MASK_SUFFIX)], True) if stem.endswith(_MASK_SUFFIX) else (stem, False)


def _is_scan(path: Path) -> bool:
    """A DICOM folder, or a regular file with an image suffix (or none: DICOM files often have none)."""

    if path.is_dir():
        return True
    if not is_regular_file(path):  # a FIFO or a device would block the run that opens it
        return False
    return is_image_name(path)


def _from_folder(folder: Path) -> list[Case]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not _is_scan(entry):
            continue
        case_id, is_mask = _scan_name(entry)
        check_case_id(case_id, str(entry))
        found = masks if is_mask else images
        if case_id in found:
            raise InputError(f"{folder}: two scans for case {case_id!r} ({found[case_id].name}, {entry.name})")
        found[case_id] = entry
    if not images:
        raise InputError(f"{folder}: no scans in this folder")
    return [Case(case_id, image, masks.get(case_id)) for case_id, image in images.items()]


def read_cases(source: str | os.PathLike) -> list[Case]:
    """The cases of a manifest (``.csv``/``.tsv``/``.parquet``) or of a folder of scans, in order.

    Raises:
        InputError: a missing column, an empty id or path, an id that cannot name a folder, the
            same id twice (the message names the file and row), or no case at all.
        FileFormatError: the manifest does not exist or cannot be parsed.
    """
    source = Path(source).absolute()  # Dask workers may start elsewhere: every path absolute
    if not source.exists():
        raise FileFormatError(f"{source}: no such manifest or folder")
    cases = _from_folder(source) if source.is_dir() else _from_manifest(source)
    if not cases:
        raise InputError(f"{source}: the manifest lists no case (a header row and no rows)")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise InputError(f"{source}: case id {case.case_id!r} appears twice")
        seen.add(case.case_id)
    return cases


def input_signature(case: Case) -> str:
    """A short hash of the case's input files as they are now (path, size, modification time).

    A finished case is redone when its scan, mask or region changes; a DICOM folder counts every file in
    it, a DICOMweb address its text only (what the server holds is not asked). A case without a region
    has the signature it had before regions were read.
    """
    digest = hashlib.sha256()
    for path in (case.image, case.mask, *([case.region] if case.region is not None else [])):
        if path is None:
            digest.update(b"-")
            continue
        if isinstance(path, str):
            digest.update(f"url:{path};".encode())
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digest.update(str(path.resolve()).encode())
        for file in files:
            try:
                stat = file.stat()
            except OSError:  # missing: loading will say so
                digest.update(b"missing")
                continue
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
