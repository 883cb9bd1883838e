"""Every registered method on images, volumes, clips and batches: the contract each must keep."""

from __future__ import annotations

import pytest
import torch

import volcam
from conftest import GapNet
from volcam.methods.learned import LCamAttention

# attention rollout needs a ViT-style model: tests/test_transformers.py runs it there and checks its one line here
METHODS = [m.name for m in volcam.methods() if "attention" not in m.needs]
# small perturbation budgets: the contract is checked, not the method's quality
OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "occlusion": {"max_forwards": 8}, "kpcacam": {}}
# L-CAM explains with a trained attention module: an untrained one of the right shape keeps the contract
OPTIONS.update({m: {"module": LCamAttention(8, 3)} for m in ("lcam-fm", "lcam-img")})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 1, 12, 10)), (3, (2, 1, 8, 10, 6))], ids=["2d", "3d"])
def test_every_method_on_images_and_volumes_in_a_batch(method, dims, shape):
    net = GapNet(dims, width=4).eval()
    with volcam.CamEngine(net, "features.3", progress=False) as engine:
        result = engine.explain(torch.rand(*shape), method, target=[0, 2], **OPTIONS.get(method, {}))
    assert result.map.shape == (shape[0], 1, *shape[2:])
    assert torch.isfinite(result.map).all()
    assert result.map.amin() >= 0 and result.map.amax() <= 1
    assert result.classes.tolist() == [0, 2]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_clip_with_a_frame_model(method):
    net = GapNet(2, in_channels=3, width=4).eval()
    result = volcam.explain_clip(
        net, torch.rand(3, 4, 10, 10), method, layer="features.3", chunk_size=3, **OPTIONS.get(method, {})
    )
    assert result.map.shape == (1, 4, 10, 10) and torch.isfinite(result.map).all()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_spatio_temporal_clip(method):
    net = GapNet(3, in_channels=3, width=4).eval()  # 3D convolutions over (T, H, W)
    clip = torch.rand(1, 3, 4, 10, 10)
    result = volcam.explain(net, clip, method, layer="features.3", spacing=(0.2, 0.3, 0.3), **OPTIONS.get(method, {}))
    assert result.map.shape == (1, 1, 4, 10, 10) and torch.isfinite(result.map).all()
