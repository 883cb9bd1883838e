"""The demo models, validated: ``volcam validate`` on the 30 held-out COVID phantoms, for the CNN and the ViT card.

The held-out COVID phantoms the demo models were scored on (``chest_ct(9000 + i, covid=True)`` for odd
``i`` < 60, 128 × 128 × 48 voxels of 0.7 × 0.7 × 2.5 mm: ``volcam.testing.cohorts.held_out_cohort``) are
written once as NIfTI with their lesion and lung masks and a manifest (``region`` = the lungs). Then, for
each card, ``volcam validate`` (the same function, :func:`volcam.workflows.validate.validate_to_folder`)
explains class 'covid' with each method, scores every map against the lesions (deletion/insertion within
the lungs), checks 5 cases for sanity and robustness, and writes its report; the wall time of each run is
measured from nothing (a fresh cohort folder) unless ``--resume``.

Usage::

    python benchmarks/validation.py [--cards cnn,vit] [--threads 2] [--workdir DIR] [--resume] [--screenshot]

Writes ``benchmarks/results/validation.md`` (the headline tables with intervals, wall times, which methods)
and each report as ``benchmarks/results/validation_<card>.html``; ``--screenshot`` renders the CNN's in
headless Chromium (``tests/viewer/report_page.mjs``) into ``docs/validation_report.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
RESULTS = HERE / "results"
CARDS = {
    # card name → (card file, the methods it is validated with)
    "ct_covid": ("ct_covid.card.json", ("gradcam", "gradcam++", "hirescam", "respondcam")),
    "ct_covid_vit": ("ct_covid_vit.card.json", ("gradcam", "rollout", "attention-gradient")),
}
SHORT = {"cnn": "ct_covid", "vit": "ct_covid_vit"}
READING = "## Reading"
CHOICES = {"target": "covid", "faithfulness_steps": 20, "sanity_cases": 5, "resamples": 10000, "misses": 3}


def validate(card: str, manifest: Path, work: Path, resume: bool) -> tuple[object, float]:
    """One card's validation from nothing (or resumed); the Validation and its wall seconds."""
    from volcam import sample_data as sd
    from volcam.workflows.validate import validate_to_folder

    file, methods = CARDS[card]
    out, cohort = work / f"report_{card}", work / f"cohort_{card}"
    if not resume:
        shutil.rmtree(cohort, ignore_errors=True)
    started = time.perf_counter()
    found = validate_to_folder(manifest, sd.file(file), out, methods=list(methods), cohort=cohort, **CHOICES)
    return found, time.perf_counter() - started


def _cell(row) -> str:
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def _hits(row) -> str:
    return f"{round(row['mean'] * row['n'])}/{int(row['n'])} ({row['low']:.2f}–{row['high']:.2f})"


