"""What ``volcam validate``'s report says: its tables (:class:`Validation`) → the sections of one HTML page.

:mod:`volcam.workflows.validate` measures and fills a :class:`Validation`; :func:`report_sections` turns it
into text, tables and pictures (:mod:`volcam.viz.report_html` lays them out). Every number shown comes
from one of the validation's tables, cell for cell (each table cell carries the numbers behind its text).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volcam._version import __version__
from volcam.viz.report_html import Bullets, Facts, Number, Paragraph, Picture, Section, Table, compact_picture
from volcam.workflows.cohort.statistics import Bootstrap
from volcam.workflows.scoring import MapScores, columns, hit_columns
from volcam.workflows.specs import ValidateSpec

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = ["CHECKS", "TABLES", "Miss", "Validation", "report_sections"]

#: The checks run on a few cases (:func:`volcam.workflows.validate.check_case`): column → description.
CHECKS: dict[str, str] = {
    "sanity_passed": "the map changed when every block's weights were randomised (Adebayo et al.; 1 pass, 0 fail)",
    "sanity_spearman": "Spearman rank correlation with the original map, every block random (lower: changed more)",
    "sanity_ssim": "SSIM with the original map, every block random (lower: changed more)",
    "max_sensitivity": "max relative change of the map under ±2 % uniform input noise, 4 draws (lower is steadier)",
    "road": "ROAD: (LeRF − MoRF)/2 over 10..90 % removed, noisy linear imputation (higher is better)",
}
#: The tables a validation writes (``<name>.csv`` and ``<name>.parquet``) and what each holds.
TABLES: dict[str, str] = {
    "cases": "one row per case: the cohort's results table (prediction, probabilities, every score of every "
    "method's map, timings) with the scan's shape and spacing",
    "scores": "each score's mean with its 95 % interval per method and group of cases (group, method, metric, mean, "
    "low, high, n, interval); the checks' under the group 'checked cases'",
    "pooled": "VxAP and MaxF1 over the pooled voxels per method and group, with intervals, and the precision, "
    "recall and threshold at MaxF1",
    "comparisons": "every pair of methods on the same cases: metric, a, b, n, difference (a − b), low, high, p, p_holm",
    "ranking": "the methods ranked by pooled VxAP, with the difference from the first, its p and p_holm (Holm "
    "over the ranking's comparisons)",
    "checks": "per checked case and method: the sanity check, max-sensitivity, ROAD and their seconds",
}
# the scores each section shows, in order
LOCALISATION = (
    "pointing_hit", "energy_in_mask", "energy_random", "lesion_hit_rate", "dice_matched", "iou_at_0.5", "vxap",
    "max_f1",
)  # fmt: skip
FAITHFULNESS = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence")


@dataclass(frozen=True)
class Miss:
    """A case a method's map missed, pictured: the montage (a PNG in the report's folder) and what it shows."""

    method: str
    case: str
    picture: Path
    caption: str


@dataclass(frozen=True)
class Validation:
    """Everything the report shows; the tables are pandas DataFrames (:data:`TABLES`)."""

    model: Model
    manifest: str
    spec: ValidateSpec
    bootstrap: Bootstrap
    tables: Mapping[str, Any]
    misses: Sequence[Miss] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    regions: int = 0  # cases with a region (lung) mask
    fingerprint: str = ""


def report_sections(v: Validation) -> list[Section]:
    """The report's sections, in order."""
    return [
        _summary(v), _model_and_data(v), _ranking(v), _localisation(v), _faithfulness(v), _checks(v),
        _compared(v), _groups(v), _misses(v), _limits(v), _definitions(v),
    ]  # fmt: skip


# -- cells ------------------------------------------------------------------------------------------


def _interval(mean: float, low: float, high: float, ref: str = "", digits: int = 3) -> Number:
    text = f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return Number(text, {"value": mean, "low": low, "high": high}, ref)


def _score(row: Any, ref: str) -> Number:
    """A row of the scores table as a cell: a hit rate as ``k/n · rate [low, high]``, else ``mean [low, high]``."""
    scale = hit_columns(MapScores).get(row.metric, 1.0 if row.metric == "sanity_passed" else None)
    if row.interval == "wilson" and scale:
        hits = round(row.mean / scale * row.n)
        shown = f"{hits}/{row.n} · {row.mean:.2f} [{row.low:.2f}, {row.high:.2f}]"
        return Number(shown, {"value": row.mean, "low": row.low, "high": row.high}, ref)
    return _interval(row.mean, row.low, row.high, ref)


