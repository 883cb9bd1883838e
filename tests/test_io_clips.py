"""DICOM cines load in their stored type: uint8 grey or RGB stays uint8 (uint16 stays uint16), decoded
frame by frame into one channel-first array, with the pixels pydicom gives, the spacing from the
ultrasound region and the frame interval from FrameTime; JPEG Baseline YBR_FULL_422 (the common
ultrasound syntax) comes back as RGB; a clip bigger than memory is refused before anything is allocated."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

import volcam
import volcam.io.dicom.pixels as pixels
import volcam.io.memory
from volcam.errors import FileFormatError
from volcam.io.dicom.instances import save_instance

FRAMES, ROWS, COLUMNS = 6, 48, 64
SPACING_CM = (0.02, 0.025)  # PhysicalDeltaY, PhysicalDeltaX: 0.2 mm rows, 0.25 mm columns
FRAME_TIME_MS = 33.3


def pattern(samples: int, dtype: type = np.uint8, top: int = 255) -> np.ndarray:
    """``(T, H, W, samples)`` smooth gradients that move from frame to frame (JPEG keeps them well)."""
    t, y, x = np.meshgrid(np.arange(FRAMES), np.arange(ROWS), np.arange(COLUMNS), indexing="ij")
    waves = [
        0.5 + 0.5 * np.sin(2 * np.pi * (x / COLUMNS + t / FRAMES)),
        y / (ROWS - 1),
        0.5 + 0.5 * np.cos(2 * np.pi * (y / ROWS + x / COLUMNS - t / FRAMES)),
    ]
    return np.stack([np.rint(top * w).astype(dtype) for w in waves[:samples]], axis=-1)


def cine_dataset(frames: np.ndarray, photometric: str) -> Dataset:
    """An Ultrasound Multi-frame dataset with FrameTime and a calibrated region around ``frames``."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["volcam-test-clip", photometric])
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["volcam-test-study"])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["volcam-test-series"])
    ds.Modality = "US"
    ds.NumberOfFrames = len(frames)
    ds.FrameTime = FRAME_TIME_MS
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = COLUMNS - 1, ROWS - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaY, region.PhysicalDeltaX = SPACING_CM
    ds.SequenceOfUltrasoundRegions = [region]
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.SamplesPerPixel = frames.shape[3]
    ds.PhotometricInterpretation = photometric
    if frames.shape[3] > 1:
        ds.PlanarConfiguration = 0
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


def write_cine(path, frames: np.ndarray, *, planar: bool = False, **fields) -> pydicom.FileDataset:
    """``frames`` ``(T, H, W, S)`` stored uncompressed (colour by pixel, or by plane with ``planar``)."""
    ds = cine_dataset(frames, "RGB" if frames.shape[3] == 3 else "MONOCHROME2")
    stored = frames.transpose(0, 3, 1, 2) if planar else frames
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    if planar:
        ds.PlanarConfiguration = 1
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    save_instance(ds, path)
    return pydicom.dcmread(path)


def check_geometry(clip) -> None:
    assert clip.meta["axes"] == "thw" and clip.meta["modality"] == "US"
    assert clip.meta["frame_interval"] == pytest.approx(FRAME_TIME_MS / 1000)
    assert clip.meta["spacing"] == pytest.approx((FRAME_TIME_MS / 1000, 0.2, 0.25))
    assert np.diag(clip.affine.numpy()) == pytest.approx([FRAME_TIME_MS / 1000, 0.2, 0.25, 1.0])
    assert clip.meta["problems"] == []


def test_a_grey_uint8_cine_stays_uint8_with_pydicoms_pixels(tmp_path) -> None:
    frames = pattern(1)
    written = write_cine(tmp_path / "grey.dcm", frames)
    clip = volcam.load(tmp_path / "grey.dcm")
    assert clip.shape == (1, FRAMES, ROWS, COLUMNS) and clip.dtype == torch.uint8
    assert clip.is_contiguous()
    np.testing.assert_array_equal(clip[0].numpy(), written.pixel_array)
    check_geometry(clip)


@pytest.mark.parametrize("planar", [False, True], ids=["by-pixel", "by-plane"])
def test_an_rgb_uint8_cine_stays_uint8_channel_first_with_pydicoms_pixels(tmp_path, planar: bool) -> None:
    frames = pattern(3)
    written = write_cine(tmp_path / "rgb.dcm", frames, planar=planar)
    clip = volcam.load(tmp_path / "rgb.dcm")
    assert clip.shape == (3, FRAMES, ROWS, COLUMNS) and clip.dtype == torch.uint8
    # a view of the frames as the file stores them, read straight into one array: no copy to reorder
    stored = clip.permute(1, 0, 2, 3) if planar else clip.permute(1, 2, 3, 0)
    assert stored.is_contiguous()
    np.testing.assert_array_equal(clip.numpy().transpose(1, 2, 3, 0), written.pixel_array)
    np.testing.assert_array_equal(clip.numpy().transpose(1, 2, 3, 0), frames)
    check_geometry(clip)


