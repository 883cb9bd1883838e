"""Agreement with the reference implementations: MONAI and TorchCAM on 3D networks.

Each reference gets its own model instance: MONAI's ``ModelWithHooks`` leaves full-backward hooks
on the model it wraps (and turns its in-place ReLUs off), which would change the model under test.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import volcam
from conftest import pearson


def _resnet18() -> nn.Module:
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    return resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()


def _densenet() -> nn.Module:
    """A small DenseNet-121-shaped net: dense blocks, in-place ReLU in the head, as MONAI builds it."""
    from monai.networks.nets import DenseNet

    torch.manual_seed(0)
    net = DenseNet(3, 1, 2, init_features=16, growth_rate=8, block_config=(2, 2, 2, 2))
    return net.eval()


CASES = [
    pytest.param(_resnet18, "layer4", 48, id="resnet18-3d"),
    pytest.param(_densenet, "class_layers.relu", 64, id="densenet-3d"),
]


def _case(build, size):
    net = build()
    torch.manual_seed(1)
    x = torch.rand(1, 1, size, size, size)
    with torch.no_grad():
        cls = int(net(x).argmax(1))  # the predicted class: its map is not degenerate
    return net, x, cls


@pytest.mark.parametrize(("build", "layer", "size"), CASES)
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_agrees_with_monai(build, layer, size, method):
    from monai.visualize import GradCAM, GradCAMpp

    net, x, cls = _case(build, size)
    ours = volcam.explain(net, x, method, target=cls, layer=layer)
    reference = {"gradcam": GradCAM, "gradcam++": GradCAMpp}[method]
    # the same normalisation: MONAI's default one flips the map (max -> 0), so take its raw map
    theirs = reference(copy.deepcopy(net), target_layers=layer, postprocessing=volcam.maps.geometry.normalize)(
        x, class_idx=cls
    )
    assert ours.map.max() == 1.0
    assert pearson(ours.map, theirs) > 0.999


@pytest.mark.parametrize(("build", "layer", "size"), CASES)
@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "layercam"])
def test_agrees_with_torchcam(build, layer, size, method):
    from torchcam import methods as tc

    net, x, cls = _case(build, size)
    ours = volcam.explain(net, x, method, target=cls, layer=layer)
    extractor_cls = {"gradcam": tc.GradCAM, "xgradcam": tc.XGradCAM, "layercam": tc.LayerCAM}[method]
    twin = copy.deepcopy(net)
    with extractor_cls(twin, target_layer=layer, input_shape=tuple(x.shape[1:])) as extractor:
        scores = twin(x)
        low = extractor(cls, scores)[0][:, None]
    theirs = F.interpolate(low, size=x.shape[2:], mode="trilinear", align_corners=False)
    assert pearson(ours.raw, low) > 0.999
    assert pearson(ours.map, theirs) > 0.999


def test_gradcampp_differs_from_torchcam_where_torchcam_skips_the_alpha_division():
    """TorchCAM 0.5's GradCAMpp divides ``alpha[mask]``, a copy, in place, so its alpha stays g²;
    volcam follows the paper (and MONAI). This pins the known difference rather than hiding it."""
    from torchcam.methods import GradCAMpp

    net, x, cls = _case(_resnet18, 48)
    ours = volcam.explain(net, x, "gradcam++", target=cls, layer="layer4")
    twin = copy.deepcopy(net)
    with GradCAMpp(twin, target_layer="layer4", input_shape=tuple(x.shape[1:])) as extractor:
        low = extractor(cls, twin(x))[0][:, None]
    a = volcam.CamEngine(net, "layer4").forward(x).activations["layer4"].detach()
    g = volcam.CamEngine(net, "layer4").gradients(x, cls)["layer4"]
    torchcam_formula = torch.relu(((g**2) * torch.relu(g)).flatten(2).sum(-1)[..., None, None, None].mul(a).sum(1))
    assert pearson(low, torchcam_formula) > 0.999
    assert pearson(ours.raw, low) < 0.999


def test_cam_equals_monai_cam_without_bias_and_negative_part():
    from monai.visualize import CAM

    net, x, cls = _case(_resnet18, 48)
    ours = volcam.explain(net, x, "cam", target=cls, layer="layer4")
    # MONAI's CAM evaluates the whole linear layer per position, bias included, and keeps negative
    # evidence; volcam's is ReLU(sum_k w_k A_k), the evidence for the class
    monai_raw = CAM(copy.deepcopy(net), target_layers="layer4", fc_layers="fc").compute_map(
        x, class_idx=torch.tensor([cls])
    )
    assert torch.allclose(torch.relu(monai_raw - net.fc.bias[cls].detach()), ours.raw, atol=1e-5)