def _metric_table(v: Validation, metrics: Sequence[str], group: str, caption: str) -> Table | None:
    """Rows: the metrics measured; columns: the methods; cells: mean [interval] (n in the header note)."""
    scores = v.tables["scores"]
    rows = scores[scores["group"] == group]
    methods = list(v.spec.methods)
    body = []
    for metric in metrics:
        found = {r.method: _score(r, f"{group}|{r.method}|{metric}") for r in rows.itertuples() if r.metric == metric}
        if found:
            body.append([_label(metric), *[found.get(m, "–") for m in methods]])
    if not body:
        return None
    n = ", ".join(sorted({str(int(k)) for k in rows.loc[rows["metric"].isin(metrics), "n"]}))
    return Table(["score", *methods], body, f"{caption} (n = {n} cases)", "scores")


def _label(metric: str) -> str:
    return {
        "pointing_hit": "pointing game (hits)", "energy_in_mask": "energy in lesions", "energy_random":
        "energy of a uniform map (baseline)", "lesion_hit_rate": "lesions hit", "dice_matched": "Dice, top-n voxels",
        "iou_at_0.5": "IoU at half maximum", "vxap": "VxAP (mean per case)", "max_f1": "MaxF1 (mean per case)",
        "deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑", "average_drop": "Average Drop % ↓",
        "increase_in_confidence": "Increase in Confidence % ↑", "sanity_passed": "sanity check passed",
        "sanity_spearman": "Spearman, all random ↓", "sanity_ssim": "SSIM, all random ↓",
        "max_sensitivity": "max-sensitivity ↓", "road": "ROAD ↑",
    }.get(metric, metric)  # fmt: skip


# -- sections ---------------------------------------------------------------------------------------


def _summary(v: Validation) -> Section:
    cases = v.tables["cases"]
    ok = int((cases["status"] == "ok").sum())
    ranking = v.tables["ranking"]
    items = [
        f"{len(cases)} cases ({ok} explained and scored, {len(cases) - ok} failed) from {Path(v.manifest).name}; "
        f"model {v.model.name}; methods {', '.join(v.spec.methods)}.",
    ]
    if len(ranking):
        best = ranking.iloc[0]
        items.append(
            f"Ranked by VxAP over the pooled voxels, {best['method']} comes first: {best['vxap']:.3f} "
            f"[{best['vxap_low']:.3f}, {best['vxap_high']:.3f}]. Whether that lead is more than chance is in "
            "the ranking's last columns."
        )
    scores = v.tables["scores"]
    hits = scores[(scores["group"] == "all") & (scores["metric"] == "pointing_hit")]
    items += [
        f"{r.method}: the map's maximum lies within {v.spec.tolerance_mm:g} mm of a lesion on "
        f"{round(r.mean * r.n)} of {r.n} cases ({r.low:.2f}–{r.high:.2f}, 95 % Wilson)."
        for r in hits.itertuples()
    ]
    note = f"Intervals: {v.bootstrap.describe()}; Wilson's score interval for hit rates."
    return Section("summary", "Summary", [Bullets(items), Paragraph(note, "note")])


def _model_and_data(v: Validation) -> Section:
    card = v.model.card
    network = card.network.get("monai") or card.network.get("class") or "custom"
    steps = " → ".join(str(step.get("name", "?")) for step in card.preprocessing) or "none"
    facts = [
        ("model", f"{card.name} ({card.kind}, {card.modality or 'modality not given'})"),
        ("description", card.description or "–"),
        ("network", f"{network} {json.dumps(card.network.get('args', {}), separators=(',', ':'))[:300]}"),
        ("classes", ", ".join(card.labels)),
        ("layer", str(v.spec.layer or card.layer)),
        ("preprocessing", steps),
        ("weights", card.weights.name if card.weights else "–"),
        ("the card's own metrics", json.dumps(card.metrics, separators=(", ", ": "))[:400] if card.metrics else "–"),
    ]
    return Section("model", "Model and data", [Facts(facts), *_data_blocks(v)])


