"""Inputs made from the seeds: structure-aware mutations of each format, and plain byte mutations.

Every generator draws from a ``random.Random`` it is given, so the same seed number gives the same
input (the campaign's fixed seeds), and Hypothesis can hand in its own (``st.randoms()``: drawn,
replayed and shrunk by Hypothesis). Only the methods both provide are used (``random``,
``randrange``, ``randint``, ``choice``, ``getrandbits``).

What they change, by format:

- DICOM: any element, top level or inside a sequence (a value of its VR or of another, deleted, its
  VR changed), the fields the readers trust (Rows, Columns, Bits*, PixelRepresentation,
  SamplesPerPixel, PhotometricInterpretation, NumberOfFrames, PlanarConfiguration, rescale, geometry,
  spacing, frame timing, Modality, SOP class, functional groups), pixel data longer or shorter, the
  transfer syntax named in the file meta, nested sequences; a series: one slice changed, a slice
  dropped, doubled or moved;
- NIfTI-1/-2, NIfTI pairs and Analyze: any header field (every element of ``dim``, ``pixdim``,
  ``srow_*``; datatype, bitpix, vox_offset, scaling, q/sform codes, quaternions, magic, sizeof_hdr),
  extensions, the data cut or grown; a ``.gz`` is compressed again after the change;
- NRRD/NHDR/MHA/MHD: header lines (values, fields dropped, doubled, added), the data part;
- MP4/AVI: box and chunk sizes, the words of ``mvhd``/``tkhd``/``stts``/``stsz``/``avih``/``strh``;
- cards and bundles (JSON): any node replaced, dropped or added to; networks, transforms, labels,
  paths; the weights file's bytes;
- manifests (CSV): cells (paths, ids, labels), columns, rows, quoting, encoding.

And on every format, now and then: bits flipped, bytes set to boundary values, runs deleted,
doubled or inserted, the file cut.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import math
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from random import Random
from typing import Any

from fuzz.seeds import Seed

INTS = (0, 1, -1, 2, 3, 4, 7, 8, 12, 15, 16, 17, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095,
        4096, 32767, 32768, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, -(2**31), -(2**63),
        10**6, 10**9)  # fmt: skip
FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-7, 1e-30, 1e30, 1e38, 1e308, -1e308, math.inf, -math.inf, math.nan)
STRINGS = ("", " ", "\\", "a\\b", "0\\0", "1\\1\\1", "0\\0\\0\\0\\0\\0", "-1", "0", "nan", "inf", "-inf", "1e308",
           "1e-308", "abc", "é\u2028", "\x00", "\n", "x" * 300, "9" * 40, "1.2.3", "../x", "/dev/zero", "%s%n",
           "1\\0\\0\\0\\1\\0", "1\\2")  # fmt: skip
BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def pick(rng: Random, values: Any) -> Any:
    """One of ``values``, as a copy: a mutation that changes what it picked (appends to a picked ``[]``)
    must not change the table every later input picks from (the lists grew without end, then held
    themselves: a campaign's later inputs depended on its earlier ones, and JSON refused a cycle)."""
    return copy.deepcopy(values[rng.randrange(len(values))])


def random_bytes(rng: Random, n: int) -> bytes:
    """``n`` random bytes from one 64-bit draw (a Hypothesis random stays small to replay and shrink)."""
    return Random(rng.getrandbits(64)).randbytes(n)


def interesting_number(rng: Random, integer: bool) -> Any:
    if integer:
        return pick(rng, INTS) if rng.random() < 0.8 else rng.randint(-1000, 100000)
    return pick(rng, FLOATS) if rng.random() < 0.8 else rng.random() * pick(rng, (1.0, 10.0, 1000.0, -50.0))


# -- bytes ------------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: Random, header: int = 1024) -> bytes:
    """One to four byte-level changes, most of them in the first ``header`` bytes (where headers are)."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buffer:
            buffer += random_bytes(rng, rng.randint(1, 64))
            continue
        size = len(buffer)
        position = rng.randrange(min(size, header)) if rng.random() < 0.7 else rng.randrange(size)
        op = rng.randrange(8)
        if op == 0:  # a bit flipped
            buffer[position] ^= 1 << rng.randrange(8)
        elif op == 1:  # a boundary byte
            buffer[position] = pick(rng, BYTES)
        elif op == 2:  # a boundary 16/32-bit word, either byte order
            width = pick(rng, (2, 4))
            value = pick(rng, INTS) & ((1 << (8 * width)) - 1)
            buffer[position : position + width] = value.to_bytes(width, pick(rng, ("little", "big")))
        elif op == 3:  # a run deleted
            del buffer[position : position + rng.randint(1, 64)]
        elif op == 4:  # a run doubled
            run = buffer[position : position + rng.randint(1, 256)]
            buffer[position:position] = run
        elif op == 5:  # random bytes inserted
            buffer[position:position] = random_bytes(rng, rng.randint(1, 32))
        elif op == 6:  # cut
            del buffer[rng.randrange(size) :]
        else:  # a run overwritten with random bytes
            n = rng.randint(1, 16)
            buffer[position : position + n] = random_bytes(rng, n)
    return bytes(buffer)


# -- DICOM ------------------------------------------------------------------------------------------

DICOM_FIELDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "NumberOfFrames", "PlanarConfiguration", "RescaleSlope", "RescaleIntercept",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate", "Modality", "SOPClassUID",
    "GridFrameOffsetVector", "FrameIncrementPointer", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
    "InstanceNumber", "SliceLocation", "WindowCenter", "WindowWidth", "RescaleType", "DoseGridScaling",
    "SequenceOfUltrasoundRegions", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
    "PixelData", "FloatPixelData", "RedPaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "LargestImagePixelValue", "PatientName", "PatientID", "StudyInstanceUID", "ImageType", "NumberOfSlices",
)  # fmt: skip
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "YBR_RCT",
               "YBR_ICT", "ARGB", "", "monochrome2", "MONOCHROME2\\RGB")  # fmt: skip
MODALITIES = ("CT", "MR", "US", "PT", "NM", "RTDOSE", "OT", "SC", "", "XA", "SEG", "x" * 20)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.3.4", "",
)  # fmt: skip
SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.3.1",
               "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.4",
               "1.2.840.10008.5.1.4.1.1.66.4", "9.9")  # fmt: skip
NUMERIC_VRS = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "UV": 8, "SV": 8}


def _dicom_value(vr: str, rng: Random, keyword: str = "") -> Any:
    """A value for an element of ``vr``: in range or not, one value or several, sometimes another type."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if keyword == "PhotometricInterpretation" and rng.random() < 0.8:
        return pick(rng, PHOTOMETRIC)
    if keyword == "Modality" and rng.random() < 0.8:
        return pick(rng, MODALITIES)
    if keyword == "SOPClassUID" and rng.random() < 0.8:
        return pick(rng, SOP_CLASSES)
    several = rng.random() < 0.2
    if vr in ("US", "UL", "UV"):
        bits = 8 * NUMERIC_VRS[vr]
        values = [pick(rng, INTS) % (1 << bits) for _ in range(rng.randint(2, 4) if several else 1)]
        return values if several else values[0]
    if vr in ("SS", "SL", "SV"):
        bits = 8 * NUMERIC_VRS[vr]
        values = [((pick(rng, INTS) + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1)) for _ in range(3)]
        return values if several else values[0]
    if vr in ("FL", "FD"):
        values = [interesting_number(rng, False) for _ in range(rng.randint(1, 6))]
        return values if several else values[0]
    if vr == "IS":
        return pick(rng, (str(pick(rng, INTS)), "", "-1", "0", "abc", "1.5", "1\\2", "2147483648", "  7 "))
    if vr == "DS":
        if several or rng.random() < 0.3:
            n = pick(rng, (0, 1, 2, 3, 5, 6, 7, 12))
            return "\\".join(pick(rng, ("0", "1", "-1", "nan", "inf", "1e308", "0.5", "", "x")) for _ in range(n))
        return pick(rng, ("0", "-1", "1e308", "-1e308", "nan", "inf", "1e-320", "", "abc", "3", "0.001"))
    if vr == "SQ":
        depth = pick(rng, (0, 1, 2, 30))
        item: Any = Dataset()
        for _ in range(depth):
            inner = Dataset()
            inner.ReferencedFrameNumber = rng.randint(0, 5)
            inner.PlanePositionSequence = Sequence([item])
            item = inner
        return Sequence([item] * pick(rng, (0, 1, 2, 50)))
    if vr in ("OB", "OW", "OF", "OD", "OL", "UN", "OV"):
        return random_bytes(rng, pick(rng, (0, 1, 2, 3, 4, 7, 64, 1000)))
    if vr == "UI":
        return pick(rng, ("", "1.2.3", "1" * 70, "a.b", "1.2.840.10008.1.2", "0.0.0"))
    return pick(rng, STRINGS)


def _elements(dataset: Any) -> list[tuple[Any, Any]]:
    """(container, tag) of every element, inside sequences too (not the pixel data's fragments)."""
    found = []
    for element in dataset:
        found.append((dataset, element.tag))
        if element.VR == "SQ" and element.value:
            for item in element.value[:3]:
                found += _elements(item)
    return found


def _set(container: Any, keyword_or_tag: Any, vr: str | None, value: Any) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement

    tag = tag_for_keyword(keyword_or_tag) if isinstance(keyword_or_tag, str) else keyword_or_tag
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    container[tag] = DataElement(tag, vr.split(" or ")[0], value)


def mutate_dicom(path: Path, rng: Random) -> None:
    """One to three structural changes to the DICOM file at ``path``, written back (bytes on failure)."""
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    original = path.read_bytes()
    try:
        dataset = pydicom.dcmread(io.BytesIO(original), force=True)
        for _ in range(rng.randint(1, 3)):
            _dicom_change(dataset, rng)
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=False)
        data = out.getvalue()
    except Exception:  # a change pydicom cannot write: the bytes instead
        data = mutate_bytes(original, rng, header=4096)
    path.write_bytes(data)


