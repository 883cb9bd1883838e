"""explain_clip: frame-based 2D models on clips; and gradient filtering in mm."""

from __future__ import annotations

import pytest
import torch

import volcam
from conftest import GapNet, pearson


def _frame_model(num_classes: int = 3) -> torch.nn.Module:
    return GapNet(2, in_channels=3, num_classes=num_classes).eval()


def test_clip_equals_frames_as_a_batch_normalised_over_the_clip():
    net = _frame_model()
    clip = torch.rand(3, 7, 16, 16)
    result = volcam.explain_clip(net, clip, "gradcam++", target=1, layer="features.2", chunk_size=3)
    assert result.map.shape == (1, 7, 16, 16)
    assert result.map.max() == 1.0 and result.map.min() >= 0
    frames = clip.permute(1, 0, 2, 3)
    direct = volcam.CamEngine(net, "features.2").explain(frames, "gradcam++", target=1, normalize=False)
    per_frame = direct.map[:, 0]
    expected = (per_frame - per_frame.min()) / (per_frame.max() - per_frame.min())  # one scale for all frames
    assert torch.allclose(result.map[0], expected, atol=1e-5)
    assert torch.allclose(result.frame_scores, direct.scores)
    assert result.frame_probabilities.shape == (7, 3)
    assert torch.allclose(result.probabilities, result.frame_probabilities.mean(0))


def test_clip_class_is_the_highest_mean_frame_probability():
    net = _frame_model()
    clip = torch.rand(1, 3, 5, 12, 12)
    result = volcam.explain_clip(net, clip, layer="features.2", labels=["a-lines", "b-lines", "consolidation"])
    assert result.target_class == result.predicted == int(result.frame_probabilities.mean(0).argmax())


def test_temporal_smoothing_in_seconds_and_confident_frames_only():
    net = _frame_model(2)
    clip = torch.rand(3, 9, 12, 12)
    sharp = volcam.explain_clip(net, clip, target=1, layer="features.2", frame_interval=0.2)
    smooth = volcam.explain_clip(net, clip, target=1, layer="features.2", frame_interval=0.2, temporal_sigma_s=0.4)

    def flicker(m: torch.Tensor) -> float:
        energy = m[0].flatten(1).sum(1)
        return float(energy.diff().abs().mean() / energy.mean())

    assert flicker(smooth.map) < 0.5 * flicker(sharp.map)  # frame-to-frame flicker is damped
    p = sharp.frame_probabilities[:, 1]
    quiet = volcam.explain_clip(net, clip, target=1, layer="features.2", min_frame_probability=float(p.median()))
    assert (quiet.map[0][p < p.median()] == 0).all()


def test_clip_metatensor_keeps_geometry_and_frame_interval():
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([0.0333, 0.2, 0.2, 1.0], dtype=torch.float64))
    clip = MetaTensor(
        torch.rand(3, 6, 12, 12), affine=affine, meta={"frame_interval": 0.0333, "spacing": (0.0333, 0.2, 0.2)}
    )
    result = volcam.explain_clip(_frame_model(), clip, target=0, layer="features.2", temporal_sigma_s=0.05)
    assert isinstance(result.map, MetaTensor)
    assert torch.allclose(result.map.affine, affine)


def test_bad_clip_shapes_are_clear_errors():
    with pytest.raises(volcam.InputError, match=r"\(C, T, H, W\)"):
        volcam.explain_clip(_frame_model(), torch.rand(3, 12, 12))


def test_gradient_sigma_mm_smooths_gradients_at_the_layer_spacing():
    net = GapNet(3).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with volcam.CamEngine(net, "features.0") as engine:  # full resolution: gradients vary in space
        plain = engine.explain(x, "hirescam", target=1, normalize=False)
        smooth = engine.explain(x, "hirescam", target=1, gradient_sigma_mm=2.0, normalize=False)
        coarse = engine.explain(
            x, "hirescam", target=1, gradient_sigma_mm=2.0, spacing=(4.0, 4.0, 4.0), normalize=False
        )
    from volcam.maps.filters import gaussian_filter_mm

    a = engine.forward(x).activations["features.0"].detach()
    g = engine.gradients(x, 1)["features.0"]
    expected = torch.relu((gaussian_filter_mm(g, 2.0, (1.0, 1.0, 1.0)) * a).sum(1, keepdim=True))
    assert torch.allclose(smooth.raw, expected, atol=1e-6)
    assert not torch.allclose(smooth.raw, plain.raw)
    # the same σ in mm is half a voxel at 4 mm spacing: closer to the unfiltered map
    assert pearson(coarse.raw, plain.raw) > pearson(smooth.raw, plain.raw)


def test_metatensor_spacing_reaches_the_methods():
    from monai.data import MetaTensor

    net = GapNet(3).eval()
    x = MetaTensor(
        torch.rand(1, 1, 16, 16, 16), affine=torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    )
    with volcam.CamEngine(net, "features.2") as engine:
        via_meta = engine.explain(x, "gradcam", gradient_sigma_mm=1.5)
        explicit = engine.explain(x.as_tensor(), "gradcam", gradient_sigma_mm=1.5, spacing=(0.7, 0.7, 2.5))
    assert torch.allclose(via_meta.map.as_tensor(), explicit.map)


def test_bad_gradient_sigma_is_a_volcam_error():
    net = GapNet(3).eval()
    with pytest.raises(volcam.MethodError, match="gradient_sigma_mm"):
        volcam.explain(net, torch.rand(1, 1, 8, 8, 8), "gradcam", layer="features.2", gradient_sigma_mm=(1.0, 2.0))
