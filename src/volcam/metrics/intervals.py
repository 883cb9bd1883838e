"""How sure is a cohort's number? Case-level bootstrap intervals, paired method differences, Holm.

Every bootstrap here resamples **cases** with replacement, ``resamples`` times, from a seeded NumPy
``Generator``: a chunk of resampled cohorts is a matrix of indices ``(r, n)``, turned into how often
each case was drawn, weights ``(r, n)`` (chunks bound the memory). A statistic is a function of those
weights, so the mean of a column, a pooled VxAP (the cases' histograms summed with the weights) and a
paired difference (the same weights for both methods) are resampled alike.

Intervals (``method``):

* ``"studentized"`` (the default for means): the bootstrap-t interval, ``mean − t*_(1−α/2) · se,
  mean − t*_(α/2) · se`` with ``t* = (mean* − mean) / se*`` over the resamples (Efron & Tibshirani
  1993, ch. 12). It keeps its coverage on the skewed, bounded per-case scores of 30 cases, where the
  percentile interval falls short (91–93 % for a nominal 95 %: docs/methods.md#intervals). Where
  more than ``α/2`` of the resamples have no spread (nearly every case the same value) ``t*`` is
  unbounded and the percentile interval is given instead (``Interval.method`` says which).
* ``"percentile"``: the ``α/2`` and ``1 − α/2`` quantiles of the resampled statistic (the only one for
  a pooled statistic besides BCa: it has no standard error).
* ``"bca"``: bias-corrected and accelerated (Efron & Tibshirani 1993, ch. 14; acceleration from the
  jackknife).

A column of hits (every value 0 or 1, or 0 or 100 for a percentage) gets the Wilson score interval
from :func:`interval_of` instead: a bootstrap of 30 hits out of 30 would say ``[1, 1]``. ``NaN``
values (a metric not measured on a case) are left out and counted in :attr:`Interval.dropped`;
infinite ones are refused.

Example::

    >>> bootstrap_interval(table["gradcam.energy_in_mask"])        # Interval(estimate=0.41, low=0.35, ...)
    >>> paired_difference(table["gradcam++.vxap"], table["gradcam.vxap"]).p_value
    >>> holm([0.01, 0.04, 0.03])                                   # array([0.03, 0.06, 0.06])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from volcam.metrics._common import MetricInputError
from volcam.metrics.voxel_precision import VoxelHistograms, curves

__all__ = [
    "CONFIDENCE",
    "RESAMPLES",
    "Interval",
    "PairedDifference",
    "bootstrap_interval",
    "holm",
    "interval_of",
    "paired_difference",
    "paired_pooled_difference",
    "pooled_interval",
    "proportion_interval",
]

#: Resamples of a bootstrap unless told otherwise.
RESAMPLES = 2000
#: The intervals' coverage unless told otherwise.
CONFIDENCE = 0.95
# elements of one chunk's weights and statistic (float64: 8 MB)
_CHUNK = 1 << 20

Method = Literal["studentized", "percentile", "bca"]
Pooled = Literal["vxap", "max_f1"]
#: A statistic of resampled cohorts: weights ``(r, n)`` (how often each case was drawn) → ``(r,)``.
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A statistic of the cases and its interval.

    Attributes:
        estimate: the statistic on the cases as given (the mean for :func:`bootstrap_interval`, the
            pooled value for :func:`pooled_interval`, the mean difference for :func:`paired_difference`);
            ``NaN`` with no case.
        low, high: the interval's ends.
        resamples: how many resampled cohorts (0 for a Wilson interval).
        n: the cases used.
        confidence: the interval's coverage, e.g. 0.95.
        method: ``"studentized"``, ``"percentile"``, ``"bca"`` or ``"wilson"``: the one computed.
        dropped: cases left out for a ``NaN``.
    """

    estimate: float
    low: float
    high: float
    resamples: int
    n: int
    confidence: float = CONFIDENCE
    method: str = "studentized"
    dropped: int = 0

    @property
    def mean(self) -> float:
        """:attr:`estimate` (a mean, for :func:`bootstrap_interval`)."""
        return self.estimate

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PairedDifference:
    """Method A − method B on the same cases.

    Attributes:
        difference: the statistic of A minus that of B, with its interval (the same resamples for both).
        p_value: two-sided bootstrap p-value of "no difference", the interval inverted: the smallest ``α``
            at which the ``1 − α`` interval of the same kind leaves out 0, ``min(1, 2 · min(1 + #below,
            1 + #above) / (resamples + 1))`` with ``#below``, ``#above`` the resamples at or below / above the
            observed value (``t*`` against ``d / se``, studentized; otherwise ``d*`` against 0, the percentile
            interval's, also for BCa). So ``p < 1 − confidence`` when a studentized or percentile interval
            leaves out 0 (up to the resamples' granularity). Uncorrected: :func:`holm` corrects a family.
    """

    difference: Interval
    p_value: float


