"""Perturbation methods: Score-CAM, Ablation-CAM and occlusion, against references and by design."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import volcam
from conftest import GapNet, pearson
from volcam import CamEngine
from volcam.engine.head import check_head, extract_head
from volcam.methods.perturbation import occlusion_patches


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.inner(x)


def test_scorecam_agrees_with_torchcam_and_skips_constant_channels():
    from torchcam.methods import ScoreCAM

    net = GapNet(3, width=6).eval()
    with torch.no_grad():  # three channels of the target layer are constant (zero after ReLU)
        net.features[2].weight[:3] = 0
        net.features[2].bias[:3] = 0
    x = torch.rand(1, 1, 12, 12, 12)
    counted = Counting(net)
    with CamEngine(counted, "inner.features.3", progress=False) as engine:
        ours = engine.explain(x, "scorecam", target=1, weights="increase", batch_size=4)
    assert counted.rows == 1 + (12 - 3)  # the cached forward, then one masked forward per varying channel
    twin = copy.deepcopy(net)
    with ScoreCAM(twin, target_layer="features.3", input_shape=(1, 12, 12, 12), batch_size=4) as extractor:
        low = extractor(1, twin(x))[0][:, None]
    assert pearson(ours.raw, low) > 0.999


def test_scorecam_probability_weights_and_a_mixed_batch():
    net = GapNet(3, width=4).eval()
    x = torch.rand(2, 1, 10, 10, 10)
    with CamEngine(net, "features.3", progress=False) as engine:
        batch = engine.explain(x, "scorecam", target=[0, 2], batch_size=3)
    for i, c in enumerate([0, 2]):
        alone = volcam.explain(net, x[i : i + 1], "scorecam", target=c, layer="features.3")
        assert torch.allclose(batch.raw[i], alone.raw[0], atol=1e-5)


def test_ablationcam_runs_the_head_only_and_equals_the_full_model_path():
    net = GapNet(3, width=4).eval()
    x = torch.rand(2, 1, 10, 10, 10)
    counted = Counting(net)
    with CamEngine(counted, "inner.features.2", progress=False) as engine:
        fast = engine.explain(x, "ablationcam", target=[1, 2])
        assert counted.rows == 2  # the cached forward only: K head passes, no full forward
        engine._heads["inner.features.2"] = None  # force the whole-model path
        slow = engine.explain(x, "ablationcam", target=[1, 2], batch_size=3)
    assert counted.rows == 2 + 2 * 8
    assert torch.allclose(fast.raw, slow.raw, atol=1e-5)
    # by hand: zeroing channel k changes the logit by w_k^c mean(A_k)
    a = CamEngine(net, "features.2").forward(x).activations["features.2"].detach()
    pooled = torch.relu(a).mean((2, 3, 4))
    w = net.fc.weight[[1, 2]] * pooled
    y = net(x).detach()[[0, 1], [1, 2]]
    expected = torch.relu(((w / y[:, None])[:, :, None, None, None] * a).sum(1, keepdim=True))
    assert torch.allclose(fast.raw, expected, rtol=1e-4, atol=1e-6)


def test_head_extraction_on_monai_networks():
    from monai.networks.nets import UNet, resnet18

    net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    fwd = CamEngine(net, "layer4").forward(x)
    head = extract_head(net, "layer4")
    assert head is not None and check_head(head, fwd.activations["layer4"].detach(), fwd.output.detach())
    assert extract_head(net, "layer3.1.conv1") is None  # the block's skip connection crosses the cut
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    assert extract_head(unet, "model.1.submodule.0") is None


def test_occlusion_agrees_with_monai_occlusion_sensitivity():
    from monai.networks.nets import DenseNet
    from monai.visualize import OcclusionSensitivity

    net = DenseNet(3, 1, 3, init_features=8, growth_rate=4, block_config=(2, 2)).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    cls = int(net(x).argmax())
    ours = volcam.explain(net, x, "occlusion", target=cls, patch_mm=8, stride_mm=4, baseline="mean")
    monai_occ = OcclusionSensitivity(
        copy.deepcopy(net), mask_size=8, n_batch=8, mode="mean_img", overlap=0.5, activate=False, verbose=False
    )
    theirs, _ = monai_occ(x)
    with torch.no_grad():
        base = net(x)[0, cls]
    assert ours.raw.shape == (1, 1, 16, 16, 16)
    assert torch.allclose(ours.raw, (base - theirs[:, cls : cls + 1]).float(), atol=1e-4)


def test_occlusion_patches_in_mm_on_anisotropic_grids_and_the_default_budget():
    starts, patch = occlusion_patches((40, 20, 20), (1.0, 2.0, 2.0), patch_mm=8, stride_mm=4)
    assert patch == (8, 4, 4)
    assert starts[0].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    assert starts[1].tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    starts, patch = occlusion_patches((96, 96, 96), (1.0, 1.0, 1.0), max_forwards=128)
    n = [len(s) for s in starts]
    assert n[0] * n[1] * n[2] <= 128
    assert all(int(s[-1]) + p == 96 for s, p in zip(starts, patch, strict=True))  # the border is covered


def test_occlusion_on_a_model_that_sees_one_region_and_an_roi():
    class Peek(nn.Module):
        """Class 1's logit is the mean intensity of the box [2:6]³; class 0's is its negative."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Identity()

        def forward(self, x):
            box = self.stem(x)[:, :, 2:6, 2:6, 2:6].flatten(1).mean(1)
            return torch.stack([-box, box], dim=1)

    x = torch.ones(1, 1, 12, 12, 12)
    box = torch.zeros(12, 12, 12, dtype=torch.bool)
    box[2:6, 2:6, 2:6] = True
    counted = Counting(Peek())
    with CamEngine(counted, progress=False) as engine:
        full = engine.explain(x, "occlusion", target=1, patch_mm=2, stride_mm=2, baseline="zero", batch_size=50)
        rows_full = counted.rows
        roi = engine.explain(x, "occlusion", target=1, patch_mm=2, stride_mm=2, baseline="zero", roi=box)
    assert rows_full == 1 + 6**3  # non-overlapping 2-voxel tiles
    assert counted.rows - rows_full == 2**3  # only the tiles touching the box
    assert torch.allclose(full.raw[0, 0][box], torch.full((64,), 8 / 64))  # each tile hides 8 of 64 voxels
    assert (full.raw[0, 0][~box] == 0).all()
    assert torch.equal(roi.raw, full.raw)


