"""``volcam validate``: a cohort with lesion masks in, one report a reviewer can read out.

:func:`validate_to_folder` is what ``volcam validate`` runs:

1. the cohort (:func:`~volcam.workflows.cohort.run.run_cohort`, in its own resumable folder beside the
   report): every case explained by every method and each map scored against the lesion mask (pointing,
   energy, VxAP, MaxF1, lesion hits) and for faithfulness (deletion/insertion within the case's region,
   the lungs, when the manifest gives one);
2. on the first few cases explained, the checks a cohort does not do: cascading weight randomisation
   (:func:`volcam.metrics.parameter_randomization`), max-sensitivity and, when asked, ROAD
   (:func:`check_case`);
3. the statistics (:mod:`volcam.workflows.cohort.statistics`): every score's mean with a 95 % interval
   per group of cases, VxAP and MaxF1 over the pooled voxels, every pair of methods compared (Holm), a
   ranking by pooled VxAP;
4. montages of the cases each method's map misses, the lesions outlined;
5. the report folder, whole or not at all: ``report.html`` (one self-contained page), each table as CSV
   and Parquet (:data:`~volcam.workflows.validation_report.TABLES`), ``misses/*.png``, ``validation.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from volcam._version import __version__
from volcam.errors import InputError, OutputError, VolcamError
from volcam.io.atomic import check_not_input, check_output_folder, output_folder
from volcam.io.tables import Case, read_cases
from volcam.workflows.cohort.case import cached_model
from volcam.workflows.cohort.records import CaseRecord, read_record
from volcam.workflows.cohort.run import run_cohort
from volcam.workflows.cohort.statistics import Bootstrap, metric_intervals, paired_comparisons, pooled_scores
from volcam.workflows.explain_folder import method_stem
from volcam.workflows.specs import ValidateSpec
from volcam.workflows.validation_report import CHECKS, TABLES, Miss, Validation, report_sections

if TYPE_CHECKING:
    import torch

    from volcam.model.model import Model

__all__ = ["check_case", "cohort_folder", "rank_methods", "validate_to_folder"]


def cohort_folder(out: str | os.PathLike) -> Path:
    """Where the cohort behind a report is kept by default: ``<out>-cohort`` beside ``out``."""
    out = Path(out)
    return out.parent / f"{out.name}-cohort"


def validate_to_folder(
    manifest: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    spec: ValidateSpec | None = None,
    *,
    cohort: str | os.PathLike | None = None,
    trust: bool = False,
    device: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **choices: Any,
) -> Validation:
    """Validate a model's explanations on a cohort with lesion masks; write the report folder ``out``.

    Args:
        manifest: a ``.csv``/``.parquet`` manifest or a folder of scans (:mod:`volcam.io.tables`); cases
            need a ``mask`` (lesions) to be scored, and may have a ``region`` (lungs).
        model: a model card (``.json``) or a MONAI bundle folder.
        out: the report's folder: ``report.html``, the tables (CSV and Parquet), ``misses/``,
            ``validation.json``; it appears whole or not at all.
        spec: what to measure (:class:`~volcam.workflows.specs.ValidateSpec`); ``choices`` as keywords change
            it, other keywords are method options.
        cohort: the cohort's folder (maps and ``case.json`` per case; a rerun resumes it); default
            :func:`cohort_folder`.
        trust, device: as for :func:`volcam.load_model`.
        progress: progress bars on stderr; echo: where to say what is skipped.

    Returns:
        the :class:`~volcam.workflows.validation_report.Validation` the report shows (its ``tables``:
        pandas DataFrames).

    Raises:
        VolcamError: a bad choice, manifest, card or folder, or a manifest without lesion masks, before
            any case runs.
    """
    spec = ValidateSpec.of(spec, **choices)
    work = Path(cohort) if cohort is not None else cohort_folder(out)
    cases = read_cases(manifest)
    inputs = _check_folders(cases, manifest, model, Path(out), work)
    started = time.perf_counter()
    table = run_cohort(manifest, model, work, spec.cohort(), trust=trust, device=device, progress=progress, echo=echo)
    seconds = {"cohort": time.perf_counter() - started}
    loaded = cached_model(Path(model), trust, device)
    records = {c.case_id: r for c in cases if (r := read_record(work / c.case_id)) is not None}
    start = time.perf_counter()
    checks = run_checks(cases, table, loaded, spec, progress)
    seconds["checks"] = time.perf_counter() - start
    bootstrap = Bootstrap(spec.resamples, seed=spec.seed)
    start = time.perf_counter()
    tables = _tables(cases, table, records, checks, loaded, spec, bootstrap)
    regions = sum(c.region is not None for c in cases)
    with output_folder(out, inputs=inputs, command="validate") as folder:
        misses = draw_misses(cases, tables["cases"], work, loaded, spec, folder / "misses")
        seconds["report"] = time.perf_counter() - start
        found = Validation(loaded, str(manifest), spec, bootstrap, tables, misses, seconds, regions, _fingerprint(work))
        write_validation(found, folder, work)
    return replace(found, misses=[replace(m, picture=Path(out) / "misses" / m.picture.name) for m in misses])


def _check_folders(cases: Sequence[Case], manifest: Any, model: Any, out: Path, work: Path) -> list[Any]:
    """The report's and the cohort's folders checked before anything runs; the inputs ``out`` must not touch."""
    if not any(case.mask is not None for case in cases):
        raise InputError(
            f"{manifest}: no case has a lesion mask (a mask column); volcam validate scores maps against them"
        )
    try:  # the report's folder is replaced whole: the cohort may not be, hold or lie inside it
        check_not_input(work, [out])
    except OutputError:
        raise OutputError(
            f"{work}: the cohort folder may not be, hold or lie inside the report's folder {out}"
        ) from None
    inputs: list[Any] = [manifest, model, work]
    for case in cases:
        inputs += [case.image, case.mask, case.region]
    check_output_folder(out, inputs)
    return inputs


def _fingerprint(work: Path) -> str:
    try:
        return str(json.loads((work / "cohort.json").read_text()).get("fingerprint", ""))
    except (OSError, ValueError):
        return ""


# -- the checks on a few cases ----------------------------------------------------------------------


def run_checks(cases: Sequence[Case], table: Any, model: Model, spec: ValidateSpec, progress: bool) -> Any:
    """:func:`check_case` for each method on the first ``spec.sanity_cases`` ok cases (manifest order): a
    DataFrame with columns case, method and :data:`~volcam.workflows.validation_report.CHECKS`, seconds."""
    import pandas as pd

    from volcam.io.load import load

    ok = table[table["status"] == "ok"].head(spec.sanity_cases)
    by_id = {c.case_id: c for c in cases}
    rows = []
    bar = tqdm(total=len(ok) * len(spec.methods), unit="map", desc="checks", disable=not progress or not len(ok))
    with bar:
        for row in ok.itertuples():
            case = by_id[row.case]
            scan = load(case.image)
            region = load(case.region) if case.region is not None else None
            target = model.labels.index(row.target) if row.target in model.labels else None
            for method in spec.methods:
                start = time.perf_counter()
                found = check_case(model, scan, method, target, spec.layer, road=spec.road, region=region)
                rows.append({"case": row.case, "method": method, **found, "seconds": time.perf_counter() - start})
                bar.update(1)
    return pd.DataFrame(rows, columns=["case", "method", *CHECKS, "seconds"])


def check_case(
    model: Model,
    scan: Any,
    method: str,
    target: int | None,
    layer: str | Sequence[str] | None = None,
    *,
    road: bool = False,
    region: Any = None,
) -> dict[str, float]:
    """The checks of one method on one scan ``(C, X, Y, Z)``, on the network's input.

    Returns:
        ``sanity_passed`` (1.0 or 0.0), ``sanity_spearman`` and ``sanity_ssim`` with every block random,
        ``max_sensitivity`` (±2 % uniform noise in the input's units, 4 draws) and ``road`` (NaN unless
        asked; only the ``region``'s voxels, a mask on the scan's grid, are ranked when given). The
        method's defaults, as ``volcam evaluate`` checks them.
    """
    from volcam.metrics import faithfulness, robustness, sanity

    x = model.prepare(scan)[None].as_tensor().to(model.device)
    chosen = model.method_layer(method, layer)
    extra = model.method_options(method, chosen)
    net, output = model.network, model.output_of
    check = sanity.parameter_randomization(net, x, method, target, chosen, output=output, **extra)
    sensitivity = robustness.max_sensitivity(net, x, method, target, chosen, n_samples=4, output=output, **extra)
    found = {
        "sanity_passed": float(check.passed),
        "sanity_spearman": float(check.spearman[-1].mean()),
        "sanity_ssim": float(check.ssim[-1].mean()),
        "max_sensitivity": float(sensitivity.value[0]),
        "road": float("nan"),
    }
    if road:
        explained = model.explain(scan, method, target, layer)
        one = explained[0] if isinstance(explained, list) else explained
        on_net = _plain(one.result.map)
        within = None if region is None else model.preprocessing.mask(_plain(region).reshape(scan.shape[1:]) != 0,
                                                                       like=scan).to(model.device)  # fmt: skip
        found["road"] = float(faithfulness.road(net, x, on_net, target, region=within, output=output).score[0])
    return found


def _plain(tensor: Any) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


# -- the tables -------------------------------------------------------------------------------------


def _tables(
    cases: Sequence[Case],
    table: Any,
    records: Mapping[str, CaseRecord],
    checks: Any,
    model: Model,
    spec: ValidateSpec,
    bootstrap: Bootstrap,
) -> dict[str, Any]:
    """Every table of :data:`~volcam.workflows.validation_report.TABLES`, from the cohort and the checks."""
    import pandas as pd

    methods, labels = list(spec.methods), list(model.labels)
    cases_table = _with_grids(table, cases)
    ok = cases_table[cases_table["status"] == "ok"]
    scores = pd.concat(
        [metric_intervals(ok, methods, labels, bootstrap), _check_intervals(checks, methods, bootstrap)],
        ignore_index=True,
    )
    pooled = pooled_scores(ok, records, methods, labels, bootstrap)
    comparisons = paired_comparisons(ok, records, methods, bootstrap)
    found = {"cases": cases_table, "scores": scores, "pooled": pooled, "comparisons": comparisons}
    found["ranking"] = rank_methods(pooled, comparisons)
    found["checks"] = checks
    return {name: found[name] for name in TABLES}


def _check_intervals(checks: Any, methods: Sequence[str], bootstrap: Bootstrap) -> Any:
    """Each check's mean and interval per method over the checked cases (group ``checked cases``): Wilson's for
    the pass rate, the percentile bootstrap for the others (a handful of cases, where the studentized interval
    is unstable: a resample of near-equal values has almost no spread)."""
    import numpy as np
    import pandas as pd

    from volcam.metrics.intervals import bootstrap_interval, proportion_interval

    rows = []
    for method in methods:
        mine = checks[checks["method"] == method]
        for metric in CHECKS:
            values = mine[metric].to_numpy(np.float64)
            if not len(values) or np.isnan(values).all():
                continue
            if metric == "sanity_passed":
                found = proportion_interval(values, bootstrap.confidence)
            else:
                found = bootstrap_interval(values, **bootstrap.options(), method="percentile")
            rows.append(
                {"group": "checked cases", "method": method, "metric": metric, "mean": found.estimate,
                 "low": found.low, "high": found.high, "n": found.n, "interval": found.method}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "method", "metric", "mean", "low", "high", "n", "interval"])


def rank_methods(pooled: Any, comparisons: Any) -> Any:
    """The methods in order of pooled VxAP over every case (then MaxF1), with the difference from the first
    (``method − first``, its interval, from the comparisons table) and its p, Holm-corrected over the
    ranking's own comparisons (each method against the first: the question a ranking asks)."""
    import math

    import numpy as np
    import pandas as pd

    from volcam.metrics.intervals import holm

    columns = ["rank", "method", "cases", "vxap", "vxap_low", "vxap_high", "max_f1", "max_f1_low", "max_f1_high",
               "difference", "difference_low", "difference_high", "p", "p_holm"]  # fmt: skip
    if not len(pooled):
        return pd.DataFrame(columns=columns)
    rows = pooled[pooled["group"] == "all"].sort_values(["vxap", "max_f1"], ascending=False, kind="stable")
    out = []
    for rank, row in enumerate(rows.itertuples(), start=1):
        first = rows.iloc[0]["method"]
        d = _difference(comparisons, "pooled vxap", row.method, first) if row.method != first else None
        out.append(
            [rank, row.method, row.cases, row.vxap, row.vxap_low, row.vxap_high, row.max_f1, row.max_f1_low,
             row.max_f1_high, *(d if d is not None else (math.nan,) * 4), math.nan]
        )  # fmt: skip
    ranking = pd.DataFrame(out, columns=columns)
    tested = ranking["p"].notna()
    if tested.any():
        ranking.loc[tested, "p_holm"] = holm(ranking.loc[tested, "p"].to_numpy(np.float64))
    return ranking


