"""Spatio-temporal models trained on short windows: a clip seen window by window along T, the window
maps stitched with MONAI's sliding-window weighting, the clip's class the mean over windows."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from torch import nn

import volcam
from volcam import sample_data
from volcam.engine.windows import explain_windowed, window_starts
from volcam.errors import CardError, InputError
from volcam.model.card import Window, read_card
from volcam.model.session import ScanSession


class SquareHead(nn.Module):
    """Scores ``±½ Σ a²`` of a window ``(B, 1, T, H, W)``: Grad-CAM at the layer before it is
    ``mean(window) × window``, a map known for every window."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        s = 0.5 * a.pow(2).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def _toy() -> nn.Module:
    return nn.Sequential(nn.Identity(), SquareHead())  # layer "0" is the input itself


@pytest.mark.parametrize(("total", "starts"), [(16, (0,)), (24, (0, 8)), (37, (0, 8, 16, 21)), (40, (0, 8, 16, 24))])
def test_windows_every_stride_frames_the_last_at_the_clips_end(total, starts):
    assert window_starts(total, 16, 8) == starts


def test_a_clip_shorter_than_a_window_is_refused_in_one_line():
    with pytest.raises(InputError, match="has 10 frames, fewer than the model's window of 16"):
        window_starts(10, 16, 8)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_stitching_is_monais_weighted_mean_of_the_known_window_maps(mode):
    clip = torch.rand(1, 37, 6, 5)
    result = explain_windowed(_toy(), clip, "gradcam", 0, "0", frames=16, stride=8, mode=mode, windows_per_batch=3)
    starts = (0, 8, 16, 21)
    assert result.window_starts == starts
    weights = compute_importance_map((16,), mode=mode, sigma_scale=0.125)
    total = torch.zeros(37, 6, 5)
    count = torch.zeros(37)
    probs = []
    for s in starts:
        window = clip[0, s : s + 16]
        total[s : s + 16] += weights[:, None, None] * window.mean() * window  # the window's Grad-CAM
        count[s : s + 16] += weights
        score = 0.5 * window.pow(2).sum()
        probs.append(torch.softmax(torch.stack([score, -score]), 0))
    expected = total / count[:, None, None]
    expected = (expected - expected.min()) / (expected.max() - expected.min())  # over the whole clip
    torch.testing.assert_close(result.map[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.probabilities, torch.stack(probs).mean(0))
    assert result.frame_probabilities.shape == (37, 2)
    torch.testing.assert_close(result.frame_probabilities[0], probs[0])  # the first frames: one window only


def test_a_window_card_is_checked(tmp_path):
    card = json.loads(sample_data.file(sample_data.LUS_3D_CARD).read_text())
    assert read_card(sample_data.file(sample_data.LUS_3D_CARD)).window == Window(16, 8, None)
    for window, message in (
        ({"frames": 16, "stride": 20}, "stride 20 is more than window.frames 16"),
        ({"frames": 0, "stride": 1}, "window.frames is 0"),
        ({"frames": 16, "stride": 8.5}, "window.stride is 8.5"),
        ({"frames": 16, "mode": "median"}, 'window.mode "median"; use one of gaussian, constant'),
        ({"length": 16}, "'window' should be an object like"),
    ):
        path = tmp_path / "card.json"
        path.write_text(json.dumps({**card, "window": window}))
        with pytest.raises(CardError, match=message):
            read_card(path)
    path.write_text(json.dumps({**card, "kind": "frames", "window": {"frames": 16}}))
    with pytest.raises(CardError, match="'window' is for kind \"clip\""):
        read_card(path)


@pytest.fixture(scope="module")
def lus3d():
    clip = volcam.load(sample_data.file(sample_data.LUS_DICOM))
    return clip, volcam.load_model(sample_data.file(sample_data.LUS_3D_CARD))


def test_the_demo_3d_model_points_at_the_b_lines(lus3d):
    clip, model = lus3d
    explained = model.explain(clip, "gradcam")
    assert explained.prediction == "covid" and explained.result.window_starts == (0, 8)
    assert explained.map.shape == clip.shape and torch.equal(explained.map.affine, clip.affine)
    mask = np.asarray(nib.load(sample_data.file(sample_data.LUS_MASK)).dataobj) > 0  # (T, H, W)
    cam = explained.map[0].numpy()
    inside = float(cam[mask].sum() / cam.sum())
    assert inside > 1.5 * mask.mean(), (inside, mask.mean())  # above the uniform map's share
    assert model.predict(clip)["covid"] == pytest.approx(explained.probabilities["covid"], abs=1e-5)


def test_the_windows_pass_is_kept_for_the_next_class(lus3d):
    clip, model = lus3d
    calls = []
    handle = model.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        with ScanSession(model, clip) as session:
            first = session.explain("gradcam", on="network")
            assert len(calls) == 1  # two windows, one batch
            other = session.explain("gradcam++", "healthy", on="network")
            assert len(calls) == 1 and session.forwards == 1
            full = session.explain("gradcam", first.target)
    finally:
        handle.remove()
    assert tuple(first.map.shape) == (1, 24, 64, 64) and other.target == "healthy"
    torch.testing.assert_close(first.to_scan().map, full.map)


def test_a_clip_shorter_than_the_models_window_is_one_line(lus3d):
    clip, model = lus3d
    with pytest.raises(InputError, match="fewer than the model's window of 16"):
        model.explain(clip[:, :10], "gradcam")
