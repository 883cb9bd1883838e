"""Which layer is explained: shared modules (call=), segmentation nets (before the projection to the classes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import volcam
from conftest import pearson
from volcam.engine.layers import LayerRecord, pick_auto_layer
from volcam.engine.tokens import Layout
from volcam.errors import LayerError
from volcam.targets import RegionTarget

# -- modules that run more than once -----------------------------------------------------------------------


class SharedAct(nn.Module):
    """Two conv stages sharing one activation module (as EfficientNet's ``_swish``), GAP + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 6, 3, stride=2, padding=1)
        self.act = nn.Softplus()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3, 4)))


class SplitAct(SharedAct):
    """The same network with one activation module per stage: the reference for each call."""

    def __init__(self) -> None:
        super().__init__()
        self.act1, self.act2 = nn.Softplus(), nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).mean((2, 3, 4)))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "scorecam", "ablationcam", "eigencam", "layercam"])
def test_every_method_sees_the_call_it_was_given(method):
    torch.manual_seed(0)
    shared = SharedAct().eval()
    split = SplitAct().eval()
    split.load_state_dict(shared.state_dict(), strict=False)
    x = torch.rand(2, 1, 8, 8, 8)
    for call, twin in ((0, "act1"), (1, "act2"), (-1, "act2")):
        got = volcam.explain(shared, x, method, [0, 2], "act", call=call)
        want = volcam.explain(split, x, method, [0, 2], twin)
        torch.testing.assert_close(got.raw, want.raw, rtol=1e-4, atol=1e-6)


def test_naming_a_shared_module_without_call_is_one_error():
    with pytest.raises(LayerError, match=r"'act' runs 2 times per forward.*pass call=") as err:
        volcam.explain(SharedAct().eval(), torch.rand(1, 1, 8, 8, 8), layer="act")
    assert "\n" not in str(err.value)
    with pytest.raises(LayerError, match="call=2"):
        volcam.explain(SharedAct().eval(), torch.rand(1, 1, 8, 8, 8), layer="act", call=2)


def test_efficientnet_shared_swish_is_never_auto_and_call_picks_the_head():
    from monai.networks.nets import EfficientNetBN

    torch.manual_seed(0)
    net = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=1, num_classes=2).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    with volcam.CamEngine(net) as engine:
        assert engine.layers_for(x) == ("_bn1",)  # the head's norm: _swish after it also ran on the stem
        with pytest.raises(LayerError, match="_swish' runs 2 times"):
            volcam.CamEngine(net, "_swish").forward(x)
    with volcam.CamEngine(net, "_swish", call=-1) as engine:
        a = engine.forward(x).activations["_swish"].detach()
        result = engine.explain(x, "gradcam")
    with volcam.CamEngine(net, "_bn1") as engine:
        head_norm = engine.forward(x).activations["_bn1"].detach()
    torch.testing.assert_close(a, nn.functional.silu(head_norm))  # the head's call, not the stem's
    assert torch.isfinite(result.map).all() and result.map.shape == x.shape


# -- segmentation nets: never the logits -------------------------------------------------------------------


def _segmentation_nets() -> dict[str, tuple[nn.Module, str, int]]:
    from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet

    torch.manual_seed(0)
    return {
        # name: (network, the layer auto must pick, input size)
        "UNet": (UNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1), "model.1", 16),
        "UNet-no-res": (UNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=0), "model.1", 16),
        "SegResNet": (SegResNet(3, init_filters=8, in_channels=1, out_channels=3), "act_mod", 16),
        "BasicUNet": (BasicUNet(3, 1, 3, features=(4, 4, 8, 8, 16, 4)), "upcat_1", 32),
        "DynUNet": (
            DynUNet(3, 1, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2]),
            "skip_layers",
            16,
        ),
    }


@pytest.mark.parametrize("name", ["UNet", "UNet-no-res", "SegResNet", "BasicUNet", "DynUNet"])
def test_segmentation_nets_are_explained_before_their_projection_to_the_classes(name):
    net, expected, size = _segmentation_nets()[name]
    net = net.eval()
    x = torch.rand(1, 1, size, size, size)
    with torch.no_grad():
        logits = net(x)
    region = torch.zeros(size, size, size, dtype=torch.bool)
    region[size // 4 : size // 2, size // 4 : size // 2, size // 4 : size // 2] = True
    target = RegionTarget(1, region)
    with volcam.CamEngine(net, progress=False) as engine:
        assert engine.layers_for(x) == (expected,)
        for method in ("gradcam", "hirescam", "eigencam"):
            result = engine.explain(x, method, target)
            assert torch.isfinite(result.map).all() and result.map.shape == x.shape
    # the explanation is not the network's own output channel again (r = 1.000 at the logits layer)
    with volcam.CamEngine(net, "auto") as engine:
        hires = engine.explain(x, "hirescam", target, normalize=False).map
    assert abs(pearson(hires, logits[:, 1:2])) < 0.95


# -- the rule itself ---------------------------------------------------------------------------------------


def _record(name: str, shape: tuple[int, ...], **kw) -> LayerRecord:
    grid = Layout("grid", shape[2:], shape[1]) if len(shape) == 5 else None
    return LayerRecord(name, shape, kw.pop("is_output", False), kw.pop("layout", grid), **kw)


def test_auto_skips_a_module_that_runs_twice():
    records = [
        _record("conv1", (1, 4, 8, 8, 8)),
        _record("act", (1, 4, 8, 8, 8)),
        _record("conv2", (1, 8, 4, 4, 4)),
        _record("act", (1, 8, 4, 4, 4)),
        _record("fc", (1, 2)),
    ]
    assert pick_auto_layer(records, (1, 2)) == "conv2"


def test_auto_on_a_segmentation_net_stops_before_the_last_pointwise_projection():
    records = [
        _record("decoder", (1, 8, 16, 16, 16)),
        _record("head.norm", (1, 8, 16, 16, 16)),
        _record("head.conv", (1, 3, 16, 16, 16), pointwise=True),
        _record("head", (1, 3, 16, 16, 16), is_output=True),
        _record("softmax", (1, 3, 16, 16, 16)),  # computed after the output was made: still not chosen
    ]
    assert pick_auto_layer(records, (1, 3, 16, 16, 16)) == "head.norm"
