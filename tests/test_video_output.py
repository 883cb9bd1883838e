"""A clip's video as a reader opens it: the MP4 decoded back with PyAV, the report animation with Pillow,
the decisive frames in summary.json; atomic, and without PyAV the rest still comes."""

from __future__ import annotations

import json

import av
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

import volcam
from cli_runs import run
from volcam import sample_data as sd
from volcam.errors import DependencyError, InputError
from volcam.maps.colour import display_range, fuse
from volcam.viz import video
from volcam.viz.render import PICTURE_ALPHA, PICTURE_THRESHOLD
from volcam.viz.video import FrameCurve, write_clip_video
from volcam.workflows.specs import ExplainSpec

MARKER = np.array([214, 39, 40])


def _decoded(path) -> tuple[list[np.ndarray], float, str, str]:
    """An MP4's frames as RGB, its frame rate, pixel format and codec."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate), stream.codec_context.pix_fmt, stream.codec_context.name


def _animation(path) -> tuple[int, list[int], tuple[int, int], dict]:
    """An animated WebP/GIF's frame count, durations (ms), size and info, as Pillow reads them."""
    with Image.open(path) as image:
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()  # WebP sets a frame's duration when it is decoded
            durations.append(int(image.info["duration"]))
        return image.n_frames, durations, image.size, dict(image.info)


def _marker_column(frame: np.ndarray, top: int) -> float:
    """Where the current-frame marker is in the curve panel (rows from ``top``): mean column of its red."""
    panel = frame[top:].astype(int)
    red = np.abs(panel - MARKER).sum(axis=-1) < 60
    assert red.any()
    return float(np.nonzero(red)[1].mean())


def test_explain_on_a_clip_writes_its_video_animation_and_decisive_frames(tmp_path) -> None:
    out = tmp_path / "us"
    code, stdout, err = run(
        "explain", sd.file(sd.LUS_DICOM), "--model", sd.file(sd.LUS_CARD), "--decisive-threshold", "0.99", "--out", out
    )  # fmt: skip
    assert code == 0, err
    assert "gradcam.mp4" in stdout and "gradcam.webp" in stdout
    record = json.loads((out / "summary.json").read_text())["explanations"][0]
    assert record["files"]["video"] == str(out / "gradcam.mp4")
    assert record["files"]["animation"] == str(out / "gradcam.webp")
    curve = record["frame_probabilities"]
    assert set(curve) == {"healthy", "covid"} and len(curve["covid"]) == 24
    assert np.allclose(np.add(curve["healthy"], curve["covid"]), 1.0, atol=1e-4)
    assert np.isclose(np.mean(curve["covid"]), record["probabilities"]["covid"], atol=1e-4)
    decisive = record["decisive_frames"]
    expected = [t for t, p in enumerate(curve["covid"]) if p > 0.99]
    assert decisive["label"] == "covid" and decisive["threshold"] == 0.99
    assert decisive["indices"] == expected and 0 < len(expected) < 24  # some frames only, here
    assert np.allclose(decisive["times_s"], np.array(expected) * 0.1)
    assert record["timings_s"]["video"] > 0

    # the MP4 as a player decodes it: every frame, the clip's 10 fps, H.264 yuv420p, even sides
    frames, fps, pix_fmt, codec = _decoded(out / "gradcam.mp4")
    assert len(frames) == 24 and fps == pytest.approx(10.0) and pix_fmt == "yuv420p" and codec == "h264"
    height, width = frames[0].shape[:2]
    assert height % 2 == 0 and width % 2 == 0 and width == 4 * 128  # the 128-pixel clip enlarged 4×
    # the map region of a decoded frame shows the house fusion's colours (within the codec's error)
    clip = volcam.load(sd.file(sd.LUS_DICOM)).as_tensor().numpy()
    t = 12
    grey = display_range(clip, "US", None)[0, t]
    values = np.asarray(nib.load(out / "gradcam.nii.gz").dataobj[t], dtype=np.float32)
    fused = fuse(grey, values, alpha=PICTURE_ALPHA, threshold=PICTURE_THRESHOLD).repeat(4, 0).repeat(4, 1)
    hot = (values > 0.5).repeat(4, 0).repeat(4, 1)
    assert hot.mean() > 0.02
    shown = frames[t][: 4 * 128].astype(float)
    assert np.abs(shown[hot] - fused[hot]).mean() < 4.0  # 8-bit levels: H.264 at crf 18 is near-transparent
    assert np.abs(shown[hot].mean(0) - fused[hot].mean(0)).max() < 3.0  # no colour shift
    grey_only = np.repeat(grey[..., None] * 255, 3, -1).repeat(4, 0).repeat(4, 1)
    assert np.abs(shown[hot] - grey_only[hot]).mean() > 20  # the comparison sees the map, not just the anatomy
    # the marker moves along the curve with the frames
    columns = [_marker_column(frames[t], 4 * 128) for t in (0, 12, 23)]
    assert columns[0] < columns[1] < columns[2]

    # the report animation as Pillow opens it: every frame (10 fps is at most its rate), 100 ms each, looping
    count, durations, size, info = _animation(out / "gradcam.webp")
    assert count == 24 and durations == [100] * 24 and size[0] <= video.ANIMATION_WIDTH and info["loop"] == 0


