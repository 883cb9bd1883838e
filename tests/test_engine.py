"""CamEngine: what it captures, what it costs, and that it leaves the model as it found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import volcam
from conftest import GapNet, pearson
from volcam import CamEngine, ClassProbability, ClassTarget


def _reachable_leaves(t: torch.Tensor) -> tuple[set[int], set[str]]:
    """Ids of the leaf tensors and names of the autograd nodes reachable from ``t``'s graph."""
    leaves, kinds, stack, seen = set(), set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        kinds.add(type(node).__name__)
        if hasattr(node, "variable"):
            leaves.add(id(node.variable))
        stack.extend(n for n, _ in node.next_functions)
    return leaves, kinds


class CountingNet(nn.Module):
    """Wraps a model and counts its forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_autograd_starts_at_the_target_layer(resnet18_3d):
    x = torch.rand(1, 1, 32, 32, 32)
    with CamEngine(resnet18_3d, "layer4") as engine:
        fwd = engine.forward(x)
        leaves, kinds = _reachable_leaves(fwd.output)
    # the only leaf of the graph is A itself: no parameter, no earlier activation
    assert leaves == {id(fwd.activations["layer4"])}
    assert not any("Convolution" in k or "BatchNorm" in k for k in kinds), kinds
    assert fwd.activations["layer4"].is_leaf and fwd.activations["layer4"].requires_grad


def test_parameters_get_no_gradients(resnet18_3d):
    volcam.explain(resnet18_3d, torch.rand(1, 1, 32, 32, 32), "gradcam++", layer="layer3")
    assert all(p.grad is None for p in resnet18_3d.parameters())


def test_model_comes_back_unchanged():
    net = GapNet(3)
    net.train()
    net.features[0].eval()  # mixed modes must come back module by module
    net.fc.weight.requires_grad_(False)  # and a partly frozen model stays partly frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    with CamEngine(net, "features.3") as engine:  # the layer feeding the pooling, where CAM holds
        for method in ("gradcam", "cam", "smoothgradcam++"):
            opts = {"n_samples": 2} if method.startswith("smooth") else {}
            engine.explain(torch.rand(2, 1, 8, 8, 8), method, **opts)
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in net.modules())


def test_model_comes_back_unchanged_when_an_error_passes_through():
    net = GapNet(3).train()
    with pytest.raises(volcam.TargetError, match="out of range"):
        volcam.explain(net, torch.rand(1, 1, 8, 8, 8), "gradcam", target=7, layer="features.2")

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net.fc = nn.Sequential(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        volcam.explain(net, torch.rand(1, 1, 8, 8, 8), "gradcam", layer="features.2")
    assert all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert not any(m._forward_hooks for m in net.modules())
    assert torch.is_grad_enabled()


def test_in_place_relu_after_and_at_the_target_layer():
    net = GapNet(3).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    a_conv = volcam.explain(net, x, "gradcam", layer="features.2")  # followed by ReLU(inplace=True)
    a_relu = volcam.explain(net, x, "gradcam", layer="features.3")  # the in-place ReLU itself
    assert a_conv.map.shape == a_relu.map.shape == (1, 1, 8, 8, 8)
    assert torch.isfinite(a_conv.map).all() and a_conv.map.max() == pytest.approx(1.0, abs=1e-6)
    # A is the layer's own output: the in-place ReLU downstream did not clip it
    fwd = CamEngine(net, "features.2").forward(x)
    assert (fwd.activations["features.2"] < 0).any()


def test_one_forward_serves_several_methods_and_classes(resnet18_3d):
    net = CountingNet(resnet18_3d)
    x = torch.rand(1, 1, 32, 32, 32)
    with CamEngine(net, "inner.layer4") as engine:
        results = [engine.explain(x, m, target=c) for m in ("gradcam", "gradcam++", "cam") for c in (0, 1)]
        assert net.calls == 1
        x.mul_(2)  # an in-place change is a new input
        engine.explain(x, "gradcam")
        assert net.calls == 2
        engine.explain(x.clone(), "gradcam")
        assert net.calls == 3
    assert [r.classes.item() for r in results] == [0, 1] * 3


def test_methods_without_gradients_record_no_graph(resnet18_3d):
    """Eigen-CAM's forward leaves autograd off in the head; a gradient method after it runs the
    forward again with the graph, and a graph forward serves a later gradient-free method."""
    net = CountingNet(resnet18_3d)
    x = torch.rand(1, 1, 32, 32, 32)
    with CamEngine(net, "inner.layer4") as engine:
        eigen = engine.explain(x, "eigencam")
        assert net.calls == 1 and not engine.forward(x, graph=False).output.requires_grad
        grad = engine.explain(x, "gradcam")
        assert net.calls == 2 and engine.forward(x).output.requires_grad
        again = engine.explain(x, "eigencam")
        assert net.calls == 2  # the graph forward answers
    with CamEngine(resnet18_3d, "layer4") as fresh:
        assert torch.allclose(grad.map, fresh.explain(x, "gradcam").map, atol=1e-6)
    assert torch.allclose(eigen.map, again.map, atol=1e-6)


def test_mixed_class_batch_equals_each_sample_alone(resnet18_3d):
    x = torch.rand(3, 1, 32, 32, 32)
    classes = [1, 0, 1]
    with CamEngine(resnet18_3d, "layer4") as engine:
        batch = engine.explain(x, "gradcam++", target=classes)
    for i, c in enumerate(classes):
        alone = volcam.explain(resnet18_3d, x[i : i + 1], "gradcam++", target=c, layer="layer4")
        assert torch.allclose(batch.map[i], alone.map[0], atol=1e-5)
        assert torch.allclose(batch.raw[i], alone.raw[0], rtol=1e-4, atol=1e-7)


def test_all_classes_in_one_batched_backward_equal_one_backward_each():
    net = GapNet(3, num_classes=4).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    with CamEngine(net, "features.2") as engine:
        batched = engine.class_gradients(x)["features.2"]
        assert batched.shape == (4, 2, 16, 4, 4, 4)
        for c in range(4):
            assert torch.allclose(batched[c], engine.gradients(x, c)["features.2"], atol=1e-7)
        per_class = engine.explain_classes(x, "gradcam")
    assert [r.classes.tolist() for r in per_class] == [[c, c] for c in range(4)]
    for c, r in enumerate(per_class):
        assert torch.allclose(r.map, volcam.explain(net, x, "gradcam", target=c, layer="features.2").map, atol=1e-6)


def test_gap_linear_identity_cam_gradcam_hirescam_xgradcam_agree(gapnet3d):
    x = torch.rand(2, 1, 12, 12, 12)
    with CamEngine(gapnet3d, "features.3") as engine:
        maps = {m: engine.explain(x, m, target=[0, 2]).map for m in ("cam", "gradcam", "hirescam", "xgradcam")}
    for m in ("gradcam", "hirescam", "xgradcam"):
        assert torch.allclose(maps[m], maps["cam"], atol=1e-4), m


def test_auto_layer_is_the_last_spatial_layer_and_is_reported(resnet18_3d, caplog):
    from monai.networks.nets import DenseNet121

    with caplog.at_level("INFO", logger="volcam"):
        r = volcam.explain(resnet18_3d, torch.rand(1, 1, 32, 32, 32))
    assert r.layers == ("layer4",)
    assert "'layer4'" in caplog.text
    dense = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    assert CamEngine(dense).layers_for(torch.rand(1, 1, 64, 64, 64)) == ("class_layers.relu",)
    # at 32³ the last dense block has collapsed to 1 voxel: auto moves to the last layer with extent
    assert CamEngine(dense).layers_for(torch.rand(1, 1, 32, 32, 32)) != ("class_layers.relu",)


def test_auto_layer_on_a_segmentation_net_with_a_region_target():
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    mask = torch.zeros(16, 16, 16, dtype=torch.bool)
    mask[4:8, 4:8, 4:8] = True
    r = volcam.explain(net, x, "gradcam", target=volcam.RegionTarget(1, mask))
    assert r.map.shape == (1, 1, 16, 16, 16) and r.probabilities is None
    with torch.no_grad():
        expected = net(x)[0, 1][mask].sum()
    assert r.scores.item() == pytest.approx(expected.item(), rel=1e-5)
    leaves, _ = _reachable_leaves(CamEngine(net, r.layers).forward(x).output)
    assert len(leaves) == 1  # the region's score, too, is differentiated from the target layer only


def test_wrong_layer_name_lists_close_matches(resnet18_3d):
    with pytest.raises(volcam.LayerError, match=r"no layer 'layer5'.*layer4"):
        CamEngine(resnet18_3d, "layer5")
    with pytest.raises(volcam.LayerError, match=r"layer4\.1\.conv1"):
        CamEngine(resnet18_3d, "layer4.1.conv")


@pytest.mark.parametrize(
    ("dims", "shape"),
    [(1, (2, 1, 20)), (2, (2, 1, 16, 12)), (3, (2, 1, 8, 12, 10))],
)
def test_images_volumes_and_batches(dims, shape):
    net = GapNet(dims).eval()
    r = volcam.explain(net, torch.rand(*shape), "gradcam++", layer="features.2")
    assert r.map.shape == (shape[0], 1, *shape[2:])
    assert r.map.amin() >= 0 and r.map.amax() <= 1


def test_clip_input_is_normalised_over_the_whole_clip():
    net = GapNet(3, in_channels=1).eval()  # a spatio-temporal model: 3D convs over (T, H, W)
    clip = torch.rand(1, 1, 6, 16, 16)
    clip[:, :, :3] *= 0.01  # dim first half of the clip
    r = volcam.explain(net, clip, "layercam", layer="features.3")
    per_frame_max = r.map[0, 0].flatten(1).amax(1)
    assert r.map.max() == pytest.approx(1.0, abs=1e-6)
    assert (per_frame_max < 0.999).any()  # frames are not each stretched to 1


def test_zero_gradients_give_a_zero_map_not_nan():
    net = GapNet(3).eval()
    nn.init.zeros_(net.fc.weight)
    r = volcam.explain(net, torch.rand(1, 1, 8, 8, 8), "gradcam++", target=1, layer="features.2")
    assert torch.isfinite(r.map).all() and (r.map == 0).all()


def test_class_probability_target_and_single_logit_negative_class():
    net = GapNet(3, num_classes=1).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    with CamEngine(net, "features.2") as engine:
        g1 = engine.gradients(x, 1)["features.2"]
        g0 = engine.gradients(x, 0)["features.2"]
        assert torch.allclose(g0, -g1)  # class 0 of a single logit is -logit
        r = engine.explain(x, "gradcam", target=ClassProbability(1))
        logit = r.output[:, 0]
        assert torch.allclose(r.scores, torch.sigmoid(logit))
        assert r.probabilities.shape == (2, 2)
        assert torch.equal(r.predicted, (logit > 0).long())


def test_labels_name_targets_and_results():
    net = GapNet(3, num_classes=2).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    r = volcam.explain(net, x, "gradcam", target=["covid", "normal"], layer="features.2", labels=["normal", "covid"])
    assert r.classes.tolist() == [1, 0] and r.class_names() == ["covid", "normal"]
    with pytest.raises(volcam.TargetError, match="unknown class label 'flu'"):
        volcam.explain(net, x, "gradcam", target="flu", layer="features.2", labels=["normal", "covid"])
    with pytest.raises(volcam.TargetError, match="3 target classes were given for a batch of 2"):
        volcam.explain(net, x, "gradcam", target=[0, 1, 1], layer="features.2")


def test_metatensor_input_keeps_affine_and_metadata():
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-100.0, -120.0, 40.0], dtype=torch.float64)
    x = MetaTensor(torch.rand(1, 1, 8, 8, 8), affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    r = volcam.explain(GapNet(3).eval(), x, "gradcam", layer="features.2")
    assert isinstance(r.map, MetaTensor)
    assert torch.allclose(r.map.affine, affine)
    assert r.map.meta["filename_or_obj"] == "ct.nii.gz"


def test_input_and_option_mistakes_are_volcam_errors(gapnet3d):
    with pytest.raises(volcam.InputError, match=r"\(B, C, \*S\)"):
        volcam.explain(gapnet3d, torch.rand(8, 8, 8, 8, 8, 8))
    with pytest.raises(volcam.MethodError, match="'gradcam' does not take n_samples"):
        volcam.explain(gapnet3d, torch.rand(1, 1, 8, 8, 8), "gradcam", n_samples=3)
    with pytest.raises(volcam.MethodError, match="CAM needs"):
        volcam.explain(gapnet3d, torch.rand(1, 1, 8, 8, 8), "cam", layer="features.0")  # 8 channels, fc wants 16
    with pytest.raises(volcam.LayerError, match="not called"):
        net = GapNet(3)
        net.unused = nn.ReLU()
        volcam.explain(net, torch.rand(1, 1, 8, 8, 8), layer="unused")


def test_several_layers_layercam_fuses_by_max(resnet18_3d):
    x = torch.rand(1, 1, 32, 32, 32)
    with CamEngine(resnet18_3d, ["layer3", "layer4"]) as engine:
        fused = engine.explain(x, "layercam", target=1)
        fwd = engine.forward(x)
    assert fused.layers == ("layer3", "layer4") and fused.map.shape == (1, 1, 32, 32, 32)
    assert not fwd.activations["layer4"].is_leaf  # layer4 is downstream of layer3: one graph from layer3
    single = volcam.explain(resnet18_3d, x, "layercam", target=1, layer="layer4")
    assert pearson(fused.map, single.map) > 0.3


def test_smooth_gradcampp_without_noise_equals_gradcampp(resnet18_3d):
    # at layer3 the gradients depend on the input (at layer4 a GAP + linear head makes them constant)
    x = torch.rand(2, 1, 24, 24, 24)
    with CamEngine(resnet18_3d, "layer3") as engine:
        smooth = engine.explain(x, "smoothgradcam++", target=1, noise=0.0, n_samples=3, batch_size=2)
        plain = engine.explain(x, "gradcam++", target=1)
        noisy = engine.explain(x, "smoothgradcam++", target=1, n_samples=4, batch_size=4)
        again = engine.explain(x, "smoothgradcam++", target=1, n_samples=4, batch_size=4)
    assert torch.allclose(smooth.map, plain.map, atol=1e-5)
    assert not torch.allclose(noisy.map, plain.map, atol=1e-3)
    assert torch.equal(noisy.map, again.map)  # seeded: the same call gives the same map
    assert pearson(noisy.map, plain.map) > 0.5


def test_device_argument_and_timings(gapnet3d):
    r = volcam.explain(gapnet3d, torch.rand(1, 1, 8, 8, 8), layer="features.2", device="cpu")
    assert r.map.device.type == "cpu"
    assert set(r.timings) == {"forward", "backward", "method", "upsample"}


def test_class_target_equals_logit():
    logits = torch.tensor([[0.2, 1.5], [2.0, -1.0]])
    assert torch.equal(ClassTarget([1, 0])(logits), torch.tensor([1.5, 2.0]))