def _data_blocks(v: Validation) -> list[Any]:
    cases = v.tables["cases"]
    ok = cases[cases["status"] == "ok"]
    labels = ", ".join(f"{k} {n}" for k, n in ok["label"].replace("", "none").value_counts().items())
    predicted = ", ".join(f"{k} {n}" for k, n in ok["prediction"].value_counts().items())
    labelled = ok[ok["correct"].notna()]
    right = int(labelled["correct"].astype(bool).sum())
    masks = int((ok["mask"] != "").sum())
    facts = [
        ("manifest", Path(v.manifest).name),
        ("cases", f"{len(cases)} ({len(ok)} ok, {len(cases) - len(ok)} failed)"),
        ("labels", labels or "none"),
        ("predicted", predicted or "none"),
        ("accuracy", f"{right}/{len(labelled)} labelled cases" if len(labelled) else "no labels"),
        ("class explained", "the predicted one" if v.spec.target is None else str(v.spec.target)),
        ("lesion masks", f"{masks} of {len(ok)} cases"),
        ("region (lungs)", f"{v.regions} cases: energy, VxAP, MaxF1 and deletion/insertion stay within it"
         if v.regions else "none: the whole scan"),
        ("scans", _grids(ok)),
    ]  # fmt: skip
    blocks: list[Any] = [Facts(facts)]
    failed = cases[cases["status"] != "ok"]
    if len(failed):
        rows = [[str(r.case), str(r.error)] for r in failed.itertuples()]
        blocks.append(Table(["case", "error"], rows, "Cases that failed (not in any number below)", "cases"))
    return blocks


def _grids(ok: Any) -> str:
    """The scans' shapes and spacings, each distinct one with how many cases have it."""
    if "shape" not in ok:
        return "–"
    found = (ok["shape"] + " voxels of " + ok["spacing_mm"] + " mm").value_counts()
    return "; ".join(f"{grid} ({n})" for grid, n in found.items())


def _ranking(v: Validation) -> Section:
    ranking = v.tables["ranking"]
    if not len(ranking):
        return Section("ranking", "Ranking", [Paragraph("No method has a VxAP: no case has lesions in its mask.")])
    first = ranking.iloc[0]["method"]
    rows = []
    for r in ranking.itertuples():
        m = r.method
        versus = "–" if m == first else _interval(r.difference, r.difference_low, r.difference_high, f"{m}|difference")
        p = "–" if m == first else Number(f"{r.p_holm:.4f}", {"value": r.p_holm}, f"{m}|p_holm")
        rows.append([
            str(r.rank), m, _interval(r.vxap, r.vxap_low, r.vxap_high, f"{m}|vxap"),
            _interval(r.max_f1, r.max_f1_low, r.max_f1_high, f"{m}|max_f1"), versus, p,
        ])  # fmt: skip
    columns = ["rank", "method", "VxAP (pooled)", "MaxF1 (pooled)", f"VxAP − {first}'s", "p (Holm)"]
    text = (
        "Methods in order of VxAP over the voxels of every case pooled (SE3D's figure of merit: how well the map's "
        "values separate lesion from other voxels, 0 to 1; a map that knows nothing scores the lesions' share of the "
        f"voxels). The difference from {first} is over the same cases, its interval from resampling them, and p is "
        f"Holm-corrected over the ranking's {max(len(ranking) - 1, 0)} comparisons with {first}. A p above 0.05 "
        "means these cases do not tell the two methods apart, whatever their order."
    )
    return Section("ranking", "Ranking", [Paragraph(text), Table(columns, rows, "Methods ranked", "ranking")])


def _localisation(v: Validation) -> Section:
    blocks: list[Any] = [
        Paragraph(
            "Where the map points, against the lesion masks on the scan's grid. Pointing: the map's maximum "
            f"within {v.spec.tolerance_mm:g} mm of a lesion. Energy: the map's share inside the lesions, beside what "
            "a uniform map would score. VxAP and MaxF1 here are means of the per-case values; the pooled ones "
            "are in the ranking and below."
        )
    ]
    table = _metric_table(v, LOCALISATION, "all", "Localisation per method, mean [95 % interval]")
    blocks += [table] if table is not None else [Paragraph("No case with a lesion mask was scored.", "warning")]
    pooled = v.tables["pooled"]
    pooled = pooled[pooled["group"] == "all"] if len(pooled) else pooled
    rows = [
        [r.method, str(r.cases), _interval(r.vxap, r.vxap_low, r.vxap_high, f"{r.group}|{r.method}|vxap"),
         _interval(r.max_f1, r.max_f1_low, r.max_f1_high, f"{r.group}|{r.method}|max_f1"), f"{r.precision:.3f}",
         f"{r.recall:.3f}", f"{r.threshold:.2f}"]
        for r in pooled.itertuples()
    ]  # fmt: skip
    if rows:
        columns = ["method", "cases", "VxAP", "MaxF1", "precision at MaxF1", "recall at MaxF1", "threshold"]
        blocks.append(Table(columns, rows, "VxAP and MaxF1 over the pooled voxels of every case", "pooled"))
    return Section("localisation", "Localisation", blocks)