def _difference(comparisons: Any, metric: str, a: str, b: str) -> tuple[float, float, float, float] | None:
    """(a − b, low, high, p) from the comparisons table, whichever order it holds the pair in."""
    for row in comparisons[comparisons["metric"] == metric].itertuples():
        if (row.a, row.b) == (a, b):
            return row.difference, row.low, row.high, row.p
        if (row.a, row.b) == (b, a):
            return -row.difference, -row.high, -row.low, row.p
    return None


def _with_grids(table: Any, cases: Sequence[Case]) -> Any:
    """The cohort's table with each scan's ``shape`` (voxels) and ``spacing_mm``, read from its header."""
    from volcam.io.info import describe

    def grid(case: Case) -> tuple[str, str]:
        try:
            found = describe(case.image)[0][0]
        except (VolcamError, IndexError, OSError):
            return "", ""
        return "×".join(map(str, found.shape[:3])), "×".join(f"{s:.3g}" for s in found.spacing[:3])

    grids = {c.case_id: grid(c) for c in cases}
    out = table.copy()
    out.insert(out.columns.get_loc("status"), "shape", [grids.get(c, ("", ""))[0] for c in out["case"]])
    out.insert(out.columns.get_loc("status"), "spacing_mm", [grids.get(c, ("", ""))[1] for c in out["case"]])
    return out


