"""A cohort's outputs for people and programs: the results table, ``summary.md`` (with intervals, the
pooled VxAP/MaxF1 and the methods compared: :mod:`.statistics`) and a PNG of distributions.

The table has one row per case, in manifest order; its columns are the fields of a case's record
(:class:`~volcam.workflows.cohort.records.CaseRecord`: case, image, mask, label, status, error,
prediction, target, correct, ``p_<class>`` per class, ``<method>.<metric>`` per method and score, the
timings in seconds), described at the end of ``summary.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volcam.io.atomic import atomic_file
from volcam.io.tables import Case
from volcam.workflows.cohort.records import METRICS, TIMINGS, CaseRecord, Settings, column_descriptions
from volcam.workflows.cohort.statistics import Bootstrap, metric_intervals, paired_comparisons, pooled_scores
from volcam.workflows.scoring import MapScores, columns, hit_columns

__all__ = ["METRICS", "results_table", "write_report"]


def results_table(
    cases: Sequence[Case], records: Mapping[str, CaseRecord], methods: Sequence[str], labels: Sequence[str]
) -> Any:
    """One row per case (manifest order) from the cases' records; the same columns whatever failed."""
    import pandas as pd

    rows = [records.get(case.case_id, CaseRecord()).on(case, labels).row(methods, labels) for case in cases]
    # the columns from the record's fields, not from the rows: every one is there whatever the rows hold
    table = pd.DataFrame(rows, columns=list(CaseRecord().row(methods, labels)))
    table["correct"] = table["correct"].astype("boolean")
    # Metrics nobody computed (no masks, faithfulness off) are left out rather than all-NaN columns.
    empty = [c for c in table.columns if "." in c and c.split(".", 1)[0] in methods and table[c].isna().all()]
    return table.drop(columns=empty)


def _auc(table: Any, labels: Sequence[str]) -> tuple[str, float | None]:
    """(what was scored, AUC) against the labels; ``None`` when the labelled cases lack a class."""
    from sklearn.metrics import roc_auc_score

    scored = table[table["correct"].notna()]
    present = set(scored["label"])
    if len(labels) < 2 or len(present) < 2:
        return "AUC", None
    if len(labels) == 2:
        return f"AUC ({labels[1]} vs {labels[0]})", float(
            roc_auc_score(scored["label"] == labels[1], scored[f"p_{labels[1]}"])
        )
    if present != set(labels):
        return "AUC (one vs rest)", None
    probabilities = scored[[f"p_{name}" for name in labels]].to_numpy()
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return "AUC (one vs rest, macro)", float(
        roc_auc_score(
            scored["label"].map(list(labels).index), probabilities, multi_class="ovr", labels=range(len(labels))
        )
    )


def _summary(
    table: Any,
    records: Mapping[str, CaseRecord],
    settings: Settings,
    model: Any,
    manifest: Any,
    computed: Sequence[str],
    seconds: float,
    bootstrap: Bootstrap,
) -> str:
    """``summary.md``: what ran, against the labels, per method with intervals, the pooled VxAP/MaxF1,
    the methods compared, the failures, time, the columns."""
    ok = table[table["status"] == "ok"]
    errors = table[table["status"] != "ok"]
    methods, labels = settings.spec.methods, list(model.labels)
    lines = [*_head(table, settings, model, manifest, computed, seconds), *_against_labels(ok, table, labels)]
    lines += _per_method(metric_intervals(ok, methods, labels, bootstrap), methods, bootstrap)
    lines += _pooled(pooled_scores(ok, records, methods, labels, bootstrap), bootstrap)
    lines += _compared(paired_comparisons(ok, records, methods, bootstrap), bootstrap)
    if len(errors):
        lines += ["", "## Failed cases", "", "| case | error |", "|---|---|"]
        lines += [f"| {row.case} | {str(row.error).replace('|', '/')} |" for row in errors.itertuples()]
    if len(ok):
        means = ", ".join(f"{t[:-2]} {ok[t].mean():.2f} s" for t in TIMINGS if t in ok and ok[t].notna().any())
        lines += ["", "## Time per case (mean over ok cases)", "", means]
    lines += ["", "## Columns of results.parquet and results.csv", ""]
    lines += [f"- `{name}`: {doc}" for name, doc in column_descriptions().items()]
    return "\n".join(lines) + "\n"