def _faithfulness(v: Validation) -> Section:
    where = "within each case's region (the lungs)" if v.regions else "over the whole network input"
    steps = v.spec.faithfulness_steps
    text = (
        f"Does the model need what the map marks? Deletion: the most salient voxels {where} are removed "
        f"(set to 0 in the network's input units) in {steps} steps and the explained class's probability is "
        "followed (a lower area: the map found what the model uses); insertion starts from a blurred input and "
        "puts the most salient voxels back (a higher area is better)."
    )
    if not steps:
        return Section("faithfulness", "Faithfulness", [Paragraph("Not measured (faithfulness steps 0).", "note")])
    table = _metric_table(v, FAITHFULNESS, "all", "Faithfulness per method, mean [95 % interval]")
    blocks: list[Any] = [Paragraph(text)] + ([table] if table is not None else [])
    if v.spec.road:
        road = _metric_table(v, ("road",), "checked cases", "ROAD on the checked cases")
        blocks += [road] if road is not None else []
    return Section("faithfulness", "Faithfulness", blocks)


def _checks(v: Validation) -> Section:
    if not v.spec.sanity_cases:
        return Section("checks", "Sanity check and robustness", [Paragraph("Not run (sanity cases 0).", "note")])
    text = (
        f"On the first {v.spec.sanity_cases} cases that were explained: the cascading randomisation check (the "
        "network's blocks re-initialised from the head down; a map that still looks the same once every block is "
        "random shows the input, not the model) and max-sensitivity (how much the map moves under small input "
        "noise)."
    )
    table = _metric_table(v, ("sanity_passed", "sanity_spearman", "sanity_ssim", "max_sensitivity"),
                          "checked cases", "Checks per method, mean [95 % interval]")  # fmt: skip
    checks = v.tables["checks"]
    failed = checks[checks["sanity_passed"] == 0] if "sanity_passed" in checks else checks.iloc[:0]
    blocks: list[Any] = [Paragraph(text)] + ([table] if table is not None else [])
    if len(failed):
        names = ", ".join(sorted({f"{r.method} on {r.case}" for r in failed.itertuples()}))
        blocks.append(Paragraph(f"Failed the randomisation check: {names}.", "warning"))
    return Section("checks", "Sanity check and robustness", blocks)


def _compared(v: Validation) -> Section:
    comparisons = v.tables["comparisons"]
    if not len(comparisons):
        return Section("compared", "Methods compared", [Paragraph("One method: nothing to compare.", "note")])
    rows = [
        [r.metric, f"{r.a} − {r.b}", str(r.n),
         _interval(r.difference, r.low, r.high, f"{r.metric}|{r.a}|{r.b}|difference"),
         Number(f"{r.p:.4f}", {"value": r.p}, f"{r.metric}|{r.a}|{r.b}|p"),
         Number(f"{r.p_holm:.4f}", {"value": r.p_holm}, f"{r.metric}|{r.a}|{r.b}|p_holm")]
        for r in comparisons.itertuples()
    ]  # fmt: skip
    floor = 2 / (v.bootstrap.resamples + 1)
    text = (
        "Each pair of methods on the cases both were scored on: the mean difference a − b with its interval from "
        "resampling the cases (the same resample for both), a two-sided bootstrap p-value, and Holm's correction "
        f"for the {len(comparisons)} comparisons of this table. Which sign is better depends on the score "
        f"(↓ lower, ↑ higher is better). With {v.bootstrap.resamples} resamples no p is below {floor:.2g}, so no "
        f"Holm-corrected p here is below {min(1.0, floor * len(comparisons)):.2g}: more resamples resolve smaller "
        "ones."
    )
    columns = ["score", "a − b", "n", "difference [95 %]", "p", "p (Holm)"]
    return Section("compared", "Methods compared", [Paragraph(text), Table(columns, rows, "", "comparisons")])


