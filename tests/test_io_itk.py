"""The ITK formats (.mha/.mhd/.nrrd/.nhdr): files SimpleITK wrote load as SimpleITK reads them, and a
malformed header is one line naming the file and the field before SimpleITK sees it.

The faults are the classes the fuzz campaign found (issue 27: MetaIO crashed on ``NDims = 1e308``
and hung on ``NDims = 65536 65536 65536``) and their neighbours: each field MetaIO or teem reads
with the wrong count of numbers, numbers that are not finite, unknown types, flags that are not
True/False, a field twice, a line that is not text, data files that are lists, patterns, FIFOs or
missing, and data smaller than the header claims. They are checked with ``check_itk_header``, which
runs no C++: a fault the check missed fails its test instead of crashing pytest. The inputs the
campaign kept run in a child process in ``tests/fuzz/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import volcam
from volcam.errors import FileFormatError
from volcam.io.itk_header import MAX_HEADER_BYTES, check_itk_header

sitk = pytest.importorskip("SimpleITK")


def volume(dtype: type = np.int16, channels: int = 1, shape: tuple[int, ...] = (6, 8, 8)) -> object:
    """A small SimpleITK image with values that tell voxels apart, spacing, origin and a rotation."""
    values = np.arange(np.prod(shape) * channels).reshape(*shape, channels) % 251
    image = sitk.GetImageFromArray(values.astype(dtype), isVector=channels > 1)
    if channels == 1:
        image = sitk.GetImageFromArray(values[..., 0].astype(dtype))
    dim = len(shape)
    image.SetSpacing([0.7, 0.8, 2.5][:dim])
    image.SetOrigin([-5.0, 3.0, 12.0][:dim])
    if dim == 3:
        image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    return image


def written(tmp_path: Path, name: str, image: object = None, compress: bool = False) -> Path:
    path = tmp_path / name
    sitk.WriteImage(volume() if image is None else image, os.fspath(path), compress)
    return path


def sitk_array(path: Path) -> np.ndarray:
    """SimpleITK's own reading as volcam's (C, X, Y, Z) float32."""
    image = sitk.ReadImage(os.fspath(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() == 1:
        array = array[..., None]
    if image.GetDimension() == 2:
        array = array[None]
    return array.transpose(3, 2, 1, 0)


def refused(path: Path) -> str:
    """``check_itk_header(path)`` must refuse in one line starting with the path; returns it."""
    with pytest.raises(FileFormatError) as caught:
        check_itk_header(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


# -- files SimpleITK wrote: unchanged -------------------------------------------------------------------


VALID = {
    "a.mha": {},
    "a.mhd": {},
    "a.nrrd": {},
    "a.nhdr": {},
    "compressed.mha": {"compress": True},
    "compressed.nrrd": {"compress": True},
    "two-channels.mha": {"image": ("int16", 2)},
    "two-channels.nrrd": {"image": ("int16", 2)},
    "rgb.mha": {"image": ("uint8", 3)},
    "float64.nhdr": {"image": ("float64", 1)},
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_file_simpleitk_wrote_loads_as_simpleitk_reads_it(tmp_path, name: str) -> None:
    options = dict(VALID[name])
    dtype, channels = options.pop("image", ("int16", 1))
    path = written(tmp_path, name, volume(np.dtype(dtype).type, channels), **options)
    check_itk_header(path)
    loaded = volcam.load(path)
    assert tuple(loaded.shape) == (channels, 8, 8, 6)
    np.testing.assert_array_equal(loaded.numpy(), sitk_array(path))


def test_a_2d_image_and_metadata_with_accents_load(tmp_path) -> None:
    image = volume(shape=(8, 5))
    image.SetMetaData("PatientComment", "Müller, 2 mm")  # a metadata line of UTF-8 text: still text
    path = written(tmp_path, "flat.mha", image)
    assert "Müller".encode() in path.read_bytes()
    loaded = volcam.load(path)
    assert tuple(loaded.shape) == (1, 5, 8, 1)
    np.testing.assert_array_equal(loaded.numpy(), sitk_array(path))


def test_the_check_reads_only_the_header_of_a_large_file(tmp_path) -> None:
    path = written(tmp_path, "big.mha", volume(shape=(64, 128, 128)))  # 2 MiB of data after the header
    assert path.stat().st_size > MAX_HEADER_BYTES
    check_itk_header(path)


# -- MetaImage headers --------------------------------------------------------------------------------


def edited(tmp_path: Path, name: str, edit: dict[str, str | None], extra: str = "", compress: bool = False) -> Path:
    """A SimpleITK-written MetaImage whose header lines ``edit`` replaces (``None``: removed; a field
    it lacks goes before ``ElementDataFile``, as do the ``extra`` lines)."""
    path = written(tmp_path, name, compress=compress)
    raw = path.read_bytes()
    end = raw.index(b"\n", raw.index(b"ElementDataFile")) + 1
    lines = raw[:end].decode().splitlines()
    present = {line.split(" = ")[0] for line in lines}
    added = [f"{key} = {value}" for key, value in edit.items() if key not in present and value is not None]
    out = []
    for line in lines:
        key = line.split(" = ")[0]
        if key == "ElementDataFile":
            out += added + ([extra] if extra else [])
        if key in edit:
            if edit[key] is not None:
                out.append(f"{key} = {edit[key]}")
        else:
            out.append(line)
    path.write_bytes("\n".join(out).encode() + b"\n" + raw[end:])
    return path


META_FAULTS = [
    (
        {"NDims": "65536 65536 65536"},
        "the header's dimension (NDims = 65536 65536 65536) is not a whole number from 1 to 4",
    ),
    ({"NDims": "1e308"}, "(NDims = 1e308) is not a whole number from 1 to 4"),
    ({"NDims": "99999999999"}, "(NDims = 99999999999) is not a whole number"),
    ({"NDims": "0"}, "(NDims = 0) is not a whole number from 1 to 4"),
    ({"NDims": "9" * 400}, "(NDims = 999999999999999999999999999999999999999…) is not a whole number from 1 to 4"),
    ({"NDims": "4"}, "the header's direction (TransformMatrix = 0 1 0 1 0 0 0 0 -1) is not 16 numbers (a 4×4"),
    (
        {
            "NDims": "2",
            "TransformMatrix": "1 0 0 1",
            "Offset": "0 0",
            "CenterOfRotation": "0 0",
            "ElementSpacing": "1 1",
        },
        "the header's size (DimSize = 8 8 6) is not 2 positive whole numbers",
    ),
    ({"DimSize": "8 8"}, "(DimSize = 8 8) is not 3 positive whole numbers (one per axis; NDims = 3)"),
    ({"DimSize": "8 8 -6"}, "is not 3 positive whole numbers"),
    ({"DimSize": "8 8 6.5"}, "is not 3 positive whole numbers"),
    ({"ElementSpacing": "0.7 0.8"}, "the header's spacing (ElementSpacing = 0.7 0.8) is not 3 numbers"),
    ({"ElementSpacing": "nan 0.8 2.5"}, "the header's spacing (ElementSpacing = nan 0.8 2.5) holds NaN or infinity"),
    ({"ElementSpacing": "0 0.8 2.5"}, "the header's spacing (ElementSpacing = 0 0.8 2.5) is not positive"),
    ({"ElementSpacing": "0.7 0.8 2.5x"}, "is not 3 numbers"),
    ({"ElementSpacing": ""}, "the header's spacing (ElementSpacing = ) has no value"),
    ({"Offset": "1 2"}, "the header's origin (Offset = 1 2) is not 3 numbers"),
    ({"Offset": "1 2 1e999"}, "the header's origin (Offset = 1 2 1e999) holds NaN or infinity"),
    ({"TransformMatrix": "1 0 0"}, "the header's direction (TransformMatrix = 1 0 0) is not 9 numbers (a 3×3 matrix"),
    ({"TransformMatrix": "1 0 0 0 inf 0 0 0 1"}, "holds NaN or infinity"),
    ({"CenterOfRotation": "(1,0,0) (0,1,0) (0,0,1)"}, "(CenterOfRotation = (1,0,0) (0,1,0) (0,0,1)) is not 3 numbers"),
    (
        {"ElementType": "MET_OTHER"},
        "the header's voxel type (ElementType = MET_OTHER) is not one of MetaIO's number types",
    ),
    ({"ElementType": "MET_FLOAT_MATRIX"}, "is not one of MetaIO's number types"),
    ({"ElementType": None}, "not a readable image file (the header has no ElementType line)"),
    ({"DimSize": None}, "not a readable image file (the header has no DimSize line)"),
    (
        {"BinaryDataByteOrderMSB": "%d 1 3 1"},
        "the header's flag (BinaryDataByteOrderMSB = %d 1 3 1) is neither True nor",
    ),
    ({"CompressedData": "maybe"}, "(CompressedData = maybe) is neither True nor False"),
    ({"BinaryData": "gzip"}, "(BinaryData = gzip) is neither True nor False"),
    ({"ElementDataFile": "LIST"}, "(ElementDataFile = LIST) names a list or a numbered pattern of files"),
    ({"ElementDataFile": "a%03d.raw 1 6 1"}, "names a list or a numbered pattern of files"),
    ({"ElementDataFile": "missing.raw"}, "(ElementDataFile = missing.raw) names a file that is missing"),
    ({"ElementDataFile": "(1,0,0) (0,1,0) (0,0,1)"}, "names a file that is missing"),
    ({"ElementDataFile": "/dev/zero"}, "(ElementDataFile = /dev/zero) names a file that is a character device"),
    ({"ElementDataFile": "."}, "names a file that is a folder"),
    ({"HeaderSize": "-2"}, "the header's header size (HeaderSize = -2) is not a whole number from -1 to"),
    ({"HeaderSize": "99999999"}, "the image data is truncated or unreadable"),
    (
        {"ElementNumberOfChannels": "0"},
        "the header's channel count (ElementNumberOfChannels = 0) is not a whole number",
    ),
    ({"ElementNumberOfChannels": "1000000"}, "(ElementNumberOfChannels = 1000000) is not a whole number from 1 to 64"),
    ({"ElementNumberOfChannels": "2"}, "the image data is truncated or unreadable (the header claims 1.5 KiB"),
    ({"ElementSize": "1 1"}, "the header's voxel size (ElementSize = 1 1) is not 3 numbers"),
    ({"Color": "1 0 0"}, "the header's field (Color = 1 0 0) is not 4 numbers"),
    ({"ElementMin": "low"}, "(ElementMin = low) is not a number"),
    ({"Comment": "x" * 300}, "the header's field (Comment = xxx"),
    ({"AnatomicalOrientation": "R" * 500}, "is longer than MetaIO reads"),
]


@pytest.mark.parametrize(("edit", "expected"), META_FAULTS, ids=[next(iter(e)) for e, _ in META_FAULTS])
@pytest.mark.parametrize("name", ["a.mha", "a.mhd"])
def test_a_metaimage_field_metaio_cannot_take_is_one_line(tmp_path, name: str, edit: dict, expected: str) -> None:
    path = edited(tmp_path, name, edit)
    assert expected in refused(path)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("CenterOfRotation = 0 0 0", "the header gives CenterOfRotation twice (lines 8 and 13)"),
        ("NDims = 3", "the header gives NDims twice"),
        ("Modality = MET_MOD_CT\nModality = MET_MOD_MR", "the header gives Modality twice"),
        ("this line has no separator", "header line 13 is not `key = value` (this line has no separator)"),
        ("= 3", "header line 13 is not `key = value`"),
        ("Comment = a\x01b", "header line 13 is not text"),
        ("Comment = \xff\xfe", "header line 13 is not text"),
        ("K" * 300 + " = 1", "header line 13 has a key longer than 200 characters"),
        ("Note = " + "n" * 20000, "header line 13 is longer than 16384 characters"),
        ("line skip = text\nbyte skip = ascii", ""),  # fields MetaIO does not know: kept as text, fine
    ],
)
def test_a_metaimage_line_metaio_cannot_take_is_one_line(tmp_path, extra: str, expected: str) -> None:
    path = edited(tmp_path, "a.mhd", {}, extra=extra.encode("latin-1").decode("latin-1"))
    if "\xff" in extra:  # bytes that are not UTF-8
        path.write_bytes(path.read_bytes().replace("Comment = \xff\xfe".encode(), b"Comment = \xff\xfe"))
    if not expected:
        check_itk_header(path)
        return
    assert expected in refused(path)


def test_dimsize_before_ndims_is_refused(tmp_path) -> None:
    path = written(tmp_path, "a.mhd")
    text = path.read_text()
    path.write_text(text.replace("NDims = 3\n", "").replace("DimSize = 8 8 6\n", "DimSize = 8 8 6\nNDims = 3\n"))
    assert "the header gives TransformMatrix (line 5) before NDims (line 11); MetaIO reads NDims first" in refused(path)


def test_a_header_without_its_end_is_refused(tmp_path) -> None:
    path = tmp_path / "endless.mha"
    path.write_bytes(b"NDims = 3\n" + b"Comment = x\n" * (MAX_HEADER_BYTES // 12 + 10))
    assert "the header gives Comment twice" in refused(path)
    path.write_bytes(b"NDims = 3\n" + b"".join(b"K%d = x\n" % i for i in range(MAX_HEADER_BYTES // 6)))
    assert "no end of the MetaImage header in its first 1.0 MiB" in refused(path)
    path.write_bytes(b"NDims = 3\nDimSize = 8 8 6\n" + bytes(range(256)) * 4)  # no ElementDataFile: data
    assert "header line 3 is not text" in refused(path)


def test_truncated_metaimage_data_is_refused(tmp_path) -> None:
    path = written(tmp_path, "a.mha")
    path.write_bytes(path.read_bytes()[:-10])
    assert "the image data is truncated or unreadable (the header claims 768 bytes" in refused(path)
    raw = written(tmp_path, "b.mhd").with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:100])
    assert "the file holds 100 bytes" in refused(tmp_path / "b.mhd")


def test_compressed_metaimage_claims_are_bounded(tmp_path, monkeypatch) -> None:
    import volcam.io.memory

    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: None)  # only the file's bound
    path = edited(tmp_path, "c.mha", {"DimSize": "200 200 200"}, compress=True)
    assert "the header claims 15.3 MiB of image data, more than" in refused(path)
    assert "of compressed data can hold" in refused(path)
    path = edited(tmp_path, "d.mha", {"CompressedDataSize": "99999999"}, compress=True)
    assert "the header claims 95.4 MiB of compressed data, the file holds" in refused(path)


def test_a_huge_claim_is_the_memory_line(tmp_path, monkeypatch) -> None:
    import volcam.io.memory

    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 1 << 20)
    path = edited(tmp_path, "a.mha", {"DimSize": "1000 1000 100"})
    assert "the image (1000×1000×100) would need 0.4 GiB, more than the 0.0 GiB of memory" in refused(path)


def test_a_metaimage_whose_data_file_is_a_fifo_is_refused_without_opening_it(tmp_path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.raw")
    path = edited(tmp_path, "a.mha", {"ElementDataFile": "pipe.raw"})
    assert "(ElementDataFile = pipe.raw) names a file that is a FIFO (named pipe)" in refused(path)


def test_load_checks_the_header_before_simpleitk(tmp_path) -> None:
    path = edited(tmp_path, "a.mha", {"ElementType": "MET_OTHER"})
    with pytest.raises(FileFormatError, match=r"the header's voxel type \(ElementType = MET_OTHER\)"):
        volcam.load(path)
    path = edited(tmp_path, "b.mha", {"NDims": "4"})  # MetaIO would read the rest from the next lines
    with pytest.raises(FileFormatError, match=r"\(TransformMatrix = 0 1 0 1 0 0 0 0 -1\) is not 16 numbers"):
        volcam.load(path)


def test_a_nrrd_named_mha_is_not_given_to_another_reader(tmp_path) -> None:
    path = tmp_path / "a.mha"
    path.write_bytes(written(tmp_path, "a.nrrd").read_bytes())
    with pytest.raises(FileFormatError, match="header line 1 is not `key = value` \\(NRRD0004\\)"):
        volcam.load(path)


# -- NRRD headers -------------------------------------------------------------------------------------


def nrrd_edited(tmp_path: Path, name: str, edit: dict[str, str | None], compress: bool = False) -> Path:
    """A SimpleITK-written NRRD whose ``field: value`` lines ``edit`` replaces (``None``: removed; a
    field it lacks is added)."""
    path = written(tmp_path, name, compress=compress)
    raw = path.read_bytes()
    end = raw.find(b"\n\n")
    end = len(raw.rstrip(b"\n")) if end < 0 else end  # a detached header ends with its last line
    lines = raw[:end].decode().split("\n")
    out = [line for line in lines if line.split(":")[0] not in edit]
    out += [f"{key}: {value}" for key, value in edit.items() if value is not None]
    path.write_bytes("\n".join(out).encode() + raw[end:])
    return path


NRRD_FAULTS = [
    ({"dimension": "65536"}, "the header's dimension (dimension = 65536) is not a whole number from 1 to 4"),
    ({"dimension": "1e308"}, "is not a whole number from 1 to 4"),
    ({"dimension": "9" * 5000}, "is not a whole number from 1 to 4"),
    ({"sizes": "8 8"}, "the header's sizes (sizes = 8 8) is not 3 positive whole numbers"),
    ({"sizes": "8 8 0"}, "is not 3 positive whole numbers"),
    ({"type": "MET_SHORT"}, "the header's voxel type (type = MET_SHORT) is not a NRRD number type"),
    ({"type": "block"}, "is not a NRRD number type"),
    ({"encoding": "bzip2"}, "the header's encoding (encoding = bzip2) is not an encoding volcam reads"),
    ({"space directions": "(1,0,0) (0,1,0)"}, "the header's space directions (space directions = (1,0,0) (0,1,0)) is"),
    ({"space directions": "(nan,0,0) (0,1,0) (0,0,1)"}, "holds NaN or infinity"),
    ({"space directions": "(1,0) (0,1,0) (0,0,1)"}, "has vectors of different lengths"),
    ({"space directions": "(1,0,0,0,0) (0,1,0,0,0) (0,0,1,0,0)"}, "has vectors of more than 4 numbers"),
    ({"space directions": "(,0,0) (0,1,0) (0,0,1)"}, "is not vectors of numbers"),
    ({"byte skip": "-2"}, "the header's byte skip (byte skip = -2) is not a whole number from -1 to"),
    ({"byte skip": "99999999999"}, "the image data is truncated or unreadable"),
    ({"line skip": "-1"}, "the header's line skip (line skip = -1) is not a whole number from 0 to"),
    ({"data file": "LIST"}, "(data file = LIST) names a list or a numbered pattern of files"),
    ({"data file": "a%d.raw 1 1000000000 1"}, "names a list or a numbered pattern of files"),
    ({"data file": "/dev/zero"}, "(data file = /dev/zero) names a file that is a character device"),
    ({"data file": "missing.raw"}, "names a file that is missing"),
    ({"type": None}, "not a readable image file (the header has no type field)"),
]


@pytest.mark.parametrize(("edit", "expected"), NRRD_FAULTS, ids=[next(iter(e)) for e, _ in NRRD_FAULTS])
@pytest.mark.parametrize("name", ["a.nrrd", "a.nhdr"])
def test_a_nrrd_field_is_checked_before_teem_reads_it(tmp_path, name: str, edit: dict, expected: str) -> None:
    path = nrrd_edited(tmp_path, name, edit)
    assert expected in refused(path)


def test_nrrd_lines_and_data(tmp_path, monkeypatch) -> None:
    path = written(tmp_path, "a.nrrd")
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"type: short\n", b"type: short\nTYPE: short\n"))
    assert "the header gives TYPE twice (lines 4 and 5)" in refused(path)
    path.write_bytes(raw.replace(b"type: short\n", b"type short\n"))
    assert "header line 4 is not `field: value` (type short)" in refused(path)
    path.write_bytes(b"NRRD9\n" + raw[9:])
    assert "not a NRRD file (it does not start with NRRD0001" in refused(path)
    path.write_bytes(raw[:-1])
    assert "the image data is truncated or unreadable (the header claims 768 bytes" in refused(path)
    path.write_bytes(raw.replace(b"type: short\n", b"type: short\nDWMRI_b-value:=1000\n# a comment\n"))
    check_itk_header(path)  # key/value pairs and comments are teem's to keep
    import volcam.io.memory

    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: None)
    path = nrrd_edited(tmp_path, "c.nrrd", {"sizes": "800 800 600"}, compress=True)
    assert "of compressed data can hold" in refused(path)


def test_a_nrrd_whose_data_file_is_a_fifo_is_refused_without_opening_it(tmp_path) -> None:
    """teem opened the FIFO a .nrrd's ``data file`` named and blocked forever (the .nhdr form was
    already refused by ``volcam.load``'s companion check)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.raw")
    path = nrrd_edited(tmp_path, "a.nrrd", {"data file": "pipe.raw"})
    with pytest.raises(FileFormatError, match=r"\(data file = pipe.raw\) names a file that is a FIFO"):
        volcam.load(path)
