"""Video files from an ultrasound scanner: frames of the real 30-frame echo loop, encoded with PyAV, come
back as uint8 ``(C, T, H, W)`` with the pixels PyAV decodes, whatever frame count the container claims."""

from __future__ import annotations

import sys

import numpy as np
import pydicom
import pytest
import torch

import volcam
import volcam.io.memory
import volcam.io.video as video
from io_fixtures import pydicom_file
from volcam.errors import DependencyError, FileFormatError, VolcamWarning

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def echo_frames() -> np.ndarray:
    """(30, 240, 320, 3) uint8 RGB frames of pydicom's YBR JPEG ultrasound cine (33.3 ms a frame)."""
    return pydicom.dcmread(pydicom_file("examples_ybr_color.dcm")).pixel_array


def encode(frames: np.ndarray, path, codec: str, rate: int = 30) -> None:
    gray = frames.ndim == 3
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "gray" if gray else "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(frame, format="gray" if gray else "rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pyav_frames(path, format: str = "rgb24") -> np.ndarray:
    """``(T, H, W[, 3])`` uint8: what PyAV decodes, frame by frame, stacked."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format=format) for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def h264(echo_frames, tmp_path_factory):
    """The echo loop as an H.264 MP4 (what scanners and PACS exports write)."""
    path = tmp_path_factory.mktemp("video") / "echo.mp4"
    encode(echo_frames, path, "libx264" if "libx264" in av.codecs_available else "mpeg4")
    return path


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "mpeg4"), (".avi", "mjpeg")])
def test_video_is_a_clip_with_its_frame_interval(tmp_path, echo_frames, suffix: str, codec: str) -> None:
    path = tmp_path / f"echo{suffix}"
    encode(echo_frames, path, codec)
    with pytest.warns(VolcamWarning, match="pixel spacing"):
        clip = volcam.load(path)
    assert clip.shape == (3, 30, 240, 320)
    assert clip.meta["axes"] == "thw" and clip.meta["modality"] == "US"
    assert clip.meta["frame_interval"] == pytest.approx(1 / 30)
    assert clip.meta["spacing"][0] == pytest.approx(1 / 30)
    # Lossy codecs: the decoded frames stay close to the scanner's.
    decoded = clip.numpy().transpose(1, 2, 3, 0)
    assert np.abs(decoded - echo_frames.astype(np.float32)).mean() < 6.0


def test_file_that_is_not_a_video(tmp_path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0\1\2" * 100)
    with pytest.raises(FileFormatError, match="not a readable video file") as caught:
        volcam.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_pyav_names_the_package(tmp_path, monkeypatch) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(b"\0" * 10)
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails as if not installed
    with pytest.raises(DependencyError, match=r"pip install 'volcam\[video\]'"):
        volcam.load(path)


def test_an_mp4_comes_back_uint8_channel_first_with_pyavs_pixels(h264) -> None:
    with pytest.warns(VolcamWarning, match="pixel spacing"):
        clip = volcam.load(h264)
    assert clip.shape == (3, 30, 240, 320) and clip.dtype == torch.uint8
    assert clip.permute(1, 2, 3, 0).is_contiguous()  # a view of the frames, each (H, W, 3) as PyAV gives it
    np.testing.assert_array_equal(clip.numpy().transpose(1, 2, 3, 0), pyav_frames(h264))
    assert clip.meta["frame_interval"] == pytest.approx(1 / 30)
    assert np.diag(clip.affine.numpy()) == pytest.approx([1 / 30, 1.0, 1.0, 1.0])


def test_a_grey_video_is_one_uint8_channel(tmp_path, echo_frames) -> None:
    path = tmp_path / "grey.mkv"
    encode(echo_frames[..., 1].copy(), path, "ffv1")  # lossless
    with pytest.warns(VolcamWarning, match="pixel spacing"):
        clip = volcam.load(path)
    assert clip.shape == (1, 30, 240, 320) and clip.dtype == torch.uint8
    np.testing.assert_array_equal(clip[0].numpy(), echo_frames[..., 1])


@pytest.mark.parametrize("announced", [0, 1, 7, 29, 31, 500], ids=lambda n: f"announces-{n}")
def test_a_container_that_lies_about_its_frame_count(h264, monkeypatch, announced: int) -> None:
    # 0: says nothing; fewer: the array grows; more: it is cut to the frames there were
    monkeypatch.setattr(video, "_announced", lambda stream: announced)
    with pytest.warns(VolcamWarning, match="pixel spacing"):
        clip = volcam.load(h264)
    assert clip.shape == (3, 30, 240, 320) and clip.permute(1, 2, 3, 0).is_contiguous()
    np.testing.assert_array_equal(clip.numpy().transpose(1, 2, 3, 0), pyav_frames(h264))


def test_a_video_bigger_than_memory_is_refused_before_allocating(h264, monkeypatch) -> None:
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 3 * 240 * 320 * 30 - 1)
    with pytest.raises(FileFormatError, match=r"the video \(30 frames of 320×240\) would need") as caught:
        volcam.load(h264)
    assert str(h264) in str(caught.value) and "\n" not in str(caught.value)


def test_a_video_longer_than_announced_is_refused_when_the_grown_array_would_not_fit(h264, monkeypatch) -> None:
    monkeypatch.setattr(video, "_announced", lambda stream: 10)
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 3 * 240 * 320 * 12)  # room for 12 frames
    with pytest.raises(FileFormatError, match=r"the video \(26 frames of 320×240\) would need"):
        volcam.load(h264)