def _dicom_change(dataset: Any, rng: Random) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    op = rng.randrange(10)
    if op <= 3:  # a field the readers trust
        keyword = pick(rng, DICOM_FIELDS)
        if rng.random() < 0.15 and keyword in dataset:
            del dataset[keyword]
            return
        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag).split(" or ")[0]
        if keyword in ("PixelData", "FloatPixelData") and "PixelData" in dataset and rng.random() < 0.7:
            data = dataset.PixelData
            cut = rng.randrange(len(data) + 1)
            dataset.PixelData = data[:cut] if rng.random() < 0.5 else data + random_bytes(rng, rng.randint(1, 4096))
            return
        _set(dataset, keyword, vr, _dicom_value(vr, rng, keyword))
    elif op <= 5:  # any element, anywhere
        elements = _elements(dataset)
        if not elements:
            return
        container, tag = pick(rng, elements)
        element = container[tag]
        if rng.random() < 0.25:
            del container[tag]
        elif rng.random() < 0.3:  # a value of another VR
            vr = pick(rng, ("US", "SS", "UL", "FD", "IS", "DS", "CS", "LO", "UI", "OB", "SQ", "UN", "AT"))
            _set(container, tag, vr, _dicom_value(vr, rng))
        else:
            _set(container, tag, element.VR, _dicom_value(element.VR, rng, element.keyword))
    elif op == 6:  # the transfer syntax named, the data left as it is
        meta = getattr(dataset, "file_meta", None)
        if meta is not None:
            meta.TransferSyntaxUID = pick(rng, TRANSFER_SYNTAXES)
    elif op == 7:  # frames: a count, functional groups of another length
        _set(dataset, "NumberOfFrames", "IS", pick(rng, ("0", "1", "2", "3", "-1", "100000", "2147483647", "x")))
        if rng.random() < 0.5:
            _set(dataset, "PerFrameFunctionalGroupsSequence", "SQ", _dicom_value("SQ", rng))
    elif op == 8:  # geometry of the slice
        keyword = pick(rng, ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"))
        _set(dataset, keyword, "DS", _dicom_value("DS", rng))
    else:  # a private element or an unknown tag, of any VR
        group = pick(rng, (0x0009, 0x0011, 0x7FE1, 0x0029, 0x6000))
        vr = pick(rng, ("OB", "UN", "SQ", "LO", "US"))
        _set(dataset, (group << 16) | rng.randrange(0x10, 0x1100), vr, _dicom_value(vr, rng))


def mutate_series(folder: Path, files: tuple[str, ...], rng: Random) -> None:
    """A series: one slice changed (structure or bytes), dropped, doubled under a new name, or mixed."""
    present = [name for name in files if (folder / name).is_file()]  # an earlier round may have dropped one
    if not present:
        return
    op = rng.randrange(6)
    chosen = folder / pick(rng, present)
    if op <= 2:
        mutate_dicom(chosen, rng)
    elif op == 3:
        chosen.write_bytes(mutate_bytes(chosen.read_bytes(), rng, header=4096))
    elif op == 4:
        chosen.unlink()
    else:
        shutil.copy(chosen, chosen.with_name("copy-" + chosen.name))
        mutate_dicom(chosen.with_name("copy-" + chosen.name), rng)


# -- NIfTI / Analyze --------------------------------------------------------------------------------


def _header_class(raw: bytes) -> Any:
    import nibabel as nib

    size = struct.unpack("<i", raw[:4])[0] if len(raw) >= 4 else 0
    if size == 540 or raw[:4] == struct.pack(">i", 540):
        return nib.Nifti2Header, 540
    if raw[344:347] in (b"n+1", b"ni1"):
        return nib.Nifti1Header, 348
    return nib.AnalyzeHeader, 348


def mutate_nifti_header(raw: bytes, rng: Random) -> bytes:
    """Change one to three fields of the NIfTI/Analyze header at the start of ``raw``."""
    import numpy as np

    klass, size = _header_class(raw)
    if len(raw) < size:
        return mutate_bytes(raw, rng)
    header = klass.from_fileobj(io.BytesIO(raw[:size]), check=False)
    fields = header.structarr
    names = fields.dtype.names
    for _ in range(rng.randint(1, 3)):
        name = pick(rng, ("dim", "dim", "datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter",
                          "qform_code", "sform_code", "srow_x", "quatern_b", "magic", "sizeof_hdr")
                    if rng.random() < 0.7 else names)  # fmt: skip
        if name not in names:
            continue
        kind = fields.dtype[name].base.kind
        shape = fields[name].shape
        if kind in "iu":
            if name == "datatype" and rng.random() < 0.7:
                value: Any = pick(rng, (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048,
                                        2304, 255, 999, -1))  # fmt: skip
            elif name == "dim" and rng.random() < 0.5:
                value = pick(rng, (-1, 0, 1, 2, 3, 4, 5, 7, 8, 9))
            else:
                value = pick(rng, INTS) if rng.random() < 0.85 else rng.randint(-5, 50)
            info = np.iinfo(fields.dtype[name].base)
            value = ((value - info.min) % (info.max - info.min + 1)) + info.min  # wraps as C would
        elif kind == "f":
            value = interesting_number(rng, False)
        else:
            value = pick(rng, (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"", b"\xff\xff\xff\xff", b"nope"))
        with np.errstate(all="ignore"):
            if shape:
                index = rng.randrange(shape[0])
                fields[name][index] = value
            else:
                fields[name] = value
    return fields.tobytes() + raw[size:]


def mutate_nifti(folder: Path, seed: Seed, rng: Random) -> None:
    main = folder / seed.main
    op = rng.randrange(10)
    if seed.main.endswith(".hdr") and op >= 7:  # the image file of a pair
        image = folder / "a.img"
        data = image.read_bytes()
        image.write_bytes(data[: rng.randrange(len(data) + 1)] if op == 7 else mutate_bytes(data, rng))
        return
    stored = main.read_bytes()
    zipped = stored[:2] == b"\x1f\x8b"
    if zipped and op == 9:
        main.write_bytes(mutate_bytes(stored, rng))  # the gzip stream itself
        return
    try:
        raw = gzip.decompress(stored) if zipped else stored
    except (OSError, EOFError, zlib.error):  # a stream an earlier round broke: break it further
        main.write_bytes(mutate_bytes(stored, rng))
        return
    if op <= 5:
        raw = mutate_nifti_header(raw, rng)
    elif op == 6:  # an extension after the header (NIfTI-1): its size field
        _, size = _header_class(raw)
        esize = pick(rng, (0, 8, 16, 17, 1000, 2**31 - 1, -16))
        extension = b"\x01\x00\x00\x00" + struct.pack("<ii", esize, rng.randrange(50)) + random_bytes(rng, 8)
        raw = raw[:size] + extension + raw[size + 4 :]
    elif op == 7:  # data cut or grown
        raw = raw[: rng.randrange(len(raw) + 1)] if rng.random() < 0.6 else raw + random_bytes(rng, 512)
    else:
        raw = mutate_bytes(raw, rng, header=400)
    main.write_bytes(gzip.compress(raw, compresslevel=1) if zipped else raw)


# -- NRRD / MetaImage -------------------------------------------------------------------------------

ITK_VALUES = ("0", "1", "-1", "2", "3", "4", "5", "1000000", "2147483648", "99999999999", "nan", "inf", "1e308",
              "raw", "gzip", "gz", "bzip2", "ascii", "text", "hex", "big", "little", "float", "double", "uchar",
              "short", "int64", "block", "MET_FLOAT", "MET_UCHAR", "MET_SHORT_ARRAY", "MET_OTHER", "True", "False",
              "(1,0,0) (0,1,0) (0,0,1)", "(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "none",
              "1 1", "1 1 1 1", "8 8 6", "0 0 0", "-8 8 6", "65536 65536 65536", "LOCAL", "LIST", "a.raw",
              "missing.raw", "../a.raw", "/dev/zero", "%d 1 3 1", "", "left-posterior-superior", "3D-right-handed",
              "RAI", "???")  # fmt: skip


def _split_itk(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header lines and what follows them (NRRD: up to the blank line; MetaImage: up to ElementDataFile)."""
    if raw.startswith(b"NRRD"):
        end = raw.find(b"\n\n")
        end = len(raw) if end < 0 else end + 2
        return raw[:end].rstrip(b"\n").split(b"\n"), raw[end:]
    end = raw.find(b"ElementDataFile")
    end = raw.find(b"\n", end) + 1 if end >= 0 else len(raw)
    return raw[:end].rstrip(b"\n").split(b"\n"), raw[end:]


def mutate_itk(folder: Path, seed: Seed, rng: Random) -> None:
    main = folder / seed.main
    raw = main.read_bytes()
    op = rng.randrange(10)
    data_files = [name for name in seed.mutable if name != seed.main]
    if op >= 8 and data_files:  # the detached data file
        target = folder / pick(rng, data_files)
        data = target.read_bytes()
        target.write_bytes(data[: rng.randrange(len(data) + 1)] if op == 8 else mutate_bytes(data, rng))
        return
    if op == 9:
        main.write_bytes(mutate_bytes(raw, rng))
        return
    lines, rest = _split_itk(raw)
    nrrd = raw.startswith(b"NRRD")
    separator = b": " if nrrd else b" = "
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        index = rng.randrange(1 if nrrd else 0, len(lines)) if len(lines) > 1 else 0
        choice = rng.randrange(6)
        if choice <= 2 and separator in lines[index]:  # a value
            key = lines[index].split(separator, 1)[0]
            lines[index] = key + separator + pick(rng, ITK_VALUES).encode()
        elif choice == 3:
            del lines[index]
        elif choice == 4:
            lines.insert(index, lines[index])
        else:
            keys = ("sizes", "dimension", "type", "encoding", "space directions", "kinds", "endian", "data file",
                    "byte skip", "line skip", "NDims", "DimSize", "ElementType", "ElementSpacing",
                    "ElementNumberOfChannels", "CompressedData", "CompressedDataSize", "HeaderSize",
                    "BinaryDataByteOrderMSB", "TransformMatrix", "Offset")  # fmt: skip
            lines.insert(index, pick(rng, keys).encode() + separator + pick(rng, ITK_VALUES).encode())
    if op == 7:
        rest = rest[: rng.randrange(len(rest) + 1)] if rng.random() < 0.6 else rest + random_bytes(rng, 300)
    main.write_bytes(b"\n".join(lines) + (b"\n\n" if nrrd else b"\n") + rest)


# -- video ------------------------------------------------------------------------------------------

BOXES = (b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd", b"hdlr", b"minf", b"stbl", b"stsd",
         b"stts", b"stsc", b"stsz", b"stco", b"co64", b"mdat", b"edts", b"elst", b"mp4v", b"esds",
         b"RIFF", b"LIST", b"hdrl", b"avih", b"strl", b"strh", b"strf", b"movi", b"idx1", b"00dc", b"MJPG")  # fmt: skip


def mutate_video(path: Path, rng: Random) -> None:
    """A box or chunk's size, or a word inside it (frame counts, sizes, durations, offsets); or bytes."""
    data = bytearray(path.read_bytes())
    found = [(tag, i) for tag in BOXES for i in _find_all(data, tag)]
    if not found or rng.random() < 0.3:
        path.write_bytes(mutate_bytes(bytes(data), rng, header=len(data)))
        return
    for _ in range(rng.randint(1, 3)):
        tag, where = pick(rng, found)
        riff = tag in (b"RIFF", b"LIST", b"avih", b"strh", b"strf", b"idx1", b"00dc", b"movi", b"hdrl", b"strl")
        size = where + 4 if riff else where - 4  # a box's size: before its tag in MP4, after it in RIFF
        at = size if rng.random() < 0.4 else where + 4 + 4 * rng.randrange(1, 12)
        if 0 <= at <= len(data) - 4:
            value = pick(rng, INTS) & 0xFFFFFFFF
            data[at : at + 4] = value.to_bytes(4, "little" if riff else "big")
    path.write_bytes(bytes(data))


def _find_all(data: bytearray, tag: bytes) -> list[int]:
    found, start = [], 0
    while (at := data.find(tag, start)) >= 0 and len(found) < 50:
        found.append(at)
        start = at + 1
    return found


# -- JSON (cards, bundles) --------------------------------------------------------------------------

JSON_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 3, 1e308, -1e308, 2**63, 10**30, 0.5, "", "x", "é", "\u0000", "../../x.pt",
    "/dev/zero", "/etc/passwd", "http://127.0.0.1:9/model.pt", [], {}, [1], [[]], {"": None}, "$import os",
    "@network_def", "%configs/x.json#a", "UNet", "DenseNet121", "ViT", "os.system", "builtins.eval",
    "monai.networks.nets.ResNet", "Lambda", "LoadImage", "Spacing", "ScaleIntensityRange", "Resize", "layer4",
    "layer2.0.conv1", "nonexistent", ["normal"], ["normal", "covid", "third"], ["a", "a"], "volume", "clip",
)  # fmt: skip


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if len(here) > 40:
        return found
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:20]):
            found += _paths(value, (*here, index))
    return found


