"""The header of a MetaImage (``.mha``/``.mhd``) or NRRD (``.nrrd``/``.nhdr``) file, checked in Python
before SimpleITK reads it (:func:`check_itk_header`).

SimpleITK's readers are C and C++ that trust a header. ITK's MetaIO (``metaUtils.cxx`` ``MET_Read``,
``metaObject.cxx``, ``metaImage.cxx``) reads ``NDims`` as a double and casts it to ``int``
(``1e308``, ``99999999999``: undefined behaviour, a SIGSEGV), fills arrays of 10 (``SequenceID``: 4)
and a 4096-value field buffer as far as ``NDims`` says, and reads every number with ``>>``, which
crosses line breaks: a field with fewer numbers eats the next line, and a word where a number
belongs fails the stream, after which its loop over header lines never ends (a hang). It copies
strings into 255-byte buffers with ``strcpy``, a name into a 255-byte field record. teem's NRRD
reader checks its fields itself, but opens whatever ``data file`` names: a FIFO blocks it forever.

So the header is read here (MetaImage: ``key = value`` lines up to ``ElementDataFile``, after which
a ``.mha``'s data follows; NRRD: ``field: value`` lines up to the blank line) and whatever MetaIO or
teem cannot be trusted with is one :class:`FileFormatError` naming the file and the field: a field
twice, a line that is not ASCII ``key = value`` text, a value too long for MetaIO's buffers, a count
of numbers other than the dimension asks, numbers that are not finite, a dimension outside 1..4, an
unknown voxel type or encoding, a flag that is not True/False, a data file that is missing, not a
regular file, or a list or numbered pattern of files (volcam reads one), and a data part smaller than
the header claims (:func:`volcam.io.paths.check_fits_file`; compressed data: the most deflate can
hold). What passes, MetaIO and teem read as they always did; ``load_itk`` then checks the size
against memory and the geometry from SimpleITK's own reading (``_check_header``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from volcam.errors import FileFormatError, one_line
from volcam.io.memory import check_fits
from volcam.io.paths import GZIP_MAX_RATIO, check_fits_file, gib, not_regular_reason

__all__ = ["MAX_HEADER_BYTES", "check_itk_header"]

MAX_HEADER_BYTES = 1 << 20  # a header longer than this is no header volcam reads
MAX_DIMS = 4  # MetaIO's SequenceID has 4 entries; volcam reads 2D/3D images (NRRD: and a vector axis)
MAX_CHANNELS = 64  # ElementNumberOfChannels: components become channels
_MAX_KEY = 200  # MetaIO copies a field's name into 255 bytes
_MAX_STRING = 254  # ... and Comment, Name, ObjectType, AcquisitionDate into 255 bytes
_MAX_KNOWN_LINE = 480  # MetaIO reads the rest of a known field's line into 500 bytes (longer: a hang)
_MAX_LINE = 16384  # any other line (MetaIO: 32 KiB for a field it does not know; teem: no limit)
_INT32 = 2**31 - 1

# ASCII digits, as C reads them (\d takes any script's); 30 at most (int() refuses 4300 and more)
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
# What C++'s `>> double` and teem's sscanf read, and the words for NaN and infinity (refused as such)
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE)


@dataclass(frozen=True)
class Field:
    """One header line: its number (from 1), the key as written, and the value after the separator."""

    line: int
    key: str
    value: str


def check_itk_header(path: Path) -> None:
    """Refuse, in one line, a MetaImage or NRRD header that SimpleITK cannot be trusted with (see the
    module's text); nothing for a suffix of neither."""
    suffix = path.name.lower().rsplit(".", 1)[-1]
    if suffix in ("mha", "mhd"):
        check_metaimage(path)
    elif suffix in ("nrrd", "nhdr"):
        check_nrrd(path)


# -- what both formats share ------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    """The file's first :data:`MAX_HEADER_BYTES` + 1 bytes (one more: a header that long is refused)."""
    try:
        with open(path, "rb") as file:
            return file.read(MAX_HEADER_BYTES + 1)
    except OSError as error:
        raise FileFormatError(f"{path}: not readable ({error.strerror or type(error).__name__})") from None


def _lines(path: Path, head: bytes, what: str) -> Iterator[tuple[int, str, int]]:
    """``(number, text, offset after the line)`` of each line of ``head``: UTF-8 text (ASCII, and a
    comment or metadata value may hold a name with accents) without control characters (a tab and a
    trailing ``\\r`` are fine), at most :data:`_MAX_LINE` long. A ``.mha`` whose header has no
    ``ElementDataFile`` line runs into its binary data here."""
    offset, number = 0, 0
    while offset < len(head):
        end = head.find(b"\n", offset)
        if end < 0:
            if len(head) > MAX_HEADER_BYTES:
                raise FileFormatError(f"{path}: no end of the {what} header in its first {gib(MAX_HEADER_BYTES)}")
            end = len(head)
        raw, offset, number = head[offset:end].rstrip(b"\r"), end + 1, number + 1
        if len(raw) > _MAX_LINE:
            raise FileFormatError(f"{path}: header line {number} is longer than {_MAX_LINE} characters")
        text = _text(raw)
        if text is None:
            raise FileFormatError(f"{path}: header line {number} is not text (a {what} header is text lines)")
        yield number, text, min(offset, len(head))


def _text(raw: bytes) -> str | None:
    """``raw`` as UTF-8 text without control characters but a tab; ``None`` when it is not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in text) else text


def _shown(value: str) -> str:
    """A value for a message: one line, at most 40 characters."""
    value = one_line(value)
    return value if len(value) <= 40 else value[:39] + "…"


def _bad(path: Path, field: Field, problem: str) -> FileFormatError:
    """The one line for a field: ``a.mhd: the header's spacing (ElementSpacing = nan 1 1) holds NaN ...``."""
    noun = _NOUNS.get(field.key.lower().replace(" ", ""), "field")
    return FileFormatError(f"{path}: the header's {noun} ({field.key} = {_shown(field.value)}) {problem}")


def _add(path: Path, fields: dict[str, Field], name: str, field: Field) -> None:
    """``fields[name] = field``, refusing a key given twice (MetaIO and teem read either, or fail)."""
    if name in fields:
        first = fields[name].line
        raise FileFormatError(f"{path}: the header gives {field.key} twice (lines {first} and {field.line})")
    fields[name] = field


def _numbers(path: Path, field: Field, count: int, what: str) -> list[float]:
    """The ``count`` finite numbers of ``field``; else one line saying the field is not ``what``."""
    words = field.value.split()
    if len(words) != count or not all(_NUMBER.fullmatch(word) for word in words):
        raise _bad(path, field, f"is not {what}")
    values = [float(word) for word in words]
    if not all(math.isfinite(value) for value in values):
        raise _bad(path, field, "holds NaN or infinity")
    return values


def _wholes(path: Path, field: Field, count: int, what: str, low: int = 1, high: int = _INT32) -> list[int]:
    """The ``count`` whole numbers of ``field``, each from ``low`` to ``high``; else one line saying the
    field is not ``what``."""
    words = field.value.split()
    if len(words) != count or not all(_INTEGER.fullmatch(word) and low <= int(word) <= high for word in words):
        raise _bad(path, field, f"is not {what}")
    return [int(word) for word in words]


def _whole(path: Path, field: Field, low: int, high: int) -> int:
    """The one whole number of ``field``, from ``low`` to ``high``."""
    return _wholes(path, field, 1, f"a whole number from {low} to {high}", low, high)[0]


def _check_memory(path: Path, sizes: list[int], channels: int) -> None:
    """The float32 volume ``load_itk`` makes of the image fits in memory (as its own check after
    SimpleITK reads the header, ``_check_header``: the same line, before the data file is looked at)."""
    check_fits(math.prod(sizes) * channels * 4, path, f"the image ({'×'.join(map(str, sizes))})")


def _data_file(path: Path, field: Field, name: str) -> Path:
    """The one regular file ``name`` (beside the header unless absolute) that ``field`` names."""
    data = Path(name)
    data = data if data.is_absolute() else path.parent / data
    reason = not_regular_reason(data)
    if reason is not None:
        raise _bad(path, field, f"names a file that is {reason}")
    return data


def _check_compressed(path: Path, data: Path, nbytes: int, start: int, stored: int = 0) -> None:
    """A one-line error when ``nbytes`` cannot come out of the deflate stream from ``start`` in ``data``
    (``stored`` bytes of it when the header says so): deflate holds at most :data:`GZIP_MAX_RATIO`
    times its size."""
    available = max(0, data.stat().st_size - start)
    if stored > available:
        raise FileFormatError(
            f"{path}: the header claims {gib(stored)} of compressed data, the file holds {gib(available)}"
        )
    available = stored or available
    if nbytes > available * GZIP_MAX_RATIO:
        raise FileFormatError(
            f"{path}: the header claims {gib(nbytes)} of image data, more than {gib(available)} of "
            "compressed data can hold"
        )


# -- MetaImage --------------------------------------------------------------------------------------

_TYPE_BYTES = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 4, "ULONG": 4}
_TYPE_BYTES |= {"LONG_LONG": 8, "ULONG_LONG": 8, "FLOAT": 4, "DOUBLE": 8}
# MetaIO's number types (its _ARRAY forms: the same numbers, ElementNumberOfChannels of them a voxel)
META_TYPES = {f"MET_{name}{form}": size for name, size in _TYPE_BYTES.items() for form in ("", "_ARRAY")}
_PER_AXIS = ("DimSize", "ElementSpacing", "ElementSize", "Offset", "Position", "Origin", "ElementOrigin",
             "ImagePosition", "CenterOfRotation", "SequenceID")  # fmt: skip
