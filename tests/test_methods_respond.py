"""Respond-CAM (Zhao et al., MICCAI 2018): the formula on random tensors, and end to end on 3D models."""

from __future__ import annotations

import pytest
import torch

import volcam
from conftest import GapNet
from volcam.methods import respondcam, xgradcam


def _by_hand(a: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum_k w_k A_k``, ``w_k = sum_v g_k A_k / (sum_v A_k + eps)``, written out per sample and channel."""
    a, g = a.double(), g.double()
    out = torch.zeros(a.shape[0], 1, *a.shape[2:], dtype=torch.float64)
    for b in range(a.shape[0]):
        for k in range(a.shape[1]):
            w = (g[b, k] * a[b, k]).sum() / (a[b, k].sum() + eps)
            out[b, 0] += w * a[b, k]
    return out


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
def test_the_formula_on_random_tensors(spatial):
    torch.manual_seed(0)
    a, g = torch.rand(2, 6, *spatial), torch.randn(2, 6, *spatial)
    got = respondcam(a, g)
    assert got.shape == (2, 1, *spatial)
    torch.testing.assert_close(got.double(), _by_hand(a, g, 1e-7), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(respondcam(a, g, eps=0.5).double(), _by_hand(a, g, 0.5), rtol=1e-5, atol=1e-6)
    # signed, as in the paper: no ReLU; with one it is XGrad-CAM (the same weights)
    assert (got < 0).any() and (got > 0).any()
    torch.testing.assert_close(torch.relu(got), xgradcam(a, g))


def test_zero_gradients_give_a_zero_map_without_nan():
    a = torch.rand(1, 4, 3, 3, 3)
    out = respondcam(a, torch.zeros_like(a))
    assert torch.isfinite(out).all() and (out == 0).all()


def _activations_and_gradients(net: torch.nn.Module, x: torch.Tensor, layer: str, klass: int):
    """The layer's output and d logit / d output by plain autograd (a forward hook and retain_grad)."""
    kept = {}

    def hook(_m, _i, out):
        out = out.clone()  # the next module's in-place ReLU must not overwrite what is kept
        out.retain_grad()
        kept["a"] = out
        return out

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = net(x)
        logits[:, klass].sum().backward()
    finally:
        handle.remove()
    net.zero_grad()
    return kept["a"].detach(), kept["a"].grad, logits.detach()


def test_end_to_end_on_a_3d_cnn_equals_the_formula_and_sums_to_the_score():
    torch.manual_seed(0)
    net = GapNet(3, width=6).eval()
    x = torch.rand(2, 1, 12, 10, 8)
    result = volcam.explain(net, x, "respondcam", target=1, layer="features.3")
    a, g, logits = _activations_and_gradients(net, x, "features.3", 1)
    expected = _by_hand(a, g, 1e-7)
    assert result.raw.shape == (2, 1, 6, 5, 4)
    torch.testing.assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-6)
    # a GAP + linear head: the map sums to the logit less the bias (the paper's sum-to-score property)
    total = result.raw.flatten(1).sum(1).double()
    torch.testing.assert_close(total, (logits[:, 1] - net.fc.bias[1]).double().detach(), rtol=1e-4, atol=1e-5)
    # volcam's maps lie in [0, 1]: the min-max scaling puts the strongest negative evidence at 0
    m = result.map
    assert m.shape == (2, 1, 12, 10, 8) and float(m.amin()) == 0.0 and float(m.amax()) == 1.0


def test_end_to_end_on_a_monai_resnet_through_the_api():
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    result = volcam.explain(net, x, "respondcam", target=0, layer="layer4")
    a, g, _ = _activations_and_gradients(net, x, "layer4", 0)
    torch.testing.assert_close(result.raw.double(), _by_hand(a, g, 1e-7), rtol=1e-4, atol=1e-6)
    assert result.map.shape == x.shape and torch.isfinite(result.map).all()
    assert all(p.requires_grad for p in net.parameters()) and not net.training


def test_registered_as_a_gradient_method():
    info = volcam.methods.get_method("respondcam")
    assert info.needs == frozenset({"gradients"}) and info.passes == "1F+1B" and info.gradient_terms
    assert "respondcam" in [m.name for m in volcam.methods()]
