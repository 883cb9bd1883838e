"""Case-level bootstrap intervals: coverage in simulation, the resampling itself, paired tests, Holm, Wilson."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from volcam import VolcamError
from volcam.metrics import (
    bootstrap_interval,
    holm,
    interval_of,
    paired_difference,
    paired_pooled_difference,
    pooled_interval,
    precision_recall,
    proportion_interval,
    voxel_histograms,
)

COHORTS = 2000  # simulated cohorts per distribution: the coverage's Monte Carlo error is about 0.5 %
CASES = 30


def _coverage(draw, truth: float, method: str, cohorts: int = COHORTS, resamples: int = 2000) -> float:
    rng = np.random.default_rng(12345)
    covered = 0
    for i in range(cohorts):
        found = bootstrap_interval(draw(rng, CASES), resamples=resamples, seed=i, method=method)
        covered += found.low <= truth <= found.high
    return covered / cohorts


# skewed, with known means: an exponential (skewness 2) and a Beta(1, 4) like a per-case score in [0, 1]
SKEWED = {
    "exponential": (lambda rng, n: rng.exponential(1.0, n), 1.0),
    "beta(1,4)": (lambda rng, n: rng.beta(1.0, 4.0, n), 0.2),
}


@pytest.mark.parametrize("name", SKEWED)
def test_the_default_interval_covers_the_true_mean_95_percent_of_the_time(name) -> None:
    draw, truth = SKEWED[name]
    start = time.perf_counter()
    coverage = _coverage(draw, truth, "studentized")
    seconds = time.perf_counter() - start
    print(f"{name}: studentized 95% interval covers the mean in {coverage:.1%} of {COHORTS} cohorts ({seconds:.1f} s)")
    assert 0.93 <= coverage <= 0.97


def test_the_percentile_interval_falls_short_on_skewed_small_cohorts() -> None:
    """Why the default is studentized: the plain percentile interval of 30 exponential cases covers
    about 91-92 % (Efron & Tibshirani 1993, ch. 12-14; Hesterberg 2015)."""
    draw, truth = SKEWED["exponential"]
    percentile = _coverage(draw, truth, "percentile", resamples=1000)
    print(f"exponential: percentile 95% interval covers the mean in {percentile:.1%} of {COHORTS} cohorts")
    assert percentile < 0.94


def test_the_resamples_are_cases_drawn_with_replacement() -> None:
    """The vectorised weights give what indexing the cases with the same draws gives."""
    x = np.random.default_rng(0).exponential(size=25)
    drawn = np.random.default_rng(7).integers(0, x.size, size=(500, x.size))
    expected = np.quantile(x[drawn].mean(axis=1), [0.025, 0.975])
    found = bootstrap_interval(x, resamples=500, seed=7, method="percentile")
    assert (found.low, found.high) == pytest.approx(tuple(expected), abs=1e-12)
    assert found.estimate == pytest.approx(x.mean()) and found.n == 25 and found.resamples == 500
    assert bootstrap_interval(x, seed=3) == bootstrap_interval(x, seed=3)  # seeded: the same interval
    assert bootstrap_interval(x, seed=3) != bootstrap_interval(x, seed=4)


def test_bca_agrees_with_scipy() -> None:
    from scipy import stats

    x = np.random.default_rng(1).exponential(size=30)
    ours = bootstrap_interval(x, resamples=40000, method="bca", seed=0)
    theirs = stats.bootstrap((x,), np.mean, n_resamples=40000, method="BCa", random_state=0).confidence_interval
    assert ours.low == pytest.approx(theirs.low, rel=0.02) and ours.high == pytest.approx(theirs.high, rel=0.02)


def test_nan_is_left_out_and_counted_and_bad_input_is_one_line() -> None:
    x = np.array([0.2, np.nan, 0.4, 0.3, np.nan, 0.9])
    found = bootstrap_interval(x)
    assert found.n == 4 and found.dropped == 2 and found.estimate == pytest.approx(0.45)
    empty = bootstrap_interval([np.nan, np.nan])
    assert empty.n == 0 and np.isnan(empty.estimate) and empty.dropped == 2
    same = bootstrap_interval([0.5] * 10)
    assert (same.low, same.high) == (0.5, 0.5)
    with pytest.raises(VolcamError, match="infinite"):
        bootstrap_interval([1.0, np.inf])
    with pytest.raises(VolcamError, match="resamples"):
        bootstrap_interval(x, resamples=0)
    with pytest.raises(VolcamError, match="confidence"):
        bootstrap_interval(x, confidence=95)
    with pytest.raises(VolcamError, match="method"):
        pooled_interval([], method="studentized")


def test_paired_differences_resample_the_same_cases() -> None:
    rng = np.random.default_rng(2)
    case = rng.exponential(size=30)  # what the case itself brings, shared by both methods
    a = case + rng.normal(0, 0.05, 30) + 0.1
    b = case + rng.normal(0, 0.05, 30)
    paired = paired_difference(a, b)
    assert paired.difference.estimate == pytest.approx(np.mean(a - b))
    assert paired.difference.low > 0 and paired.p_value < 0.01
    # unpaired, the case effect would swamp the difference: the two intervals overlap
    assert bootstrap_interval(a).low < bootstrap_interval(b).high
    # a case missing in either method is left out of both
    a[3] = np.nan
    assert paired_difference(a, b).difference.n == 29 and paired_difference(a, b).difference.dropped == 1
    assert paired_difference(b, b).p_value == 1.0
    with pytest.raises(VolcamError, match="same cases"):
        paired_difference(a, b[:-1])


def test_a_p_value_below_5_percent_is_a_95_percent_interval_without_0() -> None:
    rng = np.random.default_rng(8)
    agree = 0
    for i in range(300):
        a, b = rng.beta(2, 5, 20), rng.beta(2, 5, 20) + rng.normal(0, 0.08)
        for method in ("studentized", "percentile"):
            found = paired_difference(a, b, seed=i, method=method)
            agree += (found.p_value < 0.05) == (found.difference.low > 0 or found.difference.high < 0)
    assert agree >= 0.98 * 600  # up to one resample at the boundary


def test_paired_p_values_are_uniform_under_no_difference() -> None:
    rng = np.random.default_rng(4)
    p = []
    for i in range(600):
        case = rng.beta(1, 4, CASES)
        p.append(paired_difference(case + rng.normal(0, 0.1, CASES), case + rng.normal(0, 0.1, CASES), 500, seed=i))
    values = np.array([one.p_value for one in p])
    for level in (0.05, 0.2, 0.5):
        assert abs(np.mean(values <= level) - level) < 0.05, level


def test_holm_against_a_hand_computation_and_statsmodels() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    found = holm([0.02, np.nan, 0.01])
    assert np.isnan(found[1]) and found[[0, 2]] == pytest.approx([0.02, 0.02])  # NaN does not count
    with pytest.raises(VolcamError):
        holm([1.5])
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(5).random(12) ** 3
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def test_hits_get_the_wilson_interval() -> None:
    all_hits = interval_of(np.ones(30), hits=1)
    assert all_hits.method == "wilson" and all_hits.high == 1.0
    assert all_hits.low == pytest.approx(30 / (30 + 1.959963984540054**2))  # Wilson's lower end at 30/30
    percent = interval_of([0, 100, 100, np.nan], hits=100)
    assert percent.estimate == pytest.approx(200 / 3) and percent.high <= 100 and percent.dropped == 1
    assert proportion_interval([0, 1, 1, 0]).low == pytest.approx(0.15003898, abs=1e-6)
    assert interval_of(np.linspace(0.1, 1, 30), hits=1).method == "studentized"  # not hits: the bootstrap
    with pytest.raises(VolcamError, match="0 or 1"):
        proportion_interval([0.5, 1])


def _histograms(rng, n: int):
    mask = torch.zeros(10, 10, 10, dtype=torch.bool)
    mask[3:6, 3:6, 3:6] = True
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    return [
        voxel_histograms(torch.rand(mask.shape, generator=g) + mask * float(rng.random()), mask)[0] for _ in range(n)
    ]


def test_pooled_intervals_resample_the_cases_histograms() -> None:
    rng = np.random.default_rng(6)
    cases = _histograms(rng, 20)
    found = pooled_interval(cases, "vxap", resamples=300, seed=9)
    assert found.estimate == pytest.approx(precision_recall(sum(cases)).vxap)
    drawn = np.random.default_rng(9).integers(0, 20, size=(300, 20))
    explicit = [precision_recall(sum(cases[i] for i in row)).vxap for row in drawn]
    assert (found.low, found.high) == pytest.approx(tuple(np.quantile(explicit, [0.025, 0.975])), abs=1e-12)
    f1 = pooled_interval(cases, "max_f1", method="bca")
    assert f1.low <= precision_recall(sum(cases)).max_f1 <= f1.high
    other = _histograms(rng, 20)
    paired = paired_pooled_difference(cases, other)
    assert paired.difference.estimate == pytest.approx(
        precision_recall(sum(cases)).vxap - precision_recall(sum(other)).vxap
    )
    assert paired_pooled_difference(cases, cases).p_value == 1.0