DEEP = "<deeply nested>"  # written as 3000 nested lists: deeper than json.dumps goes


def _nested(rng: Random) -> Any:
    depth = pick(rng, (2, 10, 60, 3000))
    if depth > 100:
        return DEEP
    node: Any = pick(rng, JSON_VALUES)
    for _ in range(depth):
        node = [node] if rng.random() < 0.5 else {"a": node}
    return node


def mutate_json_value(document: Any, rng: Random) -> Any:
    """One to three changes to a JSON document: a node replaced, dropped, added to, a number changed."""
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        where = pick(rng, _paths(document))
        if not where:
            if rng.random() < 0.1:
                document = pick(rng, JSON_VALUES)
            continue
        parent = document
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        op = rng.randrange(7)
        if op <= 2:
            parent[key] = pick(rng, JSON_VALUES)
        elif op == 3:
            del parent[key]
        elif op == 4 and isinstance(parent[key], int | float) and not isinstance(parent[key], bool):
            parent[key] = interesting_number(rng, isinstance(parent[key], int))
        elif op == 5 and isinstance(parent[key], dict):
            parent[key][pick(rng, ("extra", "args", "name", "_target_", "weights", "layer", "labels"))] = pick(
                rng, JSON_VALUES
            )
        elif op == 5 and isinstance(parent[key], list):
            parent[key].append(pick(rng, JSON_VALUES))
        else:
            parent[key] = _nested(rng) if rng.random() < 0.3 else pick(rng, JSON_VALUES)
    return document