def test_perturbation_methods_on_2d_and_batches():
    net = GapNet(2, width=4).eval()
    x = torch.rand(2, 1, 12, 12)
    with CamEngine(net, "features.3", progress=False) as engine:
        for method in ("scorecam", "ablationcam", "occlusion"):
            r = engine.explain(x, method)
            assert r.map.shape == (2, 1, 12, 12) and torch.isfinite(r.map).all(), method


def test_bad_perturbation_options_are_clear_errors(gapnet3d):
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(volcam.MethodError, match="weights must be"):
        volcam.explain(gapnet3d, x, "scorecam", weights="magic")
    with pytest.raises(volcam.MethodError, match="baseline must be"):
        volcam.explain(gapnet3d, x, "occlusion", baseline="blue")
    with pytest.raises(volcam.MethodError, match="region of interest is empty"):
        volcam.explain(gapnet3d, x, "occlusion", roi=torch.zeros(8, 8, 8, dtype=torch.bool))
    with pytest.raises(volcam.MethodError, match="uses no gradients"):
        volcam.explain(gapnet3d, x, "scorecam", gradient_sigma_mm=1.0)


def test_perturbations_leave_the_cached_forward_intact():
    net = GapNet(3, width=4).eval()  # features.3 is an in-place ReLU: the first op of the head
    x = torch.rand(1, 1, 10, 10, 10)
    with CamEngine(net, "features.2", progress=False) as engine:
        before = engine.forward(x).activations["features.2"].detach().clone()
        gradcam = engine.explain(x, "gradcam")
        for method in ("ablationcam", "scorecam", "occlusion"):
            engine.explain(x, method)
        assert torch.equal(engine.forward(x).activations["features.2"], before)
        assert torch.equal(engine.explain(x, "gradcam").map, gradcam.map)