@pytest.fixture
def clip30() -> tuple[MetaTensor, torch.Tensor, FrameCurve]:
    """45 frames of 90 × 70 RGB uint8 at 30 fps, a map drifting across, and a curve with two decisive runs."""
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 200, (3, 45, 90, 70), dtype=np.uint8))
    clip = MetaTensor(frames, meta={"axes": "thw", "modality": "US", "frame_interval": 1 / 30})
    rows, columns = torch.meshgrid(torch.arange(90.0), torch.arange(70.0), indexing="ij")
    cam = torch.stack([torch.exp(-(((rows - 45) / 20) ** 2 + ((columns - t) / 15) ** 2)) for t in range(45)])[None]
    values = np.r_[np.full(10, 0.2), np.full(10, 0.8), np.full(15, 0.3), np.full(10, 0.9)]
    return clip, cam, FrameCurve(values, "b-lines", 0.5, 1 / 30)


def test_a_30_fps_clip_keeps_its_rate_and_the_animation_plays_in_real_time(tmp_path, clip30) -> None:
    clip, cam, curve = clip30
    assert curve.decisive.tolist() == [*range(10, 20), *range(35, 45)]
    paths = write_clip_video(clip, cam, curve, tmp_path / "gradcam", title="a test")
    frames, fps, _, _ = _decoded(paths["video"])
    assert len(frames) == 45 and fps == pytest.approx(30.0)
    assert frames[0].shape[1] == 7 * 70  # enlarged a whole 7 times to at least MIN_WIDTH (480)
    # every 3rd frame at 10 fps: the same 1.5 s, a third of the frames
    count, durations, _, _ = _animation(paths["animation"])
    assert count == 15 and sum(durations) == pytest.approx(1500, abs=15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradcam.mp4", "gradcam.webp"]  # no temporaries


def test_the_curve_panel_shades_the_decisive_frames_and_knows_where_the_marker_goes(clip30) -> None:
    _, _, curve = clip30
    panel = video._curve_panel(curve, 600, 160, "a test")
    assert panel.base.shape == (160, 600, 3)
    row = panel.top + (panel.bottom - panel.top) * 2 // 5  # P ≈ 0.6: off the curve and the threshold line
    decisive, quiet = panel.base[row, panel.columns[15]], panel.base[row, panel.columns[27]]
    assert tuple(quiet) == (255, 255, 255) and decisive[2] < 200  # orange-tinted where decisive, white elsewhere
    assert (np.diff(panel.columns) > 0).all()  # later frames, further right
    assert panel.rows[15] < panel.rows[5]  # higher probability, higher up
    drawn = panel.base.copy()
    panel.draw(drawn, 30)
    assert (drawn[panel.top : panel.bottom, panel.columns[30]] == MARKER).all()


def test_a_gif_where_pyav_has_no_webp_encoder(tmp_path, clip30, monkeypatch) -> None:
    clip, cam, curve = clip30
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libwebp_anim"})
    paths = write_clip_video(clip, cam, curve, tmp_path / "cam")
    assert paths["animation"].name == "cam.gif"
    count, durations, _, info = _animation(paths["animation"])
    assert count == 15 and durations == [100] * 15 and info["loop"] == 0


def test_a_failure_while_writing_leaves_no_video(tmp_path, clip30, monkeypatch) -> None:
    clip, cam, curve = clip30
    render = video._Renderer.render

    def failing(self, t, out):
        if t == 20:
            raise RuntimeError("disk gone")
        return render(self, t, out)

    monkeypatch.setattr(video._Renderer, "render", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        write_clip_video(clip, cam, curve, tmp_path / "cam")
    assert list(tmp_path.iterdir()) == []


def test_a_map_or_curve_off_the_clip_is_one_line(tmp_path, clip30) -> None:
    clip, cam, curve = clip30
    with pytest.raises(InputError, match="not its grid"):
        write_clip_video(clip, cam[:, :5], curve, tmp_path / "cam")
    with pytest.raises(InputError, match="a curve of 3 frames for a clip of 45"):
        write_clip_video(clip, cam, FrameCurve(np.zeros(3), "x", 0.5), tmp_path / "cam")


def test_without_pyav_a_clip_still_gets_its_maps_and_summary_and_a_warning(tmp_path, monkeypatch) -> None:
    from volcam.workflows.explain_folder import explain_to_folder

    def missing():
        raise DependencyError("writing a clip's video needs PyAV")

    monkeypatch.setattr(video, "_av", missing)
    scan, model = volcam.load(sd.file(sd.LUS_DICOM)), volcam.load_model(sd.file(sd.LUS_CARD))
    record = explain_to_folder(scan, model, tmp_path / "out", methods=["cam"])["explanations"][0]
    assert set(record["files"]) == {"nifti", "png"} and record["decisive_frames"]["indices"] == list(range(24))
    assert any("no video of the clip" in line for line in record["warnings"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".volcam.json",
        "cam.nii.gz",
        "cam.png",
        "summary.json",
    ]


def test_the_decisive_threshold_is_a_probability() -> None:
    assert ExplainSpec().decisive_threshold == 0.5
    with pytest.raises(InputError, match=r"^--decisive-threshold: 1.5 is not a probability"):
        ExplainSpec.of(decisive_threshold=1.5)