def mutate_json_file(path: Path, rng: Random) -> None:
    text = path.read_bytes()
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # an earlier round broke it
        document = None
    if document is None or rng.random() < 0.15:  # the text itself: a cut, a stray byte
        path.write_bytes(mutate_bytes(text, rng, header=len(text)))
        return
    written = json.dumps(mutate_json_value(document, rng), indent=1, allow_nan=True)
    path.write_text(written.replace(json.dumps(DEEP), "[" * 3000 + "1" + "]" * 3000))


def mutate_model(folder: Path, seed: Seed, rng: Random) -> None:
    """A card or a bundle: its JSON files (mostly), or the weights file's bytes."""
    jsons = [name for name in seed.mutable if name.endswith(".json")]
    others = [name for name in seed.mutable if not name.endswith(".json")]
    if others and rng.random() < 0.15:
        target = folder / pick(rng, others)
        target.write_bytes(mutate_bytes(target.read_bytes(), rng, header=target.stat().st_size))
        return
    mutate_json_file(folder / pick(rng, jsons), rng)


# -- manifests --------------------------------------------------------------------------------------

CELLS = ("", " ", "..", ".", "/", "/dev/null", "/dev/zero", "scans", "scans/", "scans/s0.nii.gz", "scans/missing.nii",
         "scans/s0_mask.nii.gz", "../manifest/scans/s1.nii.gz", "http://127.0.0.1:9/dicom-web/studies/1.2.3",
         "https://127.0.0.1:9/x", "case0", "case/0", "../case", "CON", "a" * 300, "é", "1", "-1", "99", "nan",
         "covid", "normal", "results.csv", "cohort.json", ".hidden", "x\ny", '"', "=cmd|' /C calc'!A0")  # fmt: skip


