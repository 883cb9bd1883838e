"""Max-sensitivity under input noise and map stability under gradient noise."""

from __future__ import annotations

import pytest
import torch

from volcam import VolcamError
from volcam.metrics import gradient_noise_stability, max_sensitivity


def test_max_sensitivity_grows_with_the_noise(gapnet3d) -> None:
    x = torch.rand(2, 1, 12, 12, 12)
    none = max_sensitivity(gapnet3d, x, "gradcam", radius=0.0, n_samples=2)
    assert none.value.shape == (2,) and torch.allclose(none.value, torch.zeros(2, dtype=torch.float64), atol=1e-6)
    small = max_sensitivity(gapnet3d, x, "gradcam", radius=0.01, n_samples=4, batch_size=3)
    large = max_sensitivity(gapnet3d, x, "gradcam", radius=0.5, n_samples=4, batch_size=3)
    assert small.samples.shape == (4, 2)
    assert (small.value < large.value).all()
    assert (small.value == small.samples.amax(0)).all()


def test_gradient_noise_stability(gapnet3d) -> None:
    x = torch.rand(1, 1, 12, 12, 12)
    clean = gradient_noise_stability(gapnet3d, x, "gradcam", noise=0.0, n_samples=2)
    assert torch.allclose(clean.mean, torch.ones(1, dtype=torch.float64))
    weak = gradient_noise_stability(gapnet3d, x, "hirescam", noise=0.05, n_samples=3)
    strong = gradient_noise_stability(gapnet3d, x, "hirescam", noise=5.0, n_samples=3)
    assert weak.ssim.shape == (3, 1)
    assert strong.mean < weak.mean <= 1
    with pytest.raises(VolcamError, match="gradients"):
        gradient_noise_stability(gapnet3d, x, "eigencam")