def _groups(v: Validation) -> Section:
    scores = v.tables["scores"]
    groups = [g for g in dict.fromkeys(scores["group"]) if g not in ("all", "checked cases")]
    total = scores.loc[scores["group"] == "all", "n"].max() if len(scores) else 0
    blocks: list[Any] = []
    for group in groups:
        if scores.loc[scores["group"] == group, "n"].max() == total:
            continue  # the same cases as all of them
        table = _metric_table(v, ("pointing_hit", "energy_in_mask", "vxap", "deletion_auc"), group, _title(group))
        blocks += [table] if table is not None else []
    if not blocks:
        blocks = [Paragraph("Every group of cases (each class, right and wrong predictions) is all of them.", "note")]
    return Section("groups", "By group of cases", blocks)


def _title(group: str) -> str:
    if group in ("correct", "wrong"):
        return f"Cases the model classified {'right' if group == 'correct' else 'wrong'}"
    return f"Cases labelled {group.removeprefix('label ')}"


def _misses(v: Validation) -> Section:
    text = (
        f"For each method, up to {v.spec.misses} cases whose map's maximum lies more than {v.spec.tolerance_mm:g} mm "
        "from every lesion, least energy in the lesions first: the two slices with the most map and the two with "
        "the most lesion, the map over the image, the lesions outlined in white."
    )
    blocks: list[Any] = [Paragraph(text)]
    for method in v.spec.methods:
        shown = [m for m in v.misses if m.method == method]
        if not shown:
            why = "no pictures asked" if not v.spec.misses else "its map pointed into a lesion on every case"
            blocks.append(Paragraph(f"{method}: {why}.", "note"))
        blocks += [Picture(compact_picture(m.picture), m.caption, alt=f"{m.method} on {m.case}") for m in shown]
    return Section("misses", "Where the maps miss", blocks)


def _limits(v: Validation) -> Section:
    cases = v.tables["cases"]
    n = int((cases["status"] == "ok").sum())
    checked = min(v.spec.sanity_cases, n)
    items = [
        f"It describes these {n} cases and this model, nothing more. If the cases are synthetic phantoms, they are "
        "not patients: their lesions, anatomy and noise are simpler, and a method that finds phantom lesions may not "
        "find real ones.",
        "The intervals assume the cases are exchangeable draws from the population the model will meet. Cases from "
        "one scanner, site or patient group, or chosen because they were easy, make them too narrow.",
        f"With {n} cases an interval is wide; a difference whose interval holds 0 is not shown to be absent, only "
        "not shown. Holm's correction guards the comparisons of this report as one family, no more.",
        f"The sanity check and robustness ran on {checked} cases only: they can show a method failing, not prove it "
        "sound, and their intervals are rough (a bootstrap of so few cases may even cross a bound such as 0). "
        "Robustness is to small uniform noise, not to another scanner or protocol.",
        "Localisation is measured against the masks as given: a mask that misses lesions, or a model that uses "
        "evidence outside them (and is right to), lowers the scores without the map being wrong. Pointing and "
        "energy say where the map is, not whether the model is right for the right reason.",
        "Faithfulness perturbs the network's input with one baseline (zero for deletion, a blur for insertion); "
        "other baselines rank methods differently, and perturbed inputs are out of the training distribution.",
        "Nothing here is a clinical validation of the model's diagnoses.",
    ]
    return Section("limits", "What this report cannot say", [Bullets(items)])


def _definitions(v: Validation) -> Section:
    described = {**columns(MapScores), **CHECKS}
    shown = dict.fromkeys(v.tables["scores"]["metric"])
    items = [f"{_label(m)} ({m}): {described.get(m, '')}" for m in shown]
    items.append(
        f"Intervals: {v.bootstrap.describe()}; studentized bootstrap for means (the percentile interval where "
        "nearly every case has the same value), Wilson's score interval for hit rates, percentile for the pooled "
        "VxAP and MaxF1 and for the checks of a few cases (docs/methods.md#intervals)."
    )
    files = [f"{name}.csv / {name}.parquet: {what}" for name, what in TABLES.items()]
    seconds = ", ".join(f"{k} {s:.0f} s" for k, s in v.seconds.items())
    facts = [("volcam", __version__), ("cohort fingerprint", v.fingerprint or "–"), ("wall time", seconds or "–")]
    return Section("definitions", "Definitions and files", [Bullets(items), Bullets(files), Facts(facts)])