def _head(
    table: Any, settings: Settings, model: Any, manifest: Any, computed: Sequence[str], seconds: float
) -> list[str]:
    spec = settings.spec
    explained = "the predicted one" if spec.target is None else spec.target
    dicom = f"; sent to {spec.store}" if spec.store else ""
    ok = int((table["status"] == "ok").sum())
    return [
        f"# Cohort: {model.name} on {Path(manifest).name}",
        "",
        f"- cases: {len(table)} ({ok} ok, {len(table) - ok} failed)",
        f"- this run: {len(computed)} cases done in {seconds:.1f} s"
        + (f" ({len(computed) / seconds * 60:.1f} cases/min)" if computed and seconds > 0 else "")
        + f", {len(table) - len(computed)} found finished",
        f"- methods: {', '.join(spec.methods)}; class explained: {explained}; layer: {spec.layer or model.card.layer}",
        f"- faithfulness: {spec.faithfulness_steps or 'off'} deletion/insertion steps; "
        f"pointing tolerance {spec.tolerance_mm:g} mm",
        *([f"- DICOM per map: {', '.join(spec.dicom)}{dicom}"] if spec.dicom else []),
        f"- fingerprint: `{settings.fingerprint}`",
    ]


def _against_labels(ok: Any, table: Any, labels: Sequence[str]) -> list[str]:
    """Accuracy, AUC and the confusion table of the ok cases labelled with one of the model's classes."""
    labels = list(labels)
    lines = ["", "## Against the labels", ""]
    labelled = ok[ok["correct"].notna()]
    if len(labelled):
        what, auc = _auc(table, labels)
        accuracy = float(labelled["correct"].mean())
        lines.append(f"- accuracy {accuracy:.3f} ({int(labelled['correct'].sum())}/{len(labelled)} labelled cases)")
        lines.append(
            f"- {what} {auc:.3f}" if auc is not None else f"- {what}: n/a (needs every class among the labels)"
        )
        lines += ["", "| label \\ prediction | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for truth in labels:
            counts = [int(((labelled["label"] == truth) & (labelled["prediction"] == p)).sum()) for p in labels]
            lines.append(f"| {truth} | " + " | ".join(map(str, counts)) + " |")
    else:
        lines.append("No case with a label among the model's classes (" + ", ".join(labels) + ").")
    unknown = sorted(set(ok.loc[ok["correct"].isna() & (ok["label"] != ""), "label"]))
    if unknown:
        lines.append(f"- labels not among the model's classes (not scored): {', '.join(unknown)}")
    return lines


def _cell(mean: float, low: float, high: float, n: int | None = None) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" + (f" ({n})" if n is not None else "")


def _per_method(intervals: Any, methods: Sequence[str], bootstrap: Bootstrap) -> list[str]:
    """Each score's mean [interval] (n) per method, a table per group of cases, and what each score is."""
    if not len(intervals):
        return []
    hits = ", ".join(f"`{name}`" for name in hit_columns(MapScores))
    lines = [
        "", f"## Per method: mean [{bootstrap.confidence:.0%} interval] (n)", "",
        f"Intervals: {bootstrap.describe()} (studentized; the percentile interval where nearly every case "
        f"has the same value); Wilson's score interval for hits ({hits}). docs/methods.md#intervals",
    ]  # fmt: skip
    tables: dict[tuple[str, ...], list[str]] = {}  # a table → the groups it holds for (the same numbers)
    for group in dict.fromkeys(intervals["group"]):
        rows = intervals[intervals["group"] == group]
        body = ["| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for metric in dict.fromkeys(rows["metric"]):
            found = {row.method: _cell(row.mean, row.low, row.high, row.n) for row in rows.itertuples()
                     if row.metric == metric}  # fmt: skip
            body.append(f"| {metric} | " + " | ".join(found.get(m, "") for m in methods) + " |")
        tables.setdefault(tuple(body), []).append(group)
    for table, groups in tables.items():
        lines += ["", "### " + "; ".join(_group_title(g) for g in groups), "", *table]
    described = columns(MapScores)
    measured = dict.fromkeys(intervals["metric"])
    return [*lines, "", *[f"- `{m}`: {described[m]}" for m in measured]]


def _group_title(group: str) -> str:
    if group == "all":
        return "all ok cases"
    if group in ("correct", "wrong"):
        return f"cases the model classified {'right' if group == 'correct' else 'wrong'}"
    return f"cases labelled {group.removeprefix('label ')}"


def _pooled(pooled: Any, bootstrap: Bootstrap) -> list[str]:
    """The pooled VxAP and MaxF1 per method and group (SE3D's code pools the voxels of every case)."""
    if not len(pooled):
        return []
    lines = [
        "", "## VxAP and MaxF1 over the pooled voxels of the cases with lesions", "",
        "Each map min-max normalised, its voxels counted per threshold 0, 0.01, …, 1 and pooled over the cases "
        "(as SE3D's code computes them; the per-case means are in the tables above). Interval: "
        f"{bootstrap.describe()}, percentile, the cases' histograms resampled. docs/methods.md#vxap",
        "", "| cases | method | n | VxAP | MaxF1 | precision | recall | threshold |", "|---" * 8 + "|",
    ]  # fmt: skip
    rows: dict[str, list[str]] = {}  # a row's numbers → the groups they hold for
    for row in pooled.itertuples():
        numbers = (
            f"{row.method} | {row.cases} | {_cell(row.vxap, row.vxap_low, row.vxap_high)} | "
            f"{_cell(row.max_f1, row.max_f1_low, row.max_f1_high)} | {row.precision:.3f} | {row.recall:.3f} | "
            f"{row.threshold:.2f} |"
        )
        rows.setdefault(numbers, []).append(row.group)
    return [*lines, *[f"| {', '.join(groups)} | {numbers}" for numbers, groups in rows.items()]]


def _compared(comparisons: Any, bootstrap: Bootstrap) -> list[str]:
    """Each pair of methods on the same cases: the mean difference, its interval, p and Holm's p."""
    if not len(comparisons):
        return []
    lines = [
        "", "## Methods compared on the same cases", "",
        f"a − b over the cases both were measured on; interval: {bootstrap.describe()}, the same cases "
        "resampled for both; p: two-sided bootstrap test of no difference, and Holm's correction for the "
        f"{len(comparisons)} comparisons of this table. Which sign is better depends on the score (above).",
        "", "| score | a − b | n | difference | p | p (Holm) |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in comparisons.itertuples():
        lines.append(
            f"| {row.metric} | {row.a} − {row.b} | {row.n} | {_cell(row.difference, row.low, row.high)} | "
            f"{row.p:.4f} | {row.p_holm:.4f} |"
        )
    return lines


def _plot(table: Any, methods: Sequence[str], labels: Sequence[str], path: Path) -> None:
    """Predicted probability by true label, then one box per method for each metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = table[table["status"] == "ok"]
    metrics = [m for m in METRICS if any(f"{method}.{m}" in table for method in methods)]
    panels = 1 + len(metrics)
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(3.6 * columns, 3.0 * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_axis_off()
    positive = labels[-1] if labels else None
    if positive is not None and f"p_{positive}" in ok:
        groups = [(name, ok.loc[ok["label"] == name, f"p_{positive}"].dropna()) for name in [*labels, ""]]
        groups = [(name or "no label", values) for name, values in groups if len(values)]
        for name, values in groups:
            axes[0].hist(values, bins=20, range=(0, 1), alpha=0.6, label=f"{name} ({len(values)})")
        axes[0].set_xlabel(f"P({positive})")
        axes[0].set_ylabel("cases")
        if groups:
            axes[0].legend(fontsize=7, title="true label", title_fontsize=7)
    axes[0].set_title("predicted probability", fontsize=9)
    for ax, metric in zip(axes[1:], metrics, strict=False):
        data = [ok[f"{m}.{metric}"].dropna().to_numpy() if f"{m}.{metric}" in ok else [] for m in methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), list(methods), rotation=30, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    figure.suptitle(f"{len(ok)} cases", fontsize=10)
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90, facecolor="white")


def write_report(
    cases: Sequence[Case],
    records: Mapping[str, CaseRecord],
    settings: Settings,
    model: Any,
    manifest: str | os.PathLike,
    *,
    computed: Sequence[str],
    seconds: float,
    bootstrap: Bootstrap | None = None,
) -> Any:
    """Write ``results.parquet``, ``results.csv``, ``summary.md``, ``distributions.png``; return the table.

    ``bootstrap``: how ``summary.md``'s intervals are drawn (2000 resamples, 95 %, seed 0 by default)."""
    out = settings.out
    labels = list(model.labels)
    table = results_table(cases, records, settings.spec.methods, labels)
    with atomic_file(out / "results.parquet") as temporary:
        table.to_parquet(temporary, index=False)
    with atomic_file(out / "results.csv") as temporary:
        table.to_csv(temporary, index=False)
    with atomic_file(out / "summary.md") as temporary:
        temporary.write_text(
            _summary(table, records, settings, model, manifest, computed, seconds, bootstrap or Bootstrap())
        )
    _plot(table, settings.spec.methods, labels, out / "distributions.png")
    return table
