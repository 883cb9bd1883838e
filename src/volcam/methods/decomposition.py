"""The decomposition family: Eigen-CAM, Eigen-Grad-CAM, KPCA-CAM.

Each treats one sample's feature map as a Z × K matrix (Z positions, K channels), centres every
channel over the positions, and returns the projection of each position on the first principal
component, ``(B, K, *s) -> (B, 1, *s)`` for any number of spatial axes. All positions of a sample go
into one decomposition: a clip ``(B, K, T, H, W)`` is one Z = T·H·W matrix, so its frames share one
component and one sign, and cannot flip against each other.

A principal component has no sign of its own. volcam fixes it so that the map agrees with the mean
over channels of the decomposed matrix (the mean activation for Eigen-CAM and KPCA-CAM; the mean of
g ⊙ A for Eigen-Grad-CAM): their correlation over the positions is positive. The projection is then
ReLU'd, as pytorch-grad-cam does, so the map shows the positive side of that component.

Centring: volcam centres per channel (``docs/methods.md#eigencam``), and so does pytorch-grad-cam's
``get_2d_projection`` (its comment: without centring the image comes out negative); the Eigen-CAM
paper describes an SVD of the activations without centring. pytorch-grad-cam leaves the sign to the SVD solver; volcam
fixes it, so where the solver's sign came out against the mean activation the two maps differ
(before their ReLU, one is the negative of the other). Compare them after aligning the sign.

Example::

    >>> a = torch.rand(2, 64, 4, 6, 6)
    >>> eigencam(a).shape
    torch.Size([2, 1, 4, 6, 6])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["eigencam", "eigengradcam", "first_component", "kpcacam"]

# Up to this min(Z, K) the Gram matrix's full eigendecomposition is quick (0.05 s); above it `eigh`
# takes seconds (2048²: 2-8 s on two CPU cores) and randomized subspace iteration, a few thin Z × K
# products, is several times faster (Z = 30k, K = 2048: 1 s) and agrees to r > 0.9999.
_EXACT_MAX = 512


def eigencam(activations: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the positions' projections on the first principal
    component of the channel-centred ``A`` (Z × K per sample), sign fixed to agree with the mean
    activation. ``(B, K, *s) -> (B, 1, *s)``; no gradients needed."""
    return _finish(first_component(activations), relu)


