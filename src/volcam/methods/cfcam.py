"""CF-CAM (cluster-filter CAM; He et al., 2025): channel clustering plus cluster-conditioned
gradient filtering, on ``(B, K, *s)`` activations and gradients with 1-3 spatial axes.

1. Channels whose activation L2 norm is at or above the 75th percentile are *important* and keep
   Grad-CAM's weight ``mean_v g_k``.
2. The rest are clustered with DBSCAN (scikit-learn) on their flattened activations (Euclidean):
   ``eps`` = 25th percentile of their pairwise distances (at least 1e-5), ``min_samples`` =
   ``max(2, floor(0.05 · N_rest))``. Channels DBSCAN calls noise are dropped.
3. Per cluster the members' mean gradient is smoothed with a Gaussian of width ``sigma_mm`` (mm,
   on the feature map's own spacing), optionally range-weighted; every member takes the mean of
   the result as its weight.
4. ``M = ReLU(sum_k softmax(w / tau)_k A_k)`` over the retained channels, with the temperature
   ``tau`` the standard deviation of the retained weights (1 when they are all equal). Mean
   gradients of a 3D network are ~1e-3, so a softmax of the raw weights is uniform and the map
   would be the same for every class; dividing by ``tau`` keeps the weights' ranking and spread
   whatever their scale (:func:`tempered_softmax`).

The formulas, and where volcam had to choose, are in ``docs/methods.md#cf-cam``.

DBSCAN runs per sample on the CPU (the pairwise distances are computed on the tensors' device);
everything else stays on the device.

Example::

    >>> a, g = torch.rand(1, 64, 4, 6, 6), torch.randn(1, 64, 4, 6, 6)
    >>> cfcam(a, g, spacing=(16.0, 16.0, 16.0)).shape
    torch.Size([1, 1, 4, 6, 6])
    >>> groups = channel_groups(a)   # (1, 64): IMPORTANT, NOISE or a cluster id >= 0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from volcam.maps.filters import gaussian_filter_mm
from volcam.methods.base import channel_weighted_sum, spatial_dims

__all__ = ["IMPORTANT", "NOISE", "cfcam", "cfcam_weights", "channel_groups", "tempered_softmax"]

IMPORTANT = -2
"""Label of a channel kept for its high activation norm (step 1)."""
NOISE = -1
"""Label of a channel DBSCAN calls noise; CF-CAM drops it (DBSCAN's own label for noise)."""


def channel_groups(activations: torch.Tensor) -> torch.Tensor:
    """CF-CAM's channel split of ``activations`` ``(B, K, *s)``: ``(B, K)`` int64 labels, one per
    channel: :data:`IMPORTANT`, :data:`NOISE`, or the DBSCAN cluster id (0, 1, ...).

    Depends on the activations only, so one split serves every target and every gradient.
    """
    from sklearn.cluster import DBSCAN  # scikit-learn is imported only when CF-CAM runs

    b, k = activations.shape[:2]
    flat = activations.detach().reshape(b, k, -1)
    labels = torch.full((b, k), IMPORTANT, dtype=torch.int64)
    for i in range(b):  # DBSCAN clusters one sample's channels at a time
        # float64, so distances by one GEMM (|x|² + |y|² - 2xy) stay exact far below the 1e-5 eps floor
        a = flat[i].double()
        norms = a.norm(dim=1)
        rest = (norms < torch.quantile(norms, 0.75)).nonzero().squeeze(1)
        n = rest.numel()
        if n < 2:  # nothing to cluster with: DBSCAN's min_samples is at least 2
            labels[i, rest.cpu()] = NOISE
            continue
        dist = torch.cdist(a[rest], a[rest], compute_mode="use_mm_for_euclid_dist").cpu()
        pairs = dist[tuple(torch.triu_indices(n, n, 1))]
        eps = max(float(np.quantile(pairs.numpy(), 0.25)), 1e-5)  # torch.quantile stops at 2**24 values
        found = DBSCAN(eps=eps, min_samples=max(2, int(0.05 * n)), metric="precomputed").fit(dist.numpy())
        labels[i, rest.cpu()] = torch.from_numpy(found.labels_).long()
    return labels.to(activations.device)


def cfcam_weights(
    gradients: torch.Tensor,
    groups: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    sigma_mm: float | Sequence[float] = 10.0,
    range_sigma: float | None = None,
) -> torch.Tensor:
    """CF-CAM's channel weights before the softmax, ``(B, K)``: ``mean_v g_k`` for important
    channels, the mean of the filtered cluster-mean gradient for cluster members, and ``-inf`` for
    noise channels (a softmax gives them 0).

    ``spacing`` is the gradients' voxel size per spatial axis in mm (1.0 if ``None``), ``sigma_mm``
    the Gaussian's width in mm. With ``range_sigma`` (0.1 in ``docs/methods.md#cf-cam``) each voxel of a cluster's
    mean gradient Ḡ also gets the range weight ``r = exp(-(Ḡ - mean Ḡ)² / 2 range_sigma²)`` and
    the filter is the normalised convolution ``G_σ * (r Ḡ) / G_σ * r``: values far from the
    cluster's mean gradient (gradient spikes) count less, a cheap bilateral filter.
    """
    dims = spatial_dims(gradients)
    spacing = 1.0 if spacing is None else spacing
    weights = gradients.mean(dim=dims).clone()
    groups = groups.to(gradients.device)
    for i in range(gradients.shape[0]):
        n_clusters = int(groups[i].max().item()) + 1
        if n_clusters <= 0:
            continue
        # members' mean gradient per cluster as one product: (C, K) averaging matrix @ (K, Z)
        member = F.one_hot(groups[i].clamp_min(-1) + 1, n_clusters + 1)[:, 1:].T.to(gradients.dtype)  # (C, K)
        member = member / member.sum(dim=1, keepdim=True)
        mean_grad = (member @ gradients[i].reshape(gradients.shape[1], -1)).view(1, n_clusters, *gradients.shape[2:])
        filtered = _filter(mean_grad, spacing, sigma_mm, range_sigma)
        cluster_w = filtered.mean(dim=dims)[0]  # (C,)
        clustered = groups[i] >= 0
        weights[i, clustered] = cluster_w[groups[i, clustered]]
    return weights.masked_fill(groups == NOISE, float("-inf"))


def tempered_softmax(weights: torch.Tensor) -> torch.Tensor:
    """CF-CAM's channel coefficients from its weights ``(B, K)`` (``-inf`` for dropped channels):
    ``softmax(w / tau)`` per sample over the retained (finite) channels, ``tau`` the population
    standard deviation of the retained weights, or 1 when they are all equal. Dropped channels get 0.

    Scale-free: multiplying every weight by ``c > 0`` leaves the result unchanged, so gradients of
    ~1e-3 give the same ranking and spread as gradients of ~1.
    """
    keep = torch.isfinite(weights)
    w = weights.double()  # (B, K) only: float64 keeps tiny spreads exact
    n = keep.sum(dim=1, keepdim=True).clamp_min(1)
    mean = torch.where(keep, w, 0.0).sum(dim=1, keepdim=True) / n
    centred = torch.where(keep, w - mean, 0.0)
    tau = (centred.pow(2).sum(dim=1, keepdim=True) / n).sqrt()
    lo = torch.where(keep, w, float("inf")).amin(dim=1, keepdim=True)
    hi = torch.where(keep, w, float("-inf")).amax(dim=1, keepdim=True)
    # all retained weights equal: tau = 1 (the exact test, so rounding in the mean cannot make a spread)
    tau = torch.where((hi > lo) & (tau > 0), tau, torch.ones_like(tau))
    scaled = torch.where(keep, centred / tau, float("-inf"))
    return torch.softmax(scaled, dim=1).to(weights.dtype)


def cfcam(
    activations: torch.Tensor,
    gradients: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    sigma_mm: float | Sequence[float] = 10.0,
    range_sigma: float | None = None,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """CF-CAM map ``(B, 1, *s)``: ``ReLU(sum_k softmax(w / tau)_k A_k)`` over the channels that are
    not noise, ``w`` from :func:`cfcam_weights`, ``tau`` the standard deviation of the retained
    weights (:func:`tempered_softmax`). ``groups`` (from :func:`channel_groups`) may be given to reuse
    one clustering for several gradients.

    ``benchmarks/results/cfcam_stability.md`` measures it against Grad-CAM: its stability under
    gradient noise and how much the maps of two classes differ. Without the temperature (the first
    version) the weights came out uniform and the map was the same for every class."""
    if groups is None:
        groups = channel_groups(activations)
    w = cfcam_weights(gradients, groups, spacing, sigma_mm, range_sigma)
    return F.relu(channel_weighted_sum(tempered_softmax(w), activations))


def _filter(
    g: torch.Tensor, spacing: Sequence[float] | float, sigma_mm: float | Sequence[float], range_sigma: float | None
) -> torch.Tensor:
    if range_sigma is None:
        return gaussian_filter_mm(g, sigma_mm, spacing)
    dims = spatial_dims(g)
    r = torch.exp(-((g - g.mean(dim=dims, keepdim=True)) ** 2) / (2 * range_sigma**2))
    num = gaussian_filter_mm(r * g, sigma_mm, spacing)
    den = gaussian_filter_mm(r, sigma_mm, spacing)
    # den is 0 only where every neighbour is an extreme outlier (r underflowed); then num is 0 too
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)