# -- pictures and files -----------------------------------------------------------------------------


def draw_misses(
    cases: Sequence[Case], table: Any, work: Path, model: Model, spec: ValidateSpec, folder: Path
) -> list[Miss]:
    """For each method, montages of up to ``spec.misses`` ok cases whose map missed (pointing), least energy in
    the lesions first: the 2 slices with the most map and the 2 with the most lesion, the lesions outlined (PNG
    files in ``folder``)."""
    from volcam.io.load import load
    from volcam.viz.render import montage

    by_id = {c.case_id: c for c in cases}
    ok = table[table["status"] == "ok"]
    window = "lung" if (model.card.modality or "").upper() == "CT" else None
    misses = []
    for method in spec.methods:
        hit, energy = f"{method}.pointing_hit", f"{method}.energy_in_mask"
        if hit not in ok or not spec.misses:
            continue
        missed = ok[(ok[hit] == 0) & (ok["mask"] != "")].sort_values(energy, kind="stable").head(spec.misses)
        for row in missed.to_dict("records"):
            case, stem = by_id[row["case"]], method_stem(method)
            assert case.mask is not None  # a case scored for pointing has one
            caption = _miss_caption(method, row, energy)
            picture = folder / f"{stem}_{case.case_id}.png"
            folder.mkdir(parents=True, exist_ok=True)
            montage(load(case.image), load(work / case.case_id / f"{stem}.nii.gz"), picture, hottest=2, columns=4,
                    window=window, outline=load(case.mask), outlined=2, title=caption)  # fmt: skip
            misses.append(Miss(method, case.case_id, picture, caption))
    return misses