_MATRICES = ("TransformMatrix", "Rotation", "Orientation", "ElementDirection")
_ONE_NUMBER = ("ElementMin", "ElementMax", "ElementToIntensityFunctionSlope", "ElementToIntensityFunctionOffset")
_WHOLE = {"HeaderSize": (-1, _INT32), "ElementNumberOfChannels": (1, MAX_CHANNELS), "ID": (-_INT32, _INT32),
          "ParentID": (-_INT32, _INT32), "ElementNBits": (0, 64), "FileFormatVersion": (0, 1),
          "CompressedDataSize": (0, 2**62)}  # fmt: skip
_FLAGS = ("BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "CompressedData")
_STRINGS = ("ObjectType", "ObjectSubType", "Comment", "AcquisitionDate", "Name", "DistanceUnits",
            "AnatomicalOrientation", "Modality", "ElementType", "ElementDataFile")  # fmt: skip
_KNOWN = {"NDims", *_PER_AXIS, *_MATRICES, *_ONE_NUMBER, *_WHOLE, *_FLAGS, *_STRINGS, "Color"}
_REQUIRED = ("NDims", "DimSize", "ElementType", "ElementDataFile")
_LOCAL = ("LOCAL", "Local", "local")  # MetaIO's words for "the data follows the header"
_NOUNS = {"ndims": "dimension", "dimsize": "size", "elementspacing": "spacing", "elementsize": "voxel size",
          "offset": "origin", "position": "origin", "origin": "origin", "elementorigin": "origin",
          "imageposition": "origin", "transformmatrix": "direction", "rotation": "direction",
          "orientation": "direction", "elementdirection": "direction", "elementtype": "voxel type",
          "elementnumberofchannels": "channel count", "elementdatafile": "data file", "headersize": "header size",
          "compresseddatasize": "compressed size", "binarydata": "flag", "binarydatabyteordermsb": "flag",
          "elementbyteordermsb": "flag", "compresseddata": "flag",
          # NRRD
          "dimension": "dimension", "sizes": "sizes", "type": "voxel type", "encoding": "encoding",
          "spacedirections": "space directions", "spaceorigin": "space origin", "datafile": "data file",
          "byteskip": "byte skip", "lineskip": "line skip"}  # fmt: skip


def check_metaimage(path: Path) -> None:
    """Every field MetaIO reads, checked (see the module's text); then the data part's size."""
    fields, header_end = _metaimage_fields(path)
    for key in _REQUIRED:
        if key not in fields:
            raise FileFormatError(f"{path}: not a readable image file (the header has no {key} line)")
    ndims = _whole(path, fields["NDims"], 1, MAX_DIMS)
    for field in fields.values():
        _check_meta_field(path, field, ndims, fields["NDims"])
    _check_meta_data(path, fields, header_end)


def _metaimage_fields(path: Path) -> tuple[dict[str, Field], int]:
    """The header's fields by key (MetaIO's keys are case-sensitive) and the offset where it ends: after
    the ``ElementDataFile`` line, where a ``.mha``'s data begins."""
    fields: dict[str, Field] = {}
    for number, text, offset in _lines(path, _head(path), "MetaImage"):
        if not text.strip():
            continue  # MetaIO skips blank lines
        found = re.search(r"[=:]", text)  # MetaIO's key ends at the first '=' or ':'
        if found is None or not text[: found.start()].strip():
            raise FileFormatError(f"{path}: header line {number} is not `key = value` ({_shown(text)})")
        key = text[: found.start()].strip()
        if len(key) > _MAX_KEY:
            raise FileFormatError(f"{path}: header line {number} has a key longer than {_MAX_KEY} characters")
        field = Field(number, key, text[found.end() :].lstrip(" \t=:").rstrip())  # MetaIO skips '=', ':', blanks
        _add(path, fields, key, field)
        if key == "ElementDataFile":
            return fields, offset
    return fields, -1  # no ElementDataFile: refused as a missing field


def _check_meta_field(path: Path, field: Field, ndims: int, ndims_field: Field) -> None:
    """One field MetaIO knows against what MetaIO can take (an unknown one is kept as a string)."""
    key = field.key
    if key not in _KNOWN:
        return
    if len(field.value) > _MAX_KNOWN_LINE - len(key):
        raise _bad(path, field, f"is longer than MetaIO reads ({_MAX_KNOWN_LINE} characters a line)")
    if not field.value:
        raise _bad(path, field, "has no value")
    if (key in _PER_AXIS or key in _MATRICES) and field.line < ndims_field.line:
        where = f"(line {field.line}) before NDims (line {ndims_field.line})"
        raise FileFormatError(f"{path}: the header gives {key} {where}; MetaIO reads NDims first")
    if key == "DimSize":
        _wholes(path, field, ndims, f"{ndims} positive whole numbers (one per axis; NDims = {ndims})")
    elif key in _PER_AXIS:
        values = _numbers(path, field, ndims, f"{ndims} numbers (one per axis; NDims = {ndims})")
        if key in ("ElementSpacing", "ElementSize") and min(values) <= 0:
            raise _bad(path, field, "is not positive")
    elif key in _MATRICES:
        _numbers(path, field, ndims * ndims, f"{ndims * ndims} numbers (a {ndims}×{ndims} matrix; NDims = {ndims})")
    elif key == "Color":
        _numbers(path, field, 4, "4 numbers")
    elif key in _ONE_NUMBER:
        _numbers(path, field, 1, "a number")
    elif key in _WHOLE:
        _whole(path, field, *_WHOLE[key])
    elif key in _FLAGS and field.value.lower() not in ("true", "false", "1", "0"):
        raise _bad(path, field, "is neither True nor False")
    elif key in _STRINGS and len(field.value) > _MAX_STRING:
        raise _bad(path, field, f"is longer than {_MAX_STRING} characters")
    elif key == "ElementType" and field.value not in META_TYPES:
        raise _bad(path, field, "is not one of MetaIO's number types (MET_UCHAR, MET_SHORT, MET_FLOAT ...)")


def _flag(fields: dict[str, Field], key: str, default: bool) -> bool:
    """A checked True/False field's value (MetaIO: the first letter ``T``, ``t`` or ``1`` is true)."""
    field = fields.get(key)
    return default if field is None else field.value[:1] in ("T", "t", "1")


def _check_meta_data(path: Path, fields: dict[str, Field], header_end: int) -> None:
    """The data file ``ElementDataFile`` names (one regular file, or ``LOCAL``: this one after the
    header) holds what the header claims (``HeaderSize`` bytes in, or the file's last bytes for -1)."""
    field = fields["ElementDataFile"]
    if field.value in _LOCAL:
        data, start = path, header_end
    elif field.value.startswith("LIST") or "%" in field.value:
        raise _bad(path, field, "names a list or a numbered pattern of files; volcam reads one data file (or LOCAL)")
    else:
        data, start = _data_file(path, field, field.value), 0
    channels = int(fields["ElementNumberOfChannels"].value) if "ElementNumberOfChannels" in fields else 1
    sizes = [int(size) for size in fields["DimSize"].value.split()]
    _check_memory(path, sizes, channels)
    count = math.prod(sizes) * channels
    nbytes = count * META_TYPES[fields["ElementType"].value]
    header_size = int(fields["HeaderSize"].value) if "HeaderSize" in fields else 0
    binary = _flag(fields, "BinaryData", True)
    if header_size == -1:  # the data is the file's last bytes
        check_fits_file(path, data, nbytes)
        return
    start = header_size or start
    if binary and _flag(fields, "CompressedData", False):
        stored = int(fields["CompressedDataSize"].value) if "CompressedDataSize" in fields else 0
        _check_compressed(path, data, nbytes, start, stored)
    else:  # text data: at least a digit and a separator a value
        check_fits_file(path, data, nbytes if binary else 2 * count - 1, start)


# -- NRRD ---------------------------------------------------------------------------------------------

# teem's type names (nrrdType, any case) and their sizes; "block" is no number volcam reads
NRRD_TYPES = {name: size for names, size in (
    (("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    (("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
      "unsigned short int", "uint16", "uint16_t"), 2),
    (("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4),
    (("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
      "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"), 8),
) for name in names}  # fmt: skip
_RAW, _TEXT, _HEX, _GZIP = ("raw",), ("txt", "text", "ascii"), ("hex",), ("gz", "gzip")
NRRD_ENCODINGS = (*_RAW, *_TEXT, *_HEX, *_GZIP)  # and bz2/bzip2, which SimpleITK's NrrdIO lacks
_NRRD_REQUIRED = ("dimension", "type", "encoding", "sizes")
_MAGIC = re.compile(r"NRRD000[1-5]")


def check_nrrd(path: Path) -> None:
    """The fields volcam and teem rely on (dimension, sizes, type, encoding, space directions, the data
    file, byte and line skip), checked; then the data part's size."""
    fields, header_end = _nrrd_fields(path)
    for name in _NRRD_REQUIRED:
        if name not in fields:
            raise FileFormatError(f"{path}: not a readable image file (the header has no {name} field)")
    dimension = _whole(path, fields["dimension"], 1, MAX_DIMS)
    _wholes(path, fields["sizes"], dimension, f"{dimension} positive whole numbers (one per axis)", 1, 2**62)
    if fields["type"].value.lower() not in NRRD_TYPES:
        raise _bad(path, fields["type"], "is not a NRRD number type (uchar, short, float ...)")
    if fields["encoding"].value.lower() not in NRRD_ENCODINGS:
        raise _bad(path, fields["encoding"], f"is not an encoding volcam reads ({', '.join(NRRD_ENCODINGS)})")
    if "spacedirections" in fields:
        _check_directions(path, fields["spacedirections"], dimension)
    _check_nrrd_data(path, fields, header_end)


def _nrrd_fields(path: Path) -> tuple[dict[str, Field], int]:
    """The fields by teem's name (any case, without spaces: ``datafile``) and the offset after the
    blank line that ends the header (the end of a detached ``.nhdr``); key/value pairs (``k:=v``)
    and comments are left out."""
    fields: dict[str, Field] = {}
    lines = _lines(path, _head(path), "NRRD")
    first = next(lines, None)
    if first is None or not _MAGIC.fullmatch(first[1].strip()):
        raise FileFormatError(f"{path}: not a NRRD file (it does not start with NRRD0001 ... NRRD0005)")
    end = first[2]
    for number, text, offset in lines:
        end = offset
        if not text:  # teem: the header ends at an empty line (one of spaces is a field it cannot parse)
            return fields, offset
        if text.startswith("#") or ":=" in text:
            continue
        key, colon, value = text.partition(":")
        if not colon or not key.strip():
            raise FileFormatError(f"{path}: header line {number} is not `field: value` ({_shown(text)})")
        name = key.strip().lower().replace(" ", "").replace("centers", "centerings")
        _add(path, fields, name, Field(number, key.strip(), value.strip()))
    return fields, end


def _check_directions(path: Path, field: Field, dimension: int) -> None:
    """``space directions``: one ``none`` or ``(x,y,z)`` of finite numbers per axis."""
    vectors = re.findall(r"\([^()]*\)|none", field.value)
    if len(vectors) != dimension or re.sub(r"\([^()]*\)|none|\s", "", field.value):
        raise _bad(path, field, f"is not {dimension} vectors or none (one per axis)")
    lengths = set()
    for vector in vectors:
        if vector != "none":
            words = vector.strip("()").split(",")
            lengths.add(len(words))
            _numbers(path, Field(field.line, field.key, " ".join(words)), len(words), "vectors of numbers")
    if len(lengths) > 1:
        raise _bad(path, field, "has vectors of different lengths")
    if max(lengths, default=1) > MAX_DIMS:
        raise _bad(path, field, f"has vectors of more than {MAX_DIMS} numbers")


def _check_nrrd_data(path: Path, fields: dict[str, Field], header_end: int) -> None:
    """One regular data file (``data file``, or this one after the header) that holds what the header
    claims after ``byte skip`` (-1: the file's last bytes)."""
    skip = _whole(path, fields["byteskip"], -1, 2**62) if "byteskip" in fields else 0
    if "lineskip" in fields:
        _whole(path, fields["lineskip"], 0, _INT32)
    field = fields.get("datafile")
    if field is None:
        data, start = path, header_end
    elif field.value.startswith("LIST") or "%" in field.value:
        raise _bad(path, field, "names a list or a numbered pattern of files; volcam reads one data file")
    else:
        data, start = _data_file(path, field, field.value), 0
    encoding = fields["encoding"].value.lower()
    sizes = [int(size) for size in fields["sizes"].value.split()]
    _check_memory(path, sizes, 1)
    count = math.prod(sizes)
    nbytes = count * NRRD_TYPES[fields["type"].value.lower()]
    if encoding in _GZIP:
        _check_compressed(path, data, nbytes, start + max(skip, 0))
    elif skip == -1:
        check_fits_file(path, data, nbytes)
    else:
        needed = {"raw": nbytes, "hex": 2 * nbytes}.get(encoding, 2 * count - 1)
        check_fits_file(path, data, needed, start + skip)