def eigengradcam(activations: torch.Tensor, gradients: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """Eigen-Grad-CAM: Eigen-CAM on ``g ⊙ A``, which makes it class-specific; the sign agrees with
    the channel mean of ``g ⊙ A`` (HiResCAM's map / K), the class evidence."""
    return _finish(first_component(gradients * activations), relu)


def first_component(x: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
    """Projection of each position on the first principal component of ``x`` ``(B, K, *s)``, as
    ``(B, 1, *s)``, with the sign fixed to agree with ``x.mean(1)``; not ReLU'd.

    The top right singular vector of the centred Z × K matrix comes from an eigendecomposition of
    the smaller Gram matrix (``exact=True``) or, for large matrices, from randomized subspace
    iteration with a fixed seed (``exact=False``); ``None`` picks by size. Computed in float32 at
    least, on ``x``'s device, returned in ``x``'s dtype.
    """
    b, k = x.shape[:2]
    work = x.reshape(b, k, -1)  # (B, K, Z): X transposed, kept in the layout it comes in
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    z = work.shape[2]
    centred = work - work.mean(dim=2, keepdim=True)
    if exact is None:
        exact = min(z, k) <= _EXACT_MAX
    proj = _project_exact(centred) if exact else _project_lowrank(centred)
    proj = _agree_with_mean(proj, work.mean(dim=1))
    return proj.to(x.dtype).reshape(b, 1, *x.shape[2:])


def kpcacam(
    activations: torch.Tensor,
    kernel: str = "sigmoid",
    max_positions: int | None = 4096,
    seed: int = 0,
    gamma: float | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """KPCA-CAM (Karmani et al., 2024): the first kernel-PCA component of the channel-centred ``A``
    (Z × K per sample), sign fixed to agree with the mean activation. ``(B, K, *s) -> (B, 1, *s)``.

    Uses scikit-learn's ``KernelPCA`` (``kernel`` and ``gamma`` as there; ``gamma=None`` is
    1/K). Its cost grows with Z² in memory and up to Z³ in time, so when a sample has more than
    ``max_positions`` positions it is fitted on that many drawn at random (``seed``), and then every
    position is projected with the fitted model (``None`` fits on all). Runs on the CPU; the map
    comes back on ``activations``' device.
    """
    from sklearn.decomposition import KernelPCA  # scikit-learn is imported only when KPCA-CAM runs

    b, k = activations.shape[:2]
    x = activations.detach().reshape(b, k, -1).transpose(1, 2).double().cpu()  # (B, Z, K)
    z = x.shape[1]
    centred = x - x.mean(dim=1, keepdim=True)
    rng = torch.Generator().manual_seed(seed)
    maps = []
    for sample in centred:  # one kernel PCA per sample: scikit-learn has no batched form
        if not sample.abs().amax() > 0:  # a constant feature map has no component
            maps.append(torch.zeros(z, dtype=torch.float64))
            continue
        kpca = KernelPCA(n_components=1, kernel=kernel, gamma=gamma, random_state=seed)
        if max_positions is None or z <= max_positions:
            proj = kpca.fit_transform(sample.numpy())[:, 0]
        else:
            fit_on = torch.randperm(z, generator=rng)[:max_positions]
            kpca.fit(sample[fit_on].numpy())
            # project in chunks: the kernel against the fitted positions is (chunk × max_positions)
            proj = torch.cat([torch.from_numpy(kpca.transform(c.numpy())[:, 0]) for c in sample.split(2048)])
        maps.append(torch.as_tensor(proj, dtype=torch.float64))
    proj = _agree_with_mean(torch.nan_to_num(torch.stack(maps)), x.mean(dim=2))
    out = proj.to(device=activations.device, dtype=activations.dtype).reshape(b, 1, *activations.shape[2:])
    return F.relu(out) if relu else out


def _project_exact(xt: torch.Tensor) -> torch.Tensor:
    """``X v1`` ``(B, Z)`` for ``X^T`` ``(B, K, Z)``, from the eigendecomposition of the smaller Gram
    matrix (one GEMM and a small ``eigh``: much faster than an SVD of X)."""
    k, z = xt.shape[1:]
    if k <= z:
        _, vecs = torch.linalg.eigh(xt @ xt.mT)  # X^T X, (B, K, K), eigenvalues ascending
        return (vecs[:, :, -1:].mT @ xt).squeeze(1)
    # X X^T = U S² U^T and X v1 = s1 u1
    vals, vecs = torch.linalg.eigh(xt.mT @ xt)
    return vecs[:, :, -1] * vals[:, -1:].clamp_min(0).sqrt()


def _project_lowrank(xt: torch.Tensor, rank: int = 10, iters: int = 8) -> torch.Tensor:
    """``X v1`` ``(B, Z)`` for ``X^T`` ``(B, K, Z)`` by randomized subspace iteration (Halko et al.,
    2011) on the K side, with a fixed seed so the same input always gives the same map. A block of
    ``rank`` vectors makes the top one converge like ``(s_rank+1 / s_1)^(2 iters)``."""
    b, k, z = xt.shape
    q = min(rank, z, k)
    x = xt.mT.contiguous()  # thin products against both layouts run at memory speed
    gen = torch.Generator(device=xt.device).manual_seed(0)
    basis = torch.randn(b, k, q, generator=gen, device=xt.device, dtype=xt.dtype)
    for _ in range(iters):
        basis = torch.linalg.qr(xt @ (x @ basis)).Q  # (B, K, q)
    # Rayleigh-Ritz: the top right singular vector of X restricted to the basis
    _, _, wh = torch.linalg.svd(x @ basis, full_matrices=False)  # (B, Z, q): thin
    v1 = basis @ wh[:, :1].mT  # (B, K, 1)
    return (x @ v1).squeeze(-1)


def _agree_with_mean(proj: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Flip each row of ``proj`` ``(B, Z)`` whose correlation with ``mean`` ``(B, Z)`` is negative.

    Where the correlation is exactly 0 (a constant mean map) the largest-magnitude value is made
    positive instead, so the result never depends on the solver's arbitrary sign.
    """
    mean = mean.to(proj.dtype)
    cov = ((proj - proj.mean(1, keepdim=True)) * (mean - mean.mean(1, keepdim=True))).sum(1)
    peak = proj.gather(1, proj.abs().argmax(1, keepdim=True)).squeeze(1)
    sign = torch.where(cov != 0, cov.sign(), peak.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return proj * sign[:, None]


def _finish(proj: torch.Tensor, relu: bool) -> torch.Tensor:
    return F.relu(proj) if relu else proj
