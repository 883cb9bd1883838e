"""Video files from an ultrasound scanner: frames of the real 30-frame echo loop, encoded with PyAV."""

from __future__ import annotations

import sys

import numpy as np
import pydicom
import pytest

import volcam
from io_fixtures import pydicom_file
from volcam.errors import DependencyError, FileFormatError, VolcamWarning

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def echo_frames() -> np.ndarray:
    """(30, 240, 320, 3) uint8 RGB frames of pydicom's YBR JPEG ultrasound cine (33.3 ms a frame)."""
    return pydicom.dcmread(pydicom_file("examples_ybr_color.dcm")).pixel_array


def encode(frames: np.ndarray, path, codec: str, rate: int = 30) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec != "mjpeg":
            stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


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
