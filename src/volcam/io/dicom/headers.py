"""DICOM headers: a file read quietly, and its fields as checked numbers and one-line text.

:func:`read_header` reads one file with pydicom (pixel data left out, or deferred); :func:`quiet`
keeps pydicom's warnings and log lines below ERROR, which can quote element values, out of sight.
:func:`header_numbers` is the one place a numeric attribute is read: from its stored bytes while
pydicom has not converted it (:func:`_stored_numbers`, which ``tests/test_io_dicom_fast.py`` holds to
pydicom's values on every file pydicom ships), else from pydicom's value; text where numbers belong,
a wrong count, NaN or infinity is a one-line :class:`FieldError` naming the file and the keyword.
Text attributes come back as one line (:func:`header_text`): they go into messages.

Every header read here (a file, or a DICOMweb server's metadata) registers its identifying values
(:func:`note_identifiers`: the patient's names and IDs, birth date, accession number, institution,
every person name it holds ..., inside sequences at any depth too) with
:func:`volcam.errors.register_identifiers`, so no message or log line can quote them, whoever words it.
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
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag

from volcam.errors import FileFormatError, first_line, one_line, register_identifiers
from volcam.io.paths import require_regular_file

__all__ = [
    "FieldError",
    "frame_count",
    "frame_item",
    "header_int",
    "header_numbers",
    "header_text",
    "identifying_values",
    "note_identifiers",
    "optional_numbers",
    "quiet",
    "read_header",
    "source_meta",
]


# Values longer than this stay in the file when a folder is scanned (pixel data, icons, private
# blobs): pydicom reads them on first access, so each file is parsed once and nothing large is held.
_DEFER_BYTES = 4096


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_BELOW_ERROR = _BelowError()
_QUIET = threading.local()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


# Attributes that identify a patient, a person or a place (DICOM PS3.15 Annex E's basic profile, those
# holding names, numbers, dates of a person and places; UIDs are not among them: volcam names series by
# their UID). Besides these, every attribute of VR PN (a person's name) identifies.
_IDENTIFYING_KEYWORDS = """
    PatientName PatientID IssuerOfPatientID OtherPatientIDs OtherPatientNames PatientBirthName
    PatientMotherBirthName PatientBirthDate PatientBirthTime PatientAddress PatientTelephoneNumbers
    MedicalRecordLocator MilitaryRank BranchOfService PatientReligiousPreference AdmissionID
    IssuerOfAdmissionID AccessionNumber StudyID InstitutionName InstitutionAddress InstitutionalDepartmentName
    StationName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers PersonAddress
    PersonTelephoneNumbers ResponsibleOrganization RequestedProcedureID PerformedProcedureStepID
    ScheduledProcedureStepID PatientComments AdditionalPatientHistory ResponsiblePerson CountryOfResidence
    RegionOfResidence PatientState CurrentPatientLocation PatientInstitutionResidence Occupation
"""
IDENTIFYING = frozenset(tag_for_keyword(keyword) for keyword in _IDENTIFYING_KEYWORDS.split())


@functools.lru_cache(maxsize=4096)
def _is_person_name(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "PN"
    except KeyError:  # a private or unknown tag
        return False


# Sequences inside sequences walked for identifying values; a deeper nesting (a damaged or crafted
# file) is not followed further.
_MAX_NESTING = 32


def _element_vr(ds: Dataset, tag: BaseTag) -> str | None:
    """The VR ``ds``'s element ``tag`` is read as: as stored (explicit VR), else the dictionary's
    (implicit VR, or stored as UN), without converting its value."""
    stored = getattr(ds.get_item(tag, keep_deferred=True), "VR", None)
    if stored not in (None, "UN"):
        return str(stored)
    try:
        return dictionary_VR(tag)
    except KeyError:  # a private or unknown tag
        return stored


def _items(ds: Dataset, tag: BaseTag) -> list[Dataset]:
    """The datasets of the sequence ``tag``; none when pydicom cannot read it."""
    try:
        value = ds[tag].value
    except Exception:  # a damaged sequence: nothing to walk (the reader says what is wrong, if it needs it)
        return []
    return [item for item in value if isinstance(item, Dataset)] if isinstance(value, DicomSequence) else []


def _element_value(ds: Dataset, tag: BaseTag) -> Any:
    """``ds``'s value of ``tag`` as pydicom converts it, else as stored; a multi-value as a list of str."""
    try:
        value = ds[tag].value
    except Exception:  # a value pydicom cannot convert: its stored bytes
        value = getattr(ds.get_item(tag), "value", None)
    return [str(v) for v in value] if isinstance(value, MultiValue | list | tuple) else value


