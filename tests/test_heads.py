"""Heads checked, not assumed: CAM verifies logits = W·GAP(A) + b, and a map that shows nothing says so."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import volcam
from conftest import GapNet, SwinClassifier
from volcam import CamEngine
from volcam import sample_data as sd


class SwinLike(nn.Module):
    """A stage, then a LayerNorm over channels at each position (channels-last, as Swin does), GAP, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = nn.Sequential(nn.Conv3d(1, 16, 3, padding=1), nn.GELU(), nn.Conv3d(16, 16, 3, stride=2, padding=1))
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm(self.stage(x).movedim(1, -1)).movedim(-1, 1)
        return self.fc(a.mean((2, 3, 4)))


def test_cam_on_a_resnet_is_accepted_and_is_the_linear_rows_times_the_layer():
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with CamEngine(net, "layer4", progress=False) as engine:
        result = engine.explain(x, "cam", target=[0, 1])
        a = engine.forward(x).activations["layer4"].detach()
    expected = F.relu(torch.einsum("bk,bk...->b...", net.fc.weight.detach()[[0, 1]], a))[:, None]
    assert torch.allclose(result.raw, expected, rtol=1e-5, atol=1e-6)
    assert result.warnings == () and result.map.shape == (2, 1, 32, 32, 32)


def test_cam_is_refused_where_something_sits_between_the_layer_and_the_pooling():
    net = GapNet(3).eval()  # features.2 is a convolution, its ReLU (features.3) comes before the pooling
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(volcam.MethodError) as refused:
        volcam.explain(net, x, "cam", layer="features.2")
    message = str(refused.value)
    assert "\n" not in message and "'features.2'" in message and "ReLU 'features.3'" in message
    assert volcam.explain(net, x, "cam", layer="features.3").warnings == ()  # the layer feeding the pooling

    with pytest.raises(volcam.MethodError, match=r"LayerNorm 'norm' between layer 'stage' and the pooling"):
        volcam.explain(SwinLike().eval(), x, "cam", layer="stage")


def test_a_swin_encoder_with_a_linear_head_is_refused_for_cam_and_hirescam_says_its_map_is_zero():
    torch.manual_seed(0)
    net = SwinClassifier(embed_dim=12).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with CamEngine(net, "encoder.layers4.0", progress=False) as engine:
        with pytest.raises(volcam.MethodError) as refused:
            engine.explain(x, "cam")
        assert "'encoder.layers4.0'" in str(refused.value) and "\n" not in str(refused.value)
        hires = engine.explain(x, "hirescam")
        gradcam = engine.explain(x, "gradcam")
    (line,) = hires.warnings
    assert line.startswith("hirescam: the map of class ") and "at layer 'encoder.layers4.0' is all zero" in line
    assert "LayerNorm" in line and "\n" not in line
    assert hires.map.abs().max() == 0 and hires.raw.abs().max() == 0  # the picture agrees with the warning
    assert gradcam.warnings == () and gradcam.map.max() == 1  # the layer's scale-free evidence is still there


def test_hirescam_after_a_layernorm_is_zero_up_to_rounding_and_says_so():
    torch.manual_seed(0)
    net = SwinLike().eval()
    x = 50 * torch.rand(2, 1, 12, 12, 12)  # activations well above LayerNorm's eps: only rounding is left
    with CamEngine(net, "stage", progress=False) as engine:
        hires = engine.explain(x, "hirescam", target=[0, 2])
        assert engine.forward(x).activations["stage"].abs().max() > 1
    assert len(hires.warnings) == 2 and all("gradient × activation cancels" in w for w in hires.warnings)
    assert "(sample 1)" in hires.warnings[1] and "class '2'" in hires.warnings[1]
    assert hires.map.abs().max() == 0


NOTHING = "nothing there is evidence for the class"


def test_a_healthy_map_has_no_warning_and_an_all_zero_one_says_so():
    torch.manual_seed(0)
    net = GapNet(3).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    for method in ("cam", "gradcam", "hirescam", "layercam", "scorecam"):
        assert volcam.explain(net, x, method, target=1, layer="features.3").warnings == (), method
    with torch.no_grad():
        net.fc.weight[1] = -net.fc.weight[1].abs()  # every non-negative activation counts against class 1
    for method in ("cam", "gradcam", "hirescam"):
        result = volcam.explain(net, x, method, target=1, layer="features.3", labels=["a", "b", "c"])
        (line,) = result.warnings
        assert line == f"{method}: the map of class 'b' at layer 'features.3' is all zero: " + NOTHING
        assert result.map.abs().max() == 0
    assert volcam.explain(net, x, "gradcam", target=lambda out: -out[:, 1]).warnings == ()


def negative_head_card(tmp_path):
    """The demo CT card with the linear head's rows made non-positive: every map of the Grad-CAM family
    (and CAM) at the layer feeding the pooling is all zero, for either class."""
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    state = torch.load(sd.file("ct_covid.pt"), weights_only=True)
    state["fc.weight"] = -state["fc.weight"].abs()
    torch.save(state, tmp_path / "negative.pt")
    card.update(weights="negative.pt", name="negative-head", layer="layer4")
    (tmp_path / "negative.card.json").write_text(json.dumps(card))
    return tmp_path / "negative.card.json"


def test_volcam_explain_prints_one_warning_line_per_empty_map(tmp_path):
    from typer.testing import CliRunner

    from volcam.cli import app

    card = negative_head_card(tmp_path)
    args = ["explain", sd.file(sd.CT_NIFTI), "--model", card, "--method", "cam", "--method", "gradcam"]
    done = CliRunner().invoke(app, [str(a) for a in [*args, "--out", tmp_path / "out"]])
    assert done.exit_code == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("volcam: warning: ")]
    assert [w.split(": ")[2] for w in warnings] == ["cam", "gradcam"]
    assert all("at layer 'layer4' is all zero" in w for w in warnings)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [len(e["warnings"]) for e in summary["explanations"]] == [1, 1]

    healthy = CliRunner().invoke(app, [str(a) for a in [*args[:3], sd.file(sd.CT_CARD), "--out", tmp_path / "ok"]])
    assert healthy.exit_code == 0 and "warning" not in healthy.stderr


def test_the_dock_shows_the_warning_in_its_status(tmp_path):
    from napari_volcam._controller import DockController, ScanImage
    from napari_volcam._sample_data import demo_ct

    scan, _ = demo_ct()
    image = ScanImage.of(scan)
    c = DockController()
    c.card_for(image)
    c.card = str(negative_head_card(tmp_path))
    job = c.start(image, ["gradcam"])
    assert job is not None
    shown = [s for s in (c.accept(job, r) for r in c.run(job)) if s is not None]
    c.finish()
    assert c.last_error == "" and len(shown) == 1
    assert "warning: gradcam: the map of class" in shown[0].status and "is all zero" in shown[0].status
    assert shown[0].layer.metadata["volcam"]["warnings"] == list(c.last_explanation.warnings)