# -- the one resampling loop ----------------------------------------------------------------------


def _check(resamples: int, confidence: float, method: str, allowed: Sequence[str]) -> None:
    if not isinstance(resamples, (int, np.integer)) or isinstance(resamples, bool) or resamples < 1:
        raise MetricInputError(f"resamples must be a positive integer, not {resamples!r}")
    if not 0 < confidence < 1:
        raise MetricInputError(f"confidence must lie between 0 and 1, not {confidence}")
    if method not in allowed:
        raise MetricInputError(f"method must be one of {', '.join(map(repr, allowed))}, not {method!r}")


def _resampled(n: int, resamples: int, seed: int | None, width: int) -> Iterator[np.ndarray]:
    """Weights ``(r, n)`` float64 of cohorts of ``n`` cases drawn with replacement, chunk by chunk.

    ``width``: the statistic's working elements per resample beyond its weights (e.g. histogram bins).
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // (n + width))
    for start in range(0, resamples, rows):
        r = min(rows, resamples - start)
        drawn = rng.integers(0, n, size=(r, n))  # the indices matrix: a row is one resampled cohort
        counts = np.bincount((drawn + n * np.arange(r)[:, None]).ravel(), minlength=r * n)
        yield counts.reshape(r, n).astype(np.float64)


def _apply(n: int, statistic: Statistic, resamples: int, seed: int | None, width: int = 1) -> np.ndarray:
    """The statistic of each resampled cohort, stacked along the first axis."""
    return np.concatenate([statistic(w) for w in _resampled(n, resamples, seed, width)])


def _levels(confidence: float) -> np.ndarray:
    alpha = (1 - confidence) / 2
    return np.array([alpha, 1 - alpha])


def _quantiles(replicates: np.ndarray, levels: np.ndarray) -> tuple[float, float]:
    kept = replicates[~np.isnan(replicates)]
    if not kept.size:
        return math.nan, math.nan
    low, high = np.quantile(kept, levels)
    return float(low), float(high)


def _two_sided(replicates: np.ndarray, observed: float) -> float:
    """``min(1, 2 · min(1 + #(r ≤ observed), 1 + #(r ≥ observed)) / (kept + 1))``: the smallest ``α`` at
    which the equal-tailed ``1 − α`` interval read off ``replicates`` leaves ``observed`` out."""
    kept = replicates[~np.isnan(replicates)]
    if not kept.size or math.isnan(observed):
        return math.nan
    tail = 1 + min(np.sum(kept <= observed), np.sum(kept >= observed))
    return float(min(1.0, 2 * tail / (kept.size + 1)))


def _bca_levels(estimate: float, replicates: np.ndarray, jackknife: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The percentile levels the BCa interval reads (Efron & Tibshirani 1993, eq. 14.10-14.15)."""
    normal = NormalDist()
    kept = replicates[~np.isnan(replicates)]
    spread = jackknife[~np.isnan(jackknife)]
    if not kept.size or spread.size < 2:
        return levels
    below = (np.sum(kept < estimate) + 0.5 * np.sum(kept == estimate)) / kept.size
    z0 = normal.inv_cdf(min(max(float(below), 0.5 / kept.size), 1 - 0.5 / kept.size))
    d = spread.mean() - spread
    scale = float((d**2).sum())
    accel = float((d**3).sum() / (6 * scale**1.5)) if scale > 0 else 0.0
    adjusted = []
    for level in levels:
        z = z0 + normal.inv_cdf(float(level))
        adjusted.append(normal.cdf(z0 + z / (1 - accel * z)))
    return np.array(adjusted)


def _finite(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 ``(n,)`` and which are not ``NaN``; infinite values refused."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isinf(x).any():
        raise MetricInputError(f"the {name} have infinite values: an interval needs finite numbers (NaN is left out)")
    return x, ~np.isnan(x)


# -- a mean (one value per case), and a mean difference ------------------------------------------------


def _mean_and_se(x: np.ndarray) -> Statistic:
    """Weights → ``(r, 2)``: each resample's mean and its standard error (``sd / √n``, ``ddof=1``)."""
    n, centre = x.size, x.mean()
    squares = (x - centre) ** 2

    def statistic(weights: np.ndarray) -> np.ndarray:
        mean = weights @ x / n
        spread = np.maximum(weights @ squares - n * (mean - centre) ** 2, 0.0) / max(n - 1, 1)
        return np.stack([mean, np.sqrt(spread / n)], axis=1)

    return statistic


def _of_mean(
    x: np.ndarray, resamples: int, confidence: float, seed: int | None, method: Method
) -> tuple[Interval, float]:
    """The mean of ``x`` (no NaN), its interval and the p-value of "the mean is 0"."""
    n = x.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, resamples, 0, confidence, method), math.nan
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    if se == 0:  # every case the same value: no spread to resample
        return Interval(mean, mean, mean, resamples, n, confidence, method), 1.0 if mean == 0 else 2 / (resamples + 1)
    found = _apply(n, _mean_and_se(x), resamples, seed)
    means, ses = found[:, 0], found[:, 1]
    levels = _levels(confidence)
    if method == "studentized":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(ses > 0, (means - mean) / ses, np.sign(means - mean) * np.inf)
            low_t, high_t = (float(q) for q in np.quantile(t, levels))
        if math.isfinite(low_t) and math.isfinite(high_t):
            p = _two_sided(t, mean / se)  # the t* at or beyond the t of "the mean is 0"
            return Interval(mean, mean - high_t * se, mean - low_t * se, resamples, n, confidence, method), p
        method = "percentile"  # too many resamples without spread: t* is unbounded
    if method == "bca":
        levels = _bca_levels(mean, means, (x.sum() - x) / (n - 1), levels)
    low, high = _quantiles(means, levels)
    return Interval(mean, low, high, resamples, n, confidence, method), _two_sided(means, 0.0)


def bootstrap_interval(
    values: Any,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
    method: Method = "studentized",
) -> Interval:
    """The mean of ``values`` (one per case) and its case-level bootstrap interval.

    Args:
        values: ``(n,)`` one number per case (a table's column); ``NaN`` left out and counted.
        resamples: resampled cohorts (2000 by default).
        confidence: the interval's coverage.
        seed: the generator's seed (the same seed, the same interval); ``None``: fresh entropy.
        method: ``"studentized"``, ``"percentile"`` or ``"bca"`` (module docstring).
    """
    _check(resamples, confidence, method, ("studentized", "percentile", "bca"))
    x, kept = _finite(values, "values")
    found, _ = _of_mean(x[kept], resamples, confidence, seed, method)
    return replace(found, dropped=int((~kept).sum()))


def paired_difference(
    a: Any,
    b: Any,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
    method: Method = "studentized",
) -> PairedDifference:
    """Mean of ``a − b`` over the cases both were measured on, its interval and a two-sided p-value.

    Args:
        a, b: ``(n,)`` one number per case each, the same cases in the same order (two methods' column
            of one metric). A case ``NaN`` in either is left out (counted in ``dropped``).
    """
    _check(resamples, confidence, method, ("studentized", "percentile", "bca"))
    x, kept_a = _finite(a, "first values")
    y, kept_b = _finite(b, "second values")
    if x.shape != y.shape:
        raise MetricInputError(f"paired values need the same cases: {x.size} and {y.size} values")
    kept = kept_a & kept_b
    found, p = _of_mean(x[kept] - y[kept], resamples, confidence, seed, method)
    return PairedDifference(replace(found, dropped=int((~kept).sum())), p)


# -- hits: the Wilson score interval ---------------------------------------------------------------


def proportion_interval(values: Any, confidence: float = CONFIDENCE, scale: float = 1.0) -> Interval:
    """The share of hits among ``values`` (each 0 or ``scale``) and its Wilson score interval (Wilson
    1927), on the values' scale. Unlike a bootstrap it does not shrink to a point at 0 or all hits."""
    _check(1, confidence, "wilson", ("wilson",))
    x, kept = _finite(values, "values")
    x = x[kept]
    if not np.isin(x, (0.0, scale)).all():
        raise MetricInputError(f"a proportion's values are 0 or {scale:g}")
    n, hits = x.size, int(np.sum(x == scale))
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0, confidence, "wilson", int((~kept).sum()))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    centre = (hits + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(hits * (n - hits) / n + z * z / 4)
    return Interval(
        hits / n * scale, max(centre - half, 0.0) * scale, min(centre + half, 1.0) * scale, 0, n, confidence, "wilson",
        int((~kept).sum()),
    )  # fmt: skip


def interval_of(
    values: Any,
    *,
    hits: float | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
) -> Interval:
    """The interval volcam reports beside a column's mean: Wilson's for a column of hits (``hits``: the
    value of a hit, e.g. 1, or 100 for a percentage; every value 0 or ``hits``), the studentized
    bootstrap otherwise."""
    if hits is not None:
        x, kept = _finite(values, "values")
        if np.isin(x[kept], (0.0, hits)).all():
            return proportion_interval(values, confidence, hits)
    return bootstrap_interval(values, resamples, confidence, seed)


# -- pooled VxAP / MaxF1: the cases' histograms summed --------------------------------------------


def _pooled(histograms: Sequence[VoxelHistograms], statistic: Pooled) -> tuple[Statistic, int]:
    if statistic not in ("vxap", "max_f1"):
        raise MetricInputError(f"a pooled statistic is 'vxap' or 'max_f1', not {statistic!r}")
    if len({h.bins for h in histograms}) > 1:
        raise MetricInputError("cannot pool histograms of different bins")
    if not histograms:
        return (lambda weights: np.full(weights.shape[0], math.nan)), 1
    lesion = np.stack([h.lesion for h in histograms]).astype(np.float64)
    background = np.stack([h.background for h in histograms]).astype(np.float64)

    def pooled(weights: np.ndarray) -> np.ndarray:
        return curves(weights @ lesion, weights @ background)[statistic]

    return pooled, lesion.shape[1] * 8  # curves() keeps a few arrays of the bins per resample


def _of_statistic(
    n: int, statistic: Statistic, resamples: int, confidence: float, seed: int | None, method: str, width: int
) -> tuple[Interval, float]:
    """A percentile or BCa interval of a weight statistic over ``n`` cases, and the p-value of "it is 0"."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, resamples, 0, confidence, method), math.nan
    estimate = float(statistic(np.ones((1, n)))[0])
    replicates = _apply(n, statistic, resamples, seed, width)
    levels = _levels(confidence)
    if method == "bca" and n > 1:
        levels = _bca_levels(estimate, replicates, statistic(1.0 - np.eye(n)), levels)
    low, high = _quantiles(replicates, levels)
    return Interval(estimate, low, high, resamples, n, confidence, method), _two_sided(replicates, 0.0)


def pooled_interval(
    histograms: Sequence[VoxelHistograms],
    statistic: Pooled = "vxap",
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
    method: Literal["percentile", "bca"] = "percentile",
) -> Interval:
    """A pooled VxAP or MaxF1 (one histogram pair per case, summed) and its bootstrap interval: each
    resampled cohort sums its cases' histograms (a case drawn twice counts twice) and is scored again.
    Resamples without a lesion voxel (possible when some cases have none) are left out of the quantiles."""
    _check(resamples, confidence, method, ("percentile", "bca"))
    pooled, width = _pooled(histograms, statistic)
    found, _ = _of_statistic(len(histograms), pooled, resamples, confidence, seed, method, width)
    return found


def paired_pooled_difference(
    a: Sequence[VoxelHistograms],
    b: Sequence[VoxelHistograms],
    statistic: Pooled = "vxap",
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
    method: Literal["percentile", "bca"] = "percentile",
) -> PairedDifference:
    """Pooled VxAP (or MaxF1) of method A minus that of method B on the same cases (``a[i]`` and ``b[i]``
    one case), each resampled cohort pooled for both."""
    _check(resamples, confidence, method, ("percentile", "bca"))
    if len(a) != len(b):
        raise MetricInputError(f"paired histograms need the same cases: {len(a)} and {len(b)}")
    first, width = _pooled(a, statistic)
    second, _ = _pooled(b, statistic)

    def difference(weights: np.ndarray) -> np.ndarray:
        return first(weights) - second(weights)

    found, p = _of_statistic(len(a), difference, resamples, confidence, seed, method, 2 * width)
    return PairedDifference(found, p)


# -- a family of comparisons ----------------------------------------------------------------------


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, in their order.

    The ``i``-th smallest of ``m`` p-values becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; rejecting
    where the adjusted p-value is ``≤ α`` keeps the family-wise error rate at most ``α``. ``NaN``
    entries stay ``NaN`` and do not count in ``m``.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if ((p < 0) | (p > 1)).any():
        raise MetricInputError("p-values lie between 0 and 1")
    out = np.full(p.shape, np.nan)
    kept = ~np.isnan(p)
    q = p[kept]
    m = q.size
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    step = np.empty(m)
    step[order] = adjusted
    out[kept] = step
    return out