def headline(card: str, found, seconds: float) -> list[str]:
    """The card's tables in Markdown: per method the localisation, faithfulness and checks; the ranking."""
    tables = found.tables
    scores = tables["scores"].set_index(["group", "method", "metric"])
    pooled = tables["pooled"]
    pooled = pooled[pooled["group"] == "all"].set_index("method")
    methods = list(found.spec.methods)
    per = found.seconds
    lines = [
        f"## `{card}`: {', '.join(methods)}",
        "",
        f"Wall time {seconds:.0f} s ({seconds / 60:.1f} min): cohort {per.get('cohort', 0):.0f} s, checks "
        f"{per.get('checks', 0):.0f} s, statistics and report {per.get('report', 0):.0f} s.",
        "",
        "| method | pointing hits (95 % Wilson) | energy in lesions [95 %] | uniform map | VxAP pooled [95 %] | "
        "MaxF1 pooled [95 %] | VxAP per case [95 %] | deletion AUC in lungs ↓ | insertion AUC in lungs ↑ | "
        "sanity passed | max-sensitivity ↓ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        s = lambda metric, group="all", m=m: scores.loc[(group, m, metric)]  # noqa: E731
        p = pooled.loc[m]
        lines.append(
            f"| {m} | {_hits(s('pointing_hit'))} | {_cell(s('energy_in_mask'))} | {s('energy_random')['mean']:.3f} | "
            f"{p['vxap']:.3f} [{p['vxap_low']:.3f}, {p['vxap_high']:.3f}] | "
            f"{p['max_f1']:.3f} [{p['max_f1_low']:.3f}, {p['max_f1_high']:.3f}] | {_cell(s('vxap'))} | "
            f"{_cell(s('deletion_auc'))} | {_cell(s('insertion_auc'))} | "
            f"{_hits(s('sanity_passed', 'checked cases'))} | {_cell(s('max_sensitivity', 'checked cases'))} |"
        )
    lines += ["", "| rank | method | VxAP pooled | VxAP − first's [95 %] | p (Holm) |", "|---|---|---|---|---|"]
    for r in tables["ranking"].itertuples():
        versus = "–" if r.rank == 1 else f"{r.difference:+.3f} [{r.difference_low:+.3f}, {r.difference_high:+.3f}]"
        p = "–" if r.rank == 1 else f"{r.p_holm:.3g}"
        lines.append(f"| {r.rank} | {r.method} | {r.vxap:.3f} | {versus} | {p} |")
    return [*lines, ""]


def screenshot(report: Path, png: Path) -> None:
    """``report`` in headless Chromium (tests/viewer/report_page.mjs): its first 1800 px as ``png``."""
    viewer = REPOSITORY / "tests" / "viewer"
    with tempfile.TemporaryDirectory() as scratch:
        request = {"file": str(report), "screenshot": str(png), "profile": f"{scratch}/p",
                   "report": f"{scratch}/seen.json", "width": 1200, "height": 1800}  # fmt: skip
        subprocess.run(["node", str(viewer / "report_page.mjs")], input=json.dumps(request), cwd=viewer, text=True,
                       check=True, timeout=120)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", default="cnn,vit", help="cnn, vit or both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "volcam-validation")
    parser.add_argument("--resume", action="store_true", help="keep the cohorts already in --workdir")
    parser.add_argument("--screenshot", action="store_true", help="docs/validation_report.png from the CNN's report")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from volcam.testing.cohorts import held_out_cohort

    started = time.perf_counter()
    manifest = args.workdir / "data" / "manifest.csv"
    if not (args.resume and manifest.is_file()):
        manifest = held_out_cohort(args.workdir / "data")
    data_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    sections, timings = [], {}
    for short in args.cards.split(","):
        card = SHORT[short]
        found, seconds = validate(card, manifest, args.workdir, args.resume)
        timings[card] = seconds
        sections += headline(card, found, seconds)
        print("\n".join(sections[-40:]), flush=True)
        if not args.no_write:
            shutil.copyfile(args.workdir / f"report_{card}" / "report.html", RESULTS / f"validation_{card}.html")
        if args.screenshot and card == "ct_covid":
            screenshot(args.workdir / f"report_{card}" / "report.html", REPOSITORY / "docs" / "validation_report.png")
    head = [
        "# The demo models validated: `volcam validate` on the 30 held-out phantoms",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {args.threads} thread(s); load average "
        f"(1 min) {load:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        "- cases: the 30 held-out COVID phantoms (`chest_ct(9000 + i, covid=True)`, odd i < 60; 128×128×48 voxels "
        f"of 0.7×0.7×2.5 mm) with lesion and lung masks, written in {data_s:.0f} s (not in the times below)",
        f"- choices: class 'covid' explained; {CHOICES['faithfulness_steps']} deletion/insertion steps within the "
        f"lungs; pointing tolerance 5 mm; sanity check and max-sensitivity on the first {CHOICES['sanity_cases']} "
        f"cases; {CHOICES['resamples']} bootstrap resamples (seed 0), 95 % intervals (Wilson for hit rates)",
        "- wall time: each card from nothing (a fresh cohort folder), cohort + checks + statistics + report: "
        + ", ".join(f"`{c}` {s:.0f} s ({s / 60:.1f} min)" for c, s in timings.items()),
        "- reports: " + ", ".join(f"[`validation_{c}.html`](validation_{c}.html)" for c in timings),
        "- rerun: `python benchmarks/validation.py [--screenshot]`",
        "",
    ]
    text = "\n".join([*head, *sections])
    if not args.no_write:  # a "## Reading" section written by hand is kept
        old = (RESULTS / "validation.md").read_text() if (RESULTS / "validation.md").exists() else ""
        reading = old[old.index(READING) :] if READING in old else ""
        (RESULTS / "validation.md").write_text(text + ("\n" + reading if reading else ""))
    print(text)


if __name__ == "__main__":
    main()
