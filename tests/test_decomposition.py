"""Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM: the component, its sign, clips, subsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import pearson
from volcam.methods.decomposition import eigencam, eigengradcam, first_component, kpcacam


def blob(shape: tuple[int, ...], centre: tuple[float, ...], width: float = 1.5) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    return torch.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / (2 * width**2))


def rank_one(pattern: torch.Tensor, loadings: torch.Tensor, noise: float = 0.02) -> torch.Tensor:
    """Activations ``A_k(v) = u_k p(v) + noise``, ``(1, K, *s)``: their first component is ``p``."""
    a = loadings.view(-1, *[1] * pattern.ndim) * pattern + noise * torch.randn(len(loadings), *pattern.shape)
    return a[None].float()


def svd_projection(a: torch.Tensor) -> torch.Tensor:
    """The projection on the first right singular vector of the channel-centred Z × K matrix, by a
    plain float64 SVD (pytorch-grad-cam's recipe, without its ReLU), sign as the SVD returns it."""
    x = a[0].reshape(a.shape[1], -1).T.double()
    x = x - x.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return (x @ vh[0]).reshape(a.shape[2:])


@pytest.mark.parametrize("fn", [eigencam, kpcacam])
def test_a_known_dominant_pattern_is_recovered_with_the_sign_of_the_mean_activation(fn):
    p = blob((6, 7, 8), (2, 4, 5))
    a = rank_one(p, 0.5 + torch.rand(32, dtype=torch.float64))  # positive loadings: mean activation ∝ p
    m = fn(a, relu=False)
    assert pearson(m, p) > 0.99
    # negative loadings on an offset: the mean activation is high where p is low, and so is the map
    a = 2.0 + rank_one(p, -(0.5 + torch.rand(32, dtype=torch.float64)))
    m = fn(a, relu=False)
    assert pearson(m, p) < -0.99
    assert pearson(m, a.mean(1)) > 0.99


def test_eigencam_is_the_relu_of_the_svd_projection_up_to_sign_and_agrees_with_the_mean():
    torch.manual_seed(1)
    a = torch.relu(torch.randn(3, 40, 5, 6, 7))
    out = eigencam(a, relu=False)
    for i in range(3):
        ref = svd_projection(a[i : i + 1])
        assert abs(pearson(out[i, 0], ref)) > 0.99999
        assert pearson(out[i, 0], a[i].mean(0)) > 0
    torch.testing.assert_close(eigencam(a), torch.relu(out))


@pytest.mark.parametrize("spatial", [(30,), (9, 11), (5, 6, 7)])
def test_shapes_batches_and_sign_agreement_in_1d_2d_3d(spatial):
    torch.manual_seed(2)
    a, g = torch.rand(4, 24, *spatial), torch.randn(4, 24, *spatial)
    for m, mean in [
        (eigencam(a, relu=False), a.mean(1)),
        (eigengradcam(a, g, relu=False), (g * a).mean(1)),
        (kpcacam(a, relu=False), a.mean(1)),
    ]:
        assert m.shape == (4, 1, *spatial) and m.dtype == a.dtype
        assert all(pearson(m[i, 0], mean[i]) > 0 for i in range(4))
    assert (eigencam(a) >= 0).all() and (kpcacam(a) >= 0).all()


def test_eigengradcam_is_eigencam_of_gradient_times_activation():
    a, g = torch.rand(2, 16, 4, 5, 6), torch.randn(2, 16, 4, 5, 6)
    torch.testing.assert_close(eigengradcam(a, g), eigencam(g * a))


def test_a_clip_is_one_decomposition_so_no_frame_flips_sign():
    """(B, K, T, H, W): one Z = T·H·W matrix. A lesion that moves and fades over the frames keeps one
    sign in every frame, and the map is exactly that of the flattened matrix."""
    t_frames, hw = 6, (8, 8)
    loadings = 0.5 + torch.rand(24, dtype=torch.float64)
    clip = torch.stack([(0.3 + 0.7 * (t % 3) / 2) * blob(hw, (2 + t, 5 - 0.5 * t)) for t in range(t_frames)])
    a = rank_one(clip, loadings)  # (1, 24, T, H, W)
    m = eigencam(a, relu=False)
    for t in range(t_frames):
        assert pearson(m[0, 0, t], a[0, :, t].mean(0)) > 0.95
    flat = eigencam(a.reshape(1, 24, -1), relu=False).reshape(m.shape)
    torch.testing.assert_close(m, flat)


def test_the_randomized_solver_agrees_with_the_exact_one():
    torch.manual_seed(3)
    # a feature map with a falling spectrum, large enough that the randomized path is what runs
    a = torch.relu(torch.randn(2, 600, 8) @ torch.randn(2, 8, 700) + 0.3 * torch.randn(2, 600, 700))
    a = a.view(2, 600, 7, 10, 10)
    exact, fast = first_component(a, exact=True), first_component(a, exact=False)
    for i in range(2):
        assert pearson(exact[i], fast[i]) > 0.9999
    torch.testing.assert_close(first_component(a), fast)  # min(Z, K) = 600 > 512: the default
    torch.testing.assert_close(first_component(a, exact=False), fast)  # fixed seed: deterministic


def test_more_channels_than_positions_uses_the_small_gram_matrix():
    a = torch.rand(1, 300, 3, 3, 3)  # K > Z, e.g. layer4 at a small input
    m = first_component(a, exact=True)
    assert abs(pearson(m, svd_projection(a))) > 0.99999


def test_kpcacam_matches_scikit_learn_on_the_centred_matrix():
    from sklearn.decomposition import KernelPCA

    torch.manual_seed(4)
    a = torch.rand(1, 20, 6, 7, 8)
    x = a[0].reshape(20, -1).T.double().numpy()
    ref = KernelPCA(n_components=1, kernel="sigmoid").fit_transform(x - x.mean(0))[:, 0]
    assert abs(pearson(kpcacam(a, relu=False), torch.from_numpy(ref))) > 0.99999


def test_kpcacam_fitted_on_a_subsample_gives_nearly_the_full_map():
    torch.manual_seed(5)
    p = blob((10, 10, 10), (3, 6, 4), width=2.5) - 0.6 * blob((10, 10, 10), (7, 2, 7), width=2.0)
    a = rank_one(p, 0.5 + torch.rand(16, dtype=torch.float64), noise=0.05)
    full = kpcacam(a, max_positions=None, relu=False)
    sub = kpcacam(a, max_positions=250, relu=False)  # a quarter of the 1000 positions
    assert pearson(full, sub) > 0.99
    torch.testing.assert_close(sub, kpcacam(a, max_positions=250, relu=False))  # seeded
    assert pearson(kpcacam(a, max_positions=250, seed=1, relu=False), full) > 0.99


@pytest.mark.parametrize("fn", [eigencam, kpcacam])
def test_constant_activations_give_a_zero_map_without_nan(fn):
    for a in (torch.zeros(2, 8, 3, 4, 5), torch.ones(2, 8, 3, 4, 5)):
        out = fn(a)
        assert torch.isfinite(out).all() and (out == 0).all()


def test_half_precision_runs_in_float32_and_returns_half():
    a = torch.rand(1, 16, 4, 4, 4).half()
    out = eigencam(a)
    assert out.dtype == torch.float16
    np.testing.assert_allclose(out.float().numpy(), eigencam(a.float()).numpy(), atol=2e-3)
