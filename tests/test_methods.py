"""The CAM formulas as pure functions, and the registry."""

from __future__ import annotations

import pytest
import torch

import volcam
from volcam.methods import (
    cam,
    gradcam,
    gradcampp,
    gradcampp_from_moments,
    hirescam,
    layercam,
    layercam_fuse,
    xgradcam,
)
from volcam.methods.base import LayerCapture, channel_weighted_sum
from volcam.methods.registry import MethodInfo, get_method, register

GRADIENT_METHODS = [gradcam, gradcampp, xgradcam, hirescam, layercam]


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
@pytest.mark.parametrize("fn", GRADIENT_METHODS)
def test_gradient_methods_are_dimension_agnostic(fn, spatial):
    a, g = torch.rand(2, 6, *spatial), torch.randn(2, 6, *spatial)
    out = fn(a, g)
    assert out.shape == (2, 1, *spatial)
    assert (out >= 0).all()


@pytest.mark.parametrize("fn", GRADIENT_METHODS)
def test_zero_gradients_give_zero_maps_without_nan(fn):
    a = torch.rand(1, 4, 3, 3, 3)
    out = fn(a, torch.zeros_like(a))
    assert torch.isfinite(out).all()
    assert (out == 0).all()


def test_gradcam_by_hand():
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    g = torch.tensor([[[[1.0, 3.0]], [[-1.0, -1.0]]]])  # channel means 2 and -1
    expected = torch.relu(2 * a[:, 0] - 1 * a[:, 1])[:, None]  # [-1, 4] -> [0, 4]
    assert torch.equal(gradcam(a, g), expected)


def test_gradcampp_by_hand_and_zero_alpha_where_gradient_vanishes():
    a = torch.tensor([[[[1.0, 3.0]]]])  # (1, 1, 1, 2), sum A = 4
    g = torch.tensor([[[[0.5, 0.0]]]])
    alpha = 0.25 / (2 * 0.25 + 4 * 0.125)  # a(v) = g² / (2g² + ΣA·g³) at the first position, 0 at the second
    w = alpha * 0.5
    assert torch.allclose(gradcampp(a, g), w * a)


def test_channel_weighted_sum_matches_broadcast():
    a, w = torch.randn(3, 5, 4, 4, 2), torch.randn(3, 5)
    assert torch.allclose(channel_weighted_sum(w, a), (w[:, :, None, None, None] * a).sum(1, keepdim=True), atol=1e-5)


def test_smooth_gradcampp_moments_of_one_gradient_equal_gradcampp():
    a, g = torch.rand(2, 8, 3, 4, 5), torch.randn(2, 8, 3, 4, 5)
    assert torch.allclose(gradcampp_from_moments(a, g, g**2, g**3), gradcampp(a, g))


def test_hirescam_is_elementwise_and_xgradcam_reduces_to_gradcam_for_constant_gradients():
    a = torch.rand(1, 4, 3, 3)
    g = torch.randn(1, 4, 1, 1).expand(1, 4, 3, 3)  # what a GAP + linear head gives
    ref = gradcam(a, g)
    assert torch.allclose(hirescam(a, g), ref, atol=1e-6)  # mean_v g = g when g is constant
    assert torch.allclose(xgradcam(a, g), ref, atol=1e-5)


def test_layercam_keeps_positive_gradients_only():
    a = torch.ones(1, 2, 2, 2)
    g = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]], [[-5.0, -5.0], [-5.0, -5.0]]]])
    assert torch.equal(layercam(a, g), torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]]))


def test_layercam_fuse_lifts_weak_layers_and_takes_the_max():
    strong = torch.zeros(1, 1, 4, 4)
    strong[..., 0, 0] = 10.0
    weak = torch.zeros(1, 1, 4, 4)
    weak[..., 3, 3] = 0.01
    fused = layercam_fuse([strong, weak])
    assert fused[..., 0, 0] == pytest.approx(fused[..., 3, 3].item())  # both scaled to tanh(2)
    assert fused[..., 0, 0] == pytest.approx(torch.tanh(torch.tensor(2.0)).item(), rel=1e-5)


def test_cam_uses_the_class_row():
    a = torch.rand(2, 3, 4, 4, 4)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    out = cam(a, w)
    assert torch.allclose(out[0, 0], a[0, 0]) and torch.allclose(out[1, 0], 2 * a[1, 2])


def test_registry_lists_every_method_with_what_it_needs():
    names = [m.name for m in volcam.methods()]
    assert names[:7] == ["cam", "gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "hirescam", "layercam"]
    assert {"scorecam", "ablationcam", "occlusion"} <= set(names)
    assert {"eigencam", "eigengradcam", "kpcacam", "cfcam"} <= set(names)
    assert not get_method("eigencam").needs_gradients and not get_method("kpcacam").needs_gradients
    assert get_method("eigengradcam").needs_gradients and get_method("cfcam").needs_gradients
    assert len(set(names)) == len(names)
    assert not get_method("cam").needs_gradients
    assert get_method("GradCAM").needs_gradients  # case-insensitive
    assert get_method("smoothgradcam++").options["n_samples"] == 8


def test_unknown_method_is_a_clear_error():
    with pytest.raises(volcam.MethodError, match=r"unknown CAM method 'gradcan'.*gradcam"):
        get_method("gradcan")


def test_registering_twice_or_with_unknown_needs_fails():
    with pytest.raises(ValueError, match="registered already"):
        register(MethodInfo("gradcam", lambda c: c.activations, frozenset({"gradients"}), "1F+1B", "dup"))
    with pytest.raises(ValueError, match="unknown inputs"):
        register(MethodInfo("newcam", lambda c: c.activations, frozenset({"telepathy"}), "1F", "bad"))


def test_layer_capture_is_what_methods_read():
    a, g = torch.rand(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    assert torch.equal(get_method("gradcam").compute(LayerCapture("l", a, gradients=g)), gradcam(a, g))