def _collect(ds: Dataset, found: list[Any], depth: int) -> None:
    for tag in ds.keys():  # noqa: SIM118 (a Dataset iterates over its elements, converting every one)
        vr = _element_vr(ds, tag)
        if vr == "SQ":
            if depth < _MAX_NESTING:
                for item in _items(ds, tag):
                    _collect(item, found, depth + 1)
        elif tag in IDENTIFYING or vr == "PN" or _is_person_name(int(tag)):
            value = _element_value(ds, tag)
            if value is not None and value != "":
                found.append(value)


def identifying_values(ds: Dataset) -> list[Any]:
    """The values of ``ds``'s identifying attributes (:data:`IDENTIFYING` and every person name, PN as
    stored or by the dictionary), at any depth: inside sequences too (``OtherPatientIDsSequence``, a
    name in ``RequestAttributesSequence``), as stored: what :func:`volcam.errors.scrub` must remove
    from any message about this scan."""
    found: list[Any] = []
    _collect(ds, found, 0)
    return found


def note_identifiers(ds: Dataset) -> None:
    """Register ``ds``'s identifying values with the scrubber (:func:`volcam.errors.register_identifiers`)."""
    with quiet():  # converting a malformed name warns, quoting it
        register_identifiers(identifying_values(ds))


def read_header(path: str | os.PathLike, *, pixels: bool = False, defer: bool = False) -> Dataset:
    """Read one DICOM file (without its pixel data unless ``pixels``); a one-line error if it is not one.

    With ``defer`` the pixel data (and any value over 4 KiB) stays in the file and pydicom reads it
    when it is first accessed: the header of a folder's scan is all :func:`volcam.io.dicom.pixels.decode` needs later.
    """
    require_regular_file(path)  # pydicom would block on a FIFO and never finish /dev/zero
    try:
        with quiet():
            if defer:
                ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
            else:
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
            note_identifiers(ds)  # before anything can fail with a message quoting them
            return ds
    except pydicom.errors.InvalidDicomError:
        raise FileFormatError(f"{path}: not a DICOM file (no DICM preamble or file meta)") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, not a DICOM file") from None
    except OSError as error:
        raise FileFormatError(f"{path}: cannot be read ({error.strerror or first_line(error)})") from None
    except Exception as error:  # pydicom raises many types on a damaged file; the user needs one line
        raise FileFormatError(f"{path}: damaged or truncated DICOM file ({first_line(error)})") from None


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
        with quiet():
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


def header_text(ds: Dataset, keyword: str, path: str | os.PathLike) -> str:
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


def frame_item(ds: Dataset, index: int, sequence: str, keyword: str) -> Dataset | None:
    """The item holding ``keyword`` for frame ``index``: from the per-frame functional groups, else the
    shared ones; ``None`` when neither has it."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not isinstance(items, DicomSequence) or len(items) <= i:  # absent, or of another VR in a damaged file
            continue
        inner = items[i].get(sequence)
        if isinstance(inner, DicomSequence) and len(inner) and keyword in inner[0]:
            return inner[0]
    return None


def source_meta(ds: Dataset, files: list[Path]) -> dict[str, Any]:
    """What a loaded image's metadata says of its source: series, study and frame-of-reference UIDs, the
    series description (one line each, from ``ds``) and the ``files`` read, in slice order."""
    path = files[0] if files else ""
    return {
        "series_uid": header_text(ds, "SeriesInstanceUID", path),
        "series_description": header_text(ds, "SeriesDescription", path),
        "study_uid": header_text(ds, "StudyInstanceUID", path),
        "frame_of_reference_uid": header_text(ds, "FrameOfReferenceUID", path),
        "source_files": [os.fspath(f) for f in files],
    }
