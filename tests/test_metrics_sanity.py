"""Cascading parameter randomization: a map that ignores the model fails, Grad-CAM passes."""

from __future__ import annotations

import pytest
import torch

from volcam import VolcamError
from volcam.maps.geometry import normalize
from volcam.metrics import parameter_randomization, randomization_blocks, spearman, ssim


def _edges(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """An 'explanation' that never looks at the model: the input's own intensity."""
    return normalize(x[:, :1].abs())


def test_a_map_that_ignores_the_model_fails(gapnet3d) -> None:
    x = torch.rand(2, 1, 12, 12, 12)
    res = parameter_randomization(gapnet3d, x, _edges)
    assert not res.passed
    assert torch.allclose(res.spearman, torch.ones_like(res.spearman))
    assert "FAILS" in res.report() and "does not change" in res.report()


def test_gradcam_passes_and_the_model_is_untouched(gapnet3d) -> None:
    gapnet3d.train()
    before = {k: v.clone() for k, v in gapnet3d.state_dict().items()}
    x = torch.rand(2, 1, 12, 12, 12)
    res = parameter_randomization(gapnet3d, x, "gradcam", layer="features.2")
    assert res.steps == ("fc", "features.2", "features.0")
    assert res.spearman.shape == (3, 2) and res.ssim.shape == (3, 2)
    assert res.passed, res.report()
    assert "passes" in res.report()
    assert res.spearman[-1].mean() < 0.5
    assert gapnet3d.training
    for k, v in gapnet3d.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_blocks_of_a_resnet_and_bad_names(resnet18_3d) -> None:
    blocks = randomization_blocks(resnet18_3d)
    assert blocks[0] == "fc" and blocks[-1] == "conv1"
    assert "layer4.1" in blocks and "layer1.0" in blocks
    with pytest.raises(VolcamError, match="no module"):
        parameter_randomization(resnet18_3d, torch.rand(1, 1, 8, 8, 8), "gradcam", blocks=["layer9"])


def test_similarity_measures() -> None:
    a = torch.rand(2, 1, 12, 12, 12)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(spearman(a, a * 2 + 1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(spearman(a, -a), -torch.ones(2, dtype=torch.float64))
    zero = torch.zeros_like(a)
    assert spearman(a, zero).tolist() == [0.0, 0.0] and spearman(zero, zero).tolist() == [1.0, 1.0]
    assert ssim(a, torch.rand_like(a)).max() < 0.3
    assert ssim(a[:, :, 0], a[:, :, 0]).shape == (2,)  # 2D, window cut to the image


def test_ssim_agrees_with_monai() -> None:
    from monai.metrics import SSIMMetric

    a = torch.rand(2, 1, 14, 16, 18, dtype=torch.float64)
    b = (a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    reference = SSIMMetric(spatial_dims=3, data_range=1.0)(a, b).flatten().double()  # MONAI works in float32
    torch.testing.assert_close(ssim(a, b), reference, atol=1e-5, rtol=0)
