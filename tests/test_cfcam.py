"""CF-CAM: the channel split (important / clustered / noise), the weights, the map."""

from __future__ import annotations

import pytest
import torch

import volcam
from volcam.methods.base import channel_weighted_sum
from volcam.methods.cfcam import IMPORTANT, NOISE, cfcam, cfcam_weights, channel_groups, tempered_softmax
from volcam.methods.gradient import gradcam


def planted_channels(spatial: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Activations ``(K, *spatial)`` with a planted structure, channels in a random order:
    17 *important* channels of norm 5, three clusters of 16 near-copies of a unit-norm pattern,
    and 3 *noise* channels, unit-norm patterns of their own. K = 68, so exactly the 17 strong ones
    reach the 75th percentile of the norms. Returns the activations and where each group went."""
    gen = torch.Generator().manual_seed(seed)

    def unit(n: int) -> torch.Tensor:
        x = torch.randn(n, *spatial, generator=gen, dtype=torch.float64)
        return x / x.flatten(1).norm(dim=1).view(-1, *[1] * len(spatial))

    important = 5 * unit(17)
    clusters = [base + 0.01 * torch.randn(16, *spatial, generator=gen, dtype=torch.float64) for base in unit(3)]
    noise = unit(3)
    a = torch.cat([important, *clusters, noise])
    order = torch.randperm(68, generator=gen)
    where = torch.empty(68, dtype=torch.long)
    where[order] = torch.arange(68)  # planted channel i now sits at where[i]
    groups = {
        "important": where[:17],
        **{f"cluster{c}": where[17 + 16 * c : 33 + 16 * c] for c in range(3)},
        "noise": where[65:],
    }
    return a[order].float(), groups


@pytest.mark.parametrize("spatial", [(8, 8), (4, 4, 4)])
def test_planted_clusters_are_found_and_the_noise_channels_dropped(spatial):
    a, planted = planted_channels(spatial)
    labels = channel_groups(a[None])[0]
    assert labels.shape == (68,) and labels.dtype == torch.int64
    assert set(labels[planted["important"]].tolist()) == {IMPORTANT}
    assert set(labels[planted["noise"]].tolist()) == {NOISE}
    assert (labels == NOISE).sum() == 3  # nothing else is called noise
    found = [set(labels[planted[f"cluster{c}"]].tolist()) for c in range(3)]
    assert all(len(f) == 1 and min(f) >= 0 for f in found)  # each planted cluster is one cluster
    assert len(set().union(*found)) == 3  # and three different ones


def test_each_sample_of_a_batch_is_clustered_on_its_own():
    (a0, p0), (a1, p1) = planted_channels((4, 4, 4), seed=1), planted_channels((4, 4, 4), seed=2)
    labels = channel_groups(torch.stack([a0, a1]))
    assert labels.shape == (2, 68)
    assert set(labels[0, p0["noise"]].tolist()) == {NOISE} and set(labels[1, p1["noise"]].tolist()) == {NOISE}
    assert (labels[0] != labels[1]).any()  # different channel orders, different labels


def test_weights_important_keep_their_mean_gradient_members_share_their_clusters():
    a, planted = planted_channels((4, 4, 4))
    g = torch.randn(1, 68, 4, 4, 4)
    groups = channel_groups(a[None])
    w = cfcam_weights(g, groups, spacing=(8.0, 8.0, 8.0), sigma_mm=0.0)  # σ = 0: no smoothing
    imp = planted["important"]
    torch.testing.assert_close(w[0, imp], g[0, imp].mean(dim=(1, 2, 3)))
    for c in range(3):
        members = planted[f"cluster{c}"]
        torch.testing.assert_close(w[0, members], g[0, members].mean().expand(16))
    assert torch.isneginf(w[0, planted["noise"]]).all()


def test_map_is_relu_of_the_tempered_softmax_weighted_sum_of_retained_channels():
    """M = ReLU(sum_k softmax(w / tau)_k A_k), tau the std of the retained weights (docs/methods.md#cf-cam)."""
    a, _ = planted_channels((4, 4, 4))
    a, g = a[None], torch.randn(1, 68, 4, 4, 4)
    groups = channel_groups(a)
    w = cfcam_weights(g, groups, spacing=4.0, sigma_mm=6.0)
    keep = groups[0] != NOISE
    tau = w[0, keep].double().std(unbiased=False)
    soft = torch.zeros(1, 68)
    soft[0, keep] = torch.softmax(w[0, keep].double() / tau, dim=0).float()
    expected = torch.relu(channel_weighted_sum(soft, a))
    torch.testing.assert_close(cfcam(a, g, spacing=4.0, sigma_mm=6.0), expected)
    torch.testing.assert_close(cfcam(a, g, spacing=4.0, sigma_mm=6.0, groups=groups), expected)


def test_tempered_softmax_is_scale_free_keeps_the_ranking_and_gives_dropped_channels_zero():
    w = torch.tensor([[2e-3, -1e-3, float("-inf"), 5e-4, 0.0], [1.0, 1.0, 1.0, float("-inf"), 1.0]])
    soft = tempered_softmax(w)
    torch.testing.assert_close(soft, tempered_softmax(1e3 * w))  # the gradients' scale does not matter
    assert soft[0, 2] == 0 and soft[1, 3] == 0
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    assert soft[0].argsort(descending=True)[:4].tolist() == [0, 3, 4, 1]  # the weights' ranking
    torch.testing.assert_close(soft[1], torch.tensor([0.25, 0.25, 0.25, 0.0, 0.25]))  # all equal: tau = 1
    assert soft[0].amax() > 2 * soft[0, 1]  # far from uniform, unlike softmax(w) of ~1e-3 weights
    assert torch.softmax(w[0], 0).amax() < 0.251  # what softmax(w) gave: four weights of ~1/4


def test_map_does_not_depend_on_the_gradients_scale():
    a, _ = planted_channels((4, 4, 4))
    g = torch.randn(1, 68, 4, 4, 4)
    torch.testing.assert_close(cfcam(a[None], 1e-3 * g), cfcam(a[None], g))


def _correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def test_two_classes_maps_differ_on_a_random_network():
    """The reason for the temperature: with softmax(w) alone the map was the same for every class."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(16, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 2),
    ).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    engine = volcam.CamEngine(net, "3", progress=False)
    a = engine.forward(x).activations["3"].detach()
    g0, g1 = (engine.gradients(x, c)["3"] for c in (0, 1))
    groups = channel_groups(a)
    m0, m1 = cfcam(a, g0, spacing=2.0, groups=groups), cfcam(a, g1, spacing=2.0, groups=groups)
    assert _correlation(m0, m1) < 0.5
    # the old formula, softmax(w) without tau, for contrast: the two classes' maps are one map
    old = [torch.relu(channel_weighted_sum(torch.softmax(cfcam_weights(g, groups, 2.0), 1), a)) for g in (g0, g1)]
    assert _correlation(*old) > 0.999
    # end to end through the engine: explain_classes gives class maps that differ too
    r0, r1 = engine.explain_classes(x, "cfcam", [0, 1])
    assert _correlation(r0.map, r1.map) < 0.5


def test_noise_channels_gradients_do_not_matter():
    a, planted = planted_channels((8, 8))
    g = torch.randn(1, 68, 8, 8)
    g2 = g.clone()
    g2[0, planted["noise"]] = 1e3 * torch.randn(3, 8, 8)
    torch.testing.assert_close(cfcam(a[None], g), cfcam(a[None], g2))


def test_smoothing_width_is_in_mm_on_the_feature_maps_spacing():
    a, _ = planted_channels((4, 4, 4))
    g = torch.randn(1, 68, 4, 4, 4)
    groups = channel_groups(a[None])
    kw = {"range_sigma": 0.5}  # the range-weighted filter is not mean-preserving, so σ shows in w
    in_voxels = cfcam_weights(g, groups, spacing=(1.0, 1.0, 1.0), sigma_mm=(1.0, 0.5, 0.5), **kw)
    in_mm = cfcam_weights(g, groups, spacing=(2.0, 1.0, 1.0), sigma_mm=(2.0, 0.5, 0.5), **kw)
    torch.testing.assert_close(in_voxels, in_mm)
    assert not torch.allclose(in_voxels, cfcam_weights(g, groups, spacing=1.0, sigma_mm=0.0, **kw))


def test_range_term_discounts_a_gradient_spike():
    """One voxel of a cluster's mean gradient spikes; with the range term it counts for little."""
    a, planted = planted_channels((4, 4, 4))
    g = torch.full((1, 68, 4, 4, 4), 0.01)
    g[0, :, 1, 2, 3] = 5.0
    groups = channel_groups(a[None])
    member = planted["cluster0"][0]
    plain = cfcam_weights(g, groups, sigma_mm=1.0)[0, member]
    ranged = cfcam_weights(g, groups, sigma_mm=1.0, range_sigma=0.1)[0, member]
    assert plain.item() == pytest.approx(0.01 + 4.99 / 64, rel=0.1)  # ≈ the mean: border effects only
    assert ranged.item() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
def test_zero_gradients_or_activations_give_finite_maps(spatial):
    a = torch.rand(2, 32, *spatial)
    m = cfcam(a, torch.zeros_like(a), range_sigma=0.1)
    assert m.shape == (2, 1, *spatial) and torch.isfinite(m).all()
    groups = channel_groups(a)
    keep = (groups != NOISE).float()
    torch.testing.assert_close(m, channel_weighted_sum(keep / keep.sum(1, keepdim=True), a))  # equal weights
    z = torch.zeros(2, 32, *spatial)
    assert (channel_groups(z) == IMPORTANT).all()  # all norms equal: all at the 75th percentile
    assert (cfcam(z, torch.randn_like(z)) == 0).all()


def test_constant_gradient_head_weights_channels_like_gradcam_before_the_softmax():
    """GAP + linear head: g_k is the constant w_k / Z, so important channels' weights are Grad-CAM's."""
    a, planted = planted_channels((4, 4, 4))
    w_head = torch.randn(68)
    g = (w_head / 64).view(1, 68, 1, 1, 1).expand(1, 68, 4, 4, 4)
    w = cfcam_weights(g, channel_groups(a[None]), sigma_mm=3.0)
    imp = planted["important"]
    torch.testing.assert_close(w[0, imp], w_head[imp] / 64)
    assert gradcam(a[None], g).shape == cfcam(a[None], g).shape