def test_a_uint16_cine_stays_uint16_with_the_unused_high_bits_cleared(tmp_path) -> None:
    frames = pattern(1, np.uint16, top=4095)
    noisy = frames | np.uint16(0xA000)  # an overlay in the 4 bits above BitsStored: pydicom clears them
    written = write_cine(tmp_path / "xa.dcm", noisy, BitsStored=12, HighBit=11)
    clip = volcam.load(tmp_path / "xa.dcm")
    assert clip.dtype == torch.uint16
    np.testing.assert_array_equal(clip[0].numpy(), written.pixel_array)
    np.testing.assert_array_equal(clip[0].numpy(), frames[..., 0])


def test_a_grey_cine_with_a_rescale_is_float32_in_modality_units(tmp_path) -> None:
    frames = pattern(1)
    write_cine(tmp_path / "scaled.dcm", frames, RescaleSlope=0.5, RescaleIntercept=-10)
    clip = volcam.load(tmp_path / "scaled.dcm")
    assert clip.dtype == torch.float32
    np.testing.assert_allclose(clip[0].numpy(), frames[..., 0] * 0.5 - 10)


def jpeg_baseline_422(frames: np.ndarray) -> list[bytes]:
    """Each ``(H, W, 3)`` RGB frame as a JPEG Baseline 8-bit codestream, YCbCr with 4:2:2 subsampling."""
    from PIL import Image

    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buffer, "JPEG", quality=95, subsampling=1)  # 1: 4:2:2
        encoded.append(buffer.getvalue())
    return encoded


def test_a_jpeg_baseline_ybr_full_422_cine_comes_back_rgb_uint8(tmp_path) -> None:
    frames = pattern(3)
    ds = cine_dataset(frames, "YBR_FULL_422")
    ds.PixelData = encapsulate(jpeg_baseline_422(frames))
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    pydicom.dcmwrite(tmp_path / "jpeg.dcm", ds, enforce_file_format=True)

    clip = volcam.load(tmp_path / "jpeg.dcm")
    assert clip.shape == (3, FRAMES, ROWS, COLUMNS) and clip.dtype == torch.uint8
    decoded = clip.numpy().transpose(1, 2, 3, 0)
    np.testing.assert_array_equal(decoded, pydicom.dcmread(tmp_path / "jpeg.dcm").pixel_array)
    # RGB again, within what JPEG at quality 95 with halved chroma keeps of smooth gradients
    error = np.abs(decoded.astype(np.int16) - frames)
    assert error.mean() < 2.0 and error.max() <= 24, (error.mean(), error.max())
    check_geometry(clip)


def test_a_cine_bigger_than_memory_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    write_cine(tmp_path / "rgb.dcm", pattern(3))
    stored = 3 * FRAMES * ROWS * COLUMNS
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: stored - 1)

    def no_decoding(*args):
        raise AssertionError("decoded before checking the memory")

    monkeypatch.setattr(pixels, "decode_frames", no_decoding)
    with pytest.raises(FileFormatError, match="decoding the pixel data would need") as caught:
        volcam.load(tmp_path / "rgb.dcm")
    assert "\n" not in str(caught.value) and str(tmp_path / "rgb.dcm") in str(caught.value)


def test_a_cine_that_fits_as_stored_loads_though_it_would_not_as_float32(tmp_path, monkeypatch) -> None:
    write_cine(tmp_path / "rgb.dcm", pattern(3))
    stored = 3 * FRAMES * ROWS * COLUMNS
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 2 * stored)  # float32 would be 4×
    assert volcam.load(tmp_path / "rgb.dcm").dtype == torch.uint8


def test_a_cine_whose_file_ends_inside_a_frame_is_one_line(tmp_path) -> None:
    write_cine(tmp_path / "rgb.dcm", pattern(3))
    data = (tmp_path / "rgb.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - ROWS * COLUMNS * 3 // 2])
    with pytest.raises(FileFormatError, match="cannot decode the pixel data") as caught:
        volcam.load(tmp_path / "cut.dcm")
    assert "\n" not in str(caught.value) and str(tmp_path / "cut.dcm") in str(caught.value)


def test_uncompressed_frames_are_read_from_the_file_not_by_pydicoms_decoders(tmp_path, monkeypatch) -> None:
    write_cine(tmp_path / "rgb.dcm", pattern(3))

    def no_pydicom(*args):
        raise AssertionError("uncompressed frames went through pydicom's decoders")

    monkeypatch.setattr(pixels, "_decoded_frames", no_pydicom)
    assert volcam.load(tmp_path / "rgb.dcm").dtype == torch.uint8