def _miss_caption(method: str, row: Mapping[str, Any], energy: str) -> str:
    target = row.get("target", "")
    probability = row.get(f"p_{target}")
    p = f", P({target}) = {probability:.2f}" if probability is not None else ""
    baseline = row.get(f"{method}.energy_random")
    share = f" (a uniform map: {baseline:.3f})" if baseline is not None else ""
    return f"{method} · {row['case']} · missed: energy in the lesions {row.get(energy, float('nan')):.3f}{share}{p}"


def write_validation(validation: Validation, folder: Path, work: Path) -> None:
    """The tables (CSV and Parquet), ``report.html`` and ``validation.json`` into ``folder``."""
    from volcam.viz.report_html import html_page

    for name, frame in validation.tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    title = f"Validation of {validation.model.name}'s explanations"
    subtitle = f"{len(validation.tables['cases'])} cases from {Path(validation.manifest).name}; volcam {__version__}"
    footer = f"Made by volcam validate {__version__}. The maps of every case are in {work}."
    page = html_page(title, report_sections(validation), subtitle=subtitle, footer=footer)
    (folder / "report.html").write_text(page, encoding="utf-8")
    facts = {
        "volcam": __version__, "manifest": validation.manifest, "model": validation.model.name, "cohort": str(work),
        **validation.spec.choices(), "seconds": dict(validation.seconds), "tables": list(validation.tables),
    }  # fmt: skip
    (folder / "validation.json").write_text(json.dumps(facts, indent=2, default=str) + "\n")
