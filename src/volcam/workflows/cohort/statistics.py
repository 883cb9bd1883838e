"""A cohort's numbers with their uncertainty: each metric's mean with a 95 % interval per group of cases
(all, each class, correct and wrong predictions), the pooled VxAP and MaxF1, and paired comparisons of
the methods on the same cases (Holm-corrected).

Each function returns a table (pandas) that ``summary.md`` renders (:mod:`.report`) and any later report
can reuse. The statistics are :mod:`volcam.metrics.intervals`'; definitions: docs/methods.md#intervals.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from volcam.metrics.intervals import (
    CONFIDENCE,
    RESAMPLES,
    Pooled,
    holm,
    interval_of,
    paired_difference,
    paired_pooled_difference,
    pooled_interval,
)
from volcam.metrics.voxel_precision import VoxelHistograms, pool, precision_recall
from volcam.workflows.cohort.records import METRICS, CaseRecord
from volcam.workflows.scoring import MapScores, compared_columns, hit_columns

__all__ = ["Bootstrap", "case_groups", "metric_intervals", "paired_comparisons", "pooled_scores"]

#: The pooled statistics, by the name a comparison gives them.
POOLED: dict[str, Pooled] = {"pooled vxap": "vxap", "pooled max_f1": "max_f1"}


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn: resampled cohorts, coverage, the generator's seed."""

    resamples: int = RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = 0

    def options(self) -> dict[str, Any]:
        """The keywords of :mod:`volcam.metrics.intervals`' functions."""
        return {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed}

    def describe(self) -> str:
        return f"{self.confidence:.0%} case-level bootstrap, {self.resamples} resamples, seed {self.seed}"


def case_groups(ok: Any, labels: Sequence[str]) -> list[tuple[str, Any]]:
    """The groups a cohort's ok cases are summarised in, those with a case: every case, each class
    (``label <name>``), and the labelled cases the model got right or wrong."""
    found = [("all", ok)]
    found += [(f"label {name}", ok[ok["label"] == name]) for name in labels]
    labelled = ok[ok["correct"].notna()]
    right = labelled["correct"].astype(bool)
    found += [("correct", labelled[right]), ("wrong", labelled[~right])]
    return [(name, rows) for name, rows in found if len(rows)]


def metric_intervals(ok: Any, methods: Sequence[str], labels: Sequence[str], bootstrap: Bootstrap) -> Any:
    """Each measured ``<method>.<metric>``'s mean and interval per group: columns group, method, metric,
    mean, low, high, n, interval (how it was computed: studentized, percentile or wilson)."""
    import pandas as pd

    hits = hit_columns(MapScores)
    rows = []
    for (group, cases), method, metric in itertools.product(case_groups(ok, labels), methods, METRICS):
        values = cases.get(f"{method}.{metric}")
        if values is None or values.isna().all():
            continue
        found = interval_of(values.to_numpy(np.float64), hits=hits.get(metric), **bootstrap.options())
        rows.append(
            {"group": group, "method": method, "metric": metric, "mean": found.estimate, "low": found.low,
             "high": found.high, "n": found.n, "interval": found.method}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "method", "metric", "mean", "low", "high", "n", "interval"])


def _histograms(records: Mapping[str, CaseRecord], cases: Any, method: str) -> dict[str, VoxelHistograms]:
    """Case → the method's voxel histograms, for the cases that have them (a lesion mask with lesions)."""
    found = {}
    for case in cases["case"]:
        record = records.get(case)
        scores = next((one.scores for one in record.maps if one.method == method), None) if record else None
        histograms = scores.histograms() if scores is not None else None
        if histograms is not None:
            found[case] = histograms
    return found


def pooled_scores(
    ok: Any, records: Mapping[str, CaseRecord], methods: Sequence[str], labels: Sequence[str], bootstrap: Bootstrap
) -> Any:
    """VxAP and MaxF1 of each method's voxels pooled over each group's cases (SE3D's code), with intervals
    from resampling the cases, and the precision, recall and threshold at the pooled MaxF1."""
    import pandas as pd

    rows = []
    options = bootstrap.options()
    for (group, cases), method in itertools.product(case_groups(ok, labels), methods):
        histograms = list(_histograms(records, cases, method).values())
        if not histograms:
            continue
        pooled = precision_recall(pool(histograms))
        vxap, f1 = pooled_interval(histograms, "vxap", **options), pooled_interval(histograms, "max_f1", **options)
        rows.append(
            {"group": group, "method": method, "cases": len(histograms), "vxap": vxap.estimate,
             "vxap_low": vxap.low, "vxap_high": vxap.high, "max_f1": f1.estimate, "max_f1_low": f1.low,
             "max_f1_high": f1.high, "precision": pooled.precision_at_max_f1, "recall": pooled.recall_at_max_f1,
             "threshold": pooled.threshold_at_max_f1}
        )  # fmt: skip
    return pd.DataFrame(rows)


def paired_comparisons(ok: Any, records: Mapping[str, CaseRecord], methods: Sequence[str], bootstrap: Bootstrap) -> Any:
    """Every pair of methods (``a − b``, in the spec's order) on every measured score that methods are
    compared by (:func:`~volcam.workflows.scoring.compared_columns`) and on the pooled VxAP and MaxF1,
    over the cases both were measured on: columns metric, a, b, n, difference, low, high, p, p_holm
    (Holm over every row of the table: one family)."""
    import pandas as pd

    options = bootstrap.options()
    rows = []
    for metric, (a, b) in itertools.product(compared_columns(MapScores), itertools.combinations(methods, 2)):
        if f"{a}.{metric}" not in ok or f"{b}.{metric}" not in ok:
            continue
        first, second = (ok[f"{method}.{metric}"].to_numpy(np.float64) for method in (a, b))
        rows.append(_comparison(metric, a, b, paired_difference(first, second, **options)))
    for (name, statistic), (a, b) in itertools.product(POOLED.items(), itertools.combinations(methods, 2)):
        of_a, of_b = _histograms(records, ok, a), _histograms(records, ok, b)
        both = [case for case in of_a if case in of_b]
        if both:
            found = paired_pooled_difference([of_a[c] for c in both], [of_b[c] for c in both], statistic, **options)
            rows.append(_comparison(name, a, b, found))
    table = pd.DataFrame(rows, columns=["metric", "a", "b", "n", "difference", "low", "high", "p"])
    table = table[table["n"] > 0].reset_index(drop=True)
    table["p_holm"] = holm(table["p"].to_numpy(np.float64))
    return table


def _comparison(metric: str, a: str, b: str, found: Any) -> dict[str, Any]:
    d = found.difference
    return {"metric": metric, "a": a, "b": b, "n": d.n, "difference": d.estimate, "low": d.low, "high": d.high,
            "p": found.p_value}  # fmt: skip
