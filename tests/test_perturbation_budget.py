"""Bounded perturbation cost: Score-CAM's channel budget, and occlusion maps that keep the sign of the evidence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import volcam
from volcam import CamEngine
from volcam.maps.geometry import upsample
from volcam.methods.registry import get_method


class Wide(nn.Module):
    """A 3D layer of ``channels`` channels (some constant), GAP and a linear head; counts the rows it runs."""

    def __init__(self, channels: int, constant: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[:constant] = 0  # constant channels: nothing to mask with
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels, 2)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.fc(self.act(self.conv(x)).mean((2, 3, 4)))


def test_scorecam_masks_at_most_max_channels_and_reports_them():
    net = Wide(2048).eval()
    x = torch.rand(1, 1, 4, 4, 4)
    with CamEngine(net, "act", progress=False, batch_size=64) as engine:
        result = engine.explain(x, "scorecam")  # the default budget
        assert net.rows == 1 + 128  # the cached forward, then one masked forward per chosen channel
        assert result.details == {"channels": 128, "channels_of": 2048, "forwards": 128}
        assert get_method("scorecam").options["max_channels"] == 128
        net.rows = 0
        few = engine.explain(x, "scorecam", max_channels=10)
        assert net.rows == 10 and few.details["channels"] == 10  # the forward is cached
    assert torch.isfinite(result.map).all() and result.map.max() == 1


def test_scorecam_keeps_the_channels_of_highest_variance():
    net = Wide(24, constant=3).eval()
    x = torch.rand(2, 1, 5, 5, 5)
    with CamEngine(net, "act", progress=False, batch_size=8) as engine:
        everything = engine.explain(x, "scorecam", max_channels=None)
        assert everything.details == {"channels": 21, "channels_of": 24, "forwards": 42}  # constant ones skipped
        top = engine.explain(x, "scorecam", target=[0, 1], max_channels=5)
        a = engine.forward(x).activations["act"].detach()
    # by hand: per sample, the five channels of largest spatial variance mask the input; each is
    # weighted by the class probability of its masked input, the others by 0
    expected = []
    for i, c in enumerate([0, 1]):
        chosen = a[i].flatten(1).var(1, unbiased=False).topk(5).indices
        masks = upsample(a[i, chosen][:, None], x.shape[2:])
        low = masks.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
        high = masks.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            p = torch.softmax(net(x[i : i + 1] * (masks - low) / (high - low)), 1)[:, c]
        expected.append(F.relu((p.view(-1, 1, 1, 1) * a[i, chosen]).sum(0)))
    assert torch.allclose(top.raw[:, 0], torch.stack(expected), rtol=1e-4, atol=1e-6)
    assert top.details["channels"] == 5 and top.details["forwards"] == 10


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "all"])
def test_scorecam_max_channels_must_be_a_count(bad):
    with pytest.raises(volcam.MethodError, match="max_channels"):
        volcam.explain(Wide(8).eval(), torch.rand(1, 1, 4, 4, 4), "scorecam", layer="act", max_channels=bad)


class Box(nn.Module):
    """Class 1's logit is ``sum(x in box A) - sum(x everywhere else)``: hiding A lowers it, hiding any
    other voxel raises it. ``helpful=False``: the box counts against the class too (every occlusion helps)."""

    def __init__(self, helpful: bool = True) -> None:
        super().__init__()
        self.stem = nn.Identity()
        self.helpful = helpful

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        box = x[:, 0, 4:8, 4:8, 4:8].flatten(1).sum(1)
        rest = x.flatten(1).sum(1) - box
        score = (box if self.helpful else -box) - rest
        return torch.stack([-score, score], dim=1)


def test_occlusion_where_every_patch_raises_the_score_has_no_hot_spot():
    x = torch.rand(1, 1, 12, 12, 12) + 0.5
    result = volcam.explain(Box(helpful=False), x, "occlusion", target=1, patch_mm=2, baseline="zero")
    assert result.map.abs().max() == 0 and result.raw.abs().max() == 0  # no "hottest" voxel
    assert result.warnings == ("occlusion: the map of class '1' is all zero: nothing there is evidence for the class",)


def test_occlusion_keeps_evidence_for_the_class_and_clips_evidence_against_it():
    from volcam.methods.perturbation import occlusion_drops

    x = torch.rand(1, 1, 12, 12, 12) + 0.5
    net = Box(helpful=True)
    with CamEngine(net, progress=False) as engine:
        result = engine.explain(x, "occlusion", target=1, patch_mm=2, stride_mm=2, baseline="zero")
        signed = occlusion_drops(engine.runner(x, 1), (1.0, 1.0, 1.0), 2, 2, "zero", None, 128)
    inside = torch.zeros(12, 12, 12, dtype=torch.bool)
    inside[4:8, 4:8, 4:8] = True
    # non-overlapping 2-voxel tiles: each voxel's drop is its tile's sum, + inside the box, - outside
    tiles = F.avg_pool3d(x, 2) * 8
    expected = F.interpolate(tiles, scale_factor=2, mode="nearest")[0, 0]
    expected = torch.where(inside, expected, -expected)
    assert torch.allclose(signed[0, 0], expected, rtol=1e-4, atol=1e-3)  # differences of sums near 1000
    assert torch.allclose(result.raw[0, 0], expected.clamp_min(0), rtol=1e-4, atol=1e-3)
    assert (result.map[0, 0][~inside] == 0).all() and result.map[0, 0][inside].min() > 0
    assert result.warnings == ()