def mutate_manifest(path: Path, rng: Random) -> None:
    raw = path.read_bytes()
    try:
        rows = list(csv.reader(io.StringIO(raw.decode())))
    except (UnicodeDecodeError, csv.Error):  # an earlier round broke it
        rows = []
    op = rng.randrange(10)
    if op == 9 or not rows:
        path.write_bytes(mutate_bytes(raw, rng, header=len(raw)))
        return
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(7)
        row = rng.randrange(len(rows))
        if choice <= 2 and rows[row]:
            rows[row][rng.randrange(len(rows[row]))] = pick(rng, CELLS)
        elif choice == 3:
            rows.insert(row, list(rows[row]))
        elif choice == 4 and len(rows) > 1:
            del rows[row]
        elif choice == 5:
            column = rng.randrange(max(1, len(rows[0])))
            for one in rows:
                if column < len(one):
                    del one[column]
        else:
            rows[row].append(pick(rng, CELLS))
    out = io.StringIO()
    csv.writer(out, delimiter=pick(rng, (",", ",", ",", ";", "\t"))).writerows(rows)
    written = out.getvalue()
    if rng.random() < 0.1:
        written = "\ufeff" + written
    path.write_text(written)


# -- one input --------------------------------------------------------------------------------------

MUTATORS: dict[str, Callable[[Path, Seed, Random], None]] = {
    "dicom": lambda folder, seed, rng: (
        mutate_dicom(folder / seed.main, rng)
        if rng.random() < 0.75
        else (folder / seed.main).write_bytes(mutate_bytes((folder / seed.main).read_bytes(), rng, header=4096))
    ),
    "dicom-folder": lambda folder, seed, rng: mutate_series(folder, seed.mutable, rng),
    "nifti": mutate_nifti,
    "itk-text": mutate_itk,
    "video": lambda folder, seed, rng: mutate_video(folder / seed.main, rng),
    "card": mutate_model,
    "bundle": mutate_model,
    "manifest": lambda folder, seed, rng: mutate_manifest(folder / seed.main, rng),
}


def make_input(seed: Seed, rng: Random, folder: Path) -> Path:
    """A copy of ``seed``'s folder at ``folder`` with one to two rounds of its kind's mutations; the
    input's path (``folder / seed.main``)."""
    shutil.copytree(seed.folder, folder)
    for _ in range(rng.randint(1, 2)):
        MUTATORS[seed.kind](folder, seed, rng)
    return folder / seed.main
