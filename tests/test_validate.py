"""``volcam validate``: a cohort of phantoms with lesion and lung masks → one self-contained HTML report and
its tables; the page checked against the tables, for what it fetches, and in headless Chromium."""

from __future__ import annotations

import html.parser
import json
import math
import os
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli_runs import one_line_error, run
from volcam import sample_data as sd
from volcam.testing.cohorts import synthetic_cohort
from volcam.workflows.specs import ValidateSpec, default, help_text, option_name
from volcam.workflows.validation_report import TABLES

REPOSITORY = Path(__file__).resolve().parents[1]
VIEWER = REPOSITORY / "tests" / "viewer"
CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = (
    "Summary", "Model and data", "Ranking", "Localisation", "Faithfulness", "Sanity check and robustness",
    "Methods compared", "Where the maps miss", "What this report cannot say",
)  # fmt: skip
# small and fast: 4 phantoms (2 with lesions), two methods (cam misses: its layer is too coarse), 2 checked cases
OPTIONS = ("--methods", "gradcam,cam", "--faithfulness-steps", "2", "--resamples", "200", "--misses", "2",
           "--target", "covid")  # fmt: skip
CASES = 4


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> tuple[Path, Path]:
    """(the manifest, the report folder) of one ``volcam validate`` run through the command line."""
    root = tmp_path_factory.mktemp("validate")
    manifest = synthetic_cohort(root / "data", CASES, lungs=True)
    out = root / "report"
    card = sd.file(sd.CT_CARD)
    code, stdout, stderr = run("validate", manifest, "--model", card, "--out", out, *OPTIONS, "--sanity-cases", "2")
    assert code == 0, stderr
    assert f"{CASES} cases ok, 0 failed" in stdout and str(out / "report.html") in stdout
    return manifest, out


def _page(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def test_the_folder_holds_the_report_the_tables_and_the_pictures(validated) -> None:
    _, out = validated
    for name in TABLES:
        csv, parquet = pd.read_csv(out / f"{name}.csv"), pd.read_parquet(out / f"{name}.parquet")
        assert list(csv.columns) == list(parquet.columns), name
        assert len(csv) == len(parquet), name
    cases = pd.read_parquet(out / "cases.parquet")
    assert len(cases) == CASES and (cases["status"] == "ok").all()
    assert (cases["shape"] == "64×64×24").all() and (cases["spacing_mm"] == "1.4×1.4×5").all()
    assert sorted(p.name for p in (out / "misses").iterdir()) and (out / ".volcam.json").is_file()
    choices = json.loads((out / "validation.json").read_text())
    assert choices["methods"] == ["gradcam", "cam"] and choices["sanity_cases"] == 2
    assert (out.parent / "report-cohort" / "case001" / "gradcam.nii.gz").is_file()  # the maps, beside the report
    scores = pd.read_csv(out / "scores.csv")
    checked = scores[scores["group"] == "checked cases"]
    assert set(checked["metric"]) == {"sanity_passed", "sanity_spearman", "sanity_ssim", "max_sensitivity"}
    assert (checked["n"] == 2).all()
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking["rank"]) == [1, 2] and ranking["vxap"].is_monotonic_decreasing
    assert math.isnan(ranking["p_holm"][0]) and 0 <= ranking["p_holm"][1] <= 1


def test_energy_and_faithfulness_stay_within_the_manifests_region(validated) -> None:
    """The cohort reads the region (lung) column: the energy's random baseline is the lesions' share of the
    lungs, not of the whole scan."""
    manifest, out = validated
    cases = pd.read_csv(out / "cases.csv")
    row = cases[cases["case"] == "case001"].iloc[0]
    assert row["region"].endswith("case001_lungs.nii.gz")
    lesions = np.asarray(nib.load(manifest.parent / "case001_mask.nii.gz").dataobj) > 0
    lungs = np.asarray(nib.load(manifest.parent / "case001_lungs.nii.gz").dataobj) > 0
    assert row["gradcam.energy_random"] == pytest.approx((lesions & lungs).sum() / lungs.sum(), rel=1e-6)
    assert np.isfinite(row["gradcam.deletion_auc"]) and np.isfinite(row["gradcam.insertion_auc"])


class _Attributes(html.parser.HTMLParser):
    """Every tag's attributes, and the numbers of each table cell that carries them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.cells: list[tuple[str, dict[str, str], str]] = []  # (table, attributes, text)
        self._table = ""
        self._cell: dict[str, str] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append((tag, found))
        if tag == "table":
            self._table = found.get("data-table", "")
        if tag == "td" and "data-ref" in found:
            self._cell, self._text = found, ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append((self._table, self._cell, self._text))
            self._cell = None


def _parsed(out: Path) -> _Attributes:
    parser = _Attributes()
    parser.feed(_page(out))
    return parser


def test_the_page_is_self_contained(validated) -> None:
    _, out = validated
    page, parsed = _page(out), _parsed(out)
    assert "<script" not in page.lower() and "@media print" in page and "<style>" in page
    images = [a["src"] for tag, a in parsed.tags if tag == "img"]
    assert images and all(src.startswith("data:image/") for src in images)
    for tag, attributes in parsed.tags:
        for name in ("src", "href", "srcset", "action", "poster"):
            value = attributes.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), (tag, name, value[:80])
    assert "http://" not in page and "https://" not in page
    assert (out / "report.html").stat().st_size < 3_000_000


def _expected(out: Path, table: str, ref: str) -> tuple[float, float, float]:
    """(value, low, high) of the row and statistic a cell's ``data-ref`` names, read from the CSV table."""
    frame = pd.read_csv(out / f"{table}.csv")
    keys = ref.split("|")
    if table == "scores":  # group|method|metric
        row = frame.set_index(["group", "method", "metric"]).loc[tuple(keys)]
        return row["mean"], row["low"], row["high"]
    if table == "pooled":  # group|method|statistic
        row, name = frame.set_index(["group", "method"]).loc[tuple(keys[:2])], keys[2]
    elif table == "ranking":  # method|statistic
        row, name = frame.set_index("method").loc[keys[0]], keys[1]
    else:  # comparisons: metric|a|b|statistic
        row, name = frame.set_index(["metric", "a", "b"]).loc[tuple(keys[:3])], keys[3]
        if name == "difference":
            return row["difference"], row["low"], row["high"]
    return row[name], row.get(f"{name}_low", math.nan), row.get(f"{name}_high", math.nan)


def test_every_number_in_the_page_is_one_of_the_tables(validated) -> None:
    _, out = validated
    checked: dict[str, int] = {}
    for table, cell, text in _parsed(out).cells:
        shown = tuple(float(cell.get(f"data-{k}", "nan")) for k in ("value", "low", "high"))
        expected = _expected(out, table, cell["data-ref"])
        assert np.allclose(shown, expected, rtol=1e-12, atol=0, equal_nan=True), (table, cell, text)
        value, low, high = expected
        digits = 2 if "/" in text else 3 if not math.isnan(low) else 4  # a hit rate, an interval, a p-value
        rounded = f"{value:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if not math.isnan(low) else "")
        assert text.endswith(rounded), (text, rounded)
        checked[table] = checked.get(table, 0) + 1
    assert checked["scores"] >= 12 and checked["pooled"] == 4 and checked["ranking"] == 6, checked
    assert checked["comparisons"] >= 3 * 10, checked


def test_the_cases_that_miss_are_pictured_with_the_lesions_outlined(validated) -> None:
    _, out = validated
    cases = pd.read_csv(out / "cases.csv")
    missed = cases[cases["cam.pointing_hit"] == 0]
    pictures = sorted((out / "misses").glob("cam_*.png"))
    assert missed.size and len(pictures) == min(2, len(missed))
    assert {p.stem.removeprefix("cam_") for p in pictures} <= set(missed["case"])
    page = _page(out)
    assert page.count("<figure>") == len(list((out / "misses").iterdir()))


def test_a_rerun_resumes_the_cohort_and_replaces_the_report(validated, tmp_path) -> None:
    """The checks are no choice of the cohort: a rerun without them reuses every case (and its maps)."""
    manifest, out = validated
    again = tmp_path / "again"
    cohort = out.parent / "report-cohort"
    options = ("--cohort", cohort, "--sanity-cases", "0")
    code, stdout, stderr = run("validate", manifest, "--model", sd.file(sd.CT_CARD), "--out", again, *OPTIONS, *options)
    assert code == 0, stderr
    assert f"{CASES} finished cases skipped; 0 to do" in stdout
    assert len(pd.read_csv(again / "checks.csv")) == 0 and "Not run (sanity cases 0)." in _page(again)
    before, after = pd.read_csv(out / "cases.csv"), pd.read_csv(again / "cases.csv")
    pd.testing.assert_frame_equal(before, after)  # the same records: the timings of the first run too


def test_mistakes_are_one_line_before_anything_runs(tmp_path, validated) -> None:
    manifest, _ = validated
    card = sd.file(sd.CT_CARD)
    unmasked = tmp_path / "unmasked.csv"
    unmasked.write_text(f"case,image\na,{manifest.parent / 'case001.nii.gz'}\n")
    line = one_line_error(*run("validate", unmasked, "--model", card, "--out", tmp_path / "r")[::2])
    assert "no case has a lesion mask" in line and str(unmasked) in line
    line = one_line_error(*run("validate", manifest, "--model", card, "--out", tmp_path / "r", "--resamples", "5")[::2])
    assert "--resamples" in line
    line = one_line_error(*run("validate", manifest, "--model", card, "--out", manifest.parent)[::2])
    assert str(manifest.parent) in line
    inside = tmp_path / "r2"
    line = one_line_error(*run("validate", manifest, "--model", card, "--out", inside, "--cohort", inside / "c")[::2])
    assert "cohort folder" in line
    assert not (tmp_path / "r").exists() and not inside.exists()


def test_every_option_is_declared_from_the_validate_spec() -> None:
    import typer

    from volcam.cli import app

    click = typer.main.get_command(app).commands["validate"]  # type: ignore[attr-defined]
    params = {p.name: p for p in click.params}
    declared = [f.name for f in fields(ValidateSpec) if f.name in params]
    assert len(declared) == len(fields(ValidateSpec)) - 1  # every choice but the method options
    for name in declared:
        assert params[name].default is None and option_name(ValidateSpec, name) in params[name].opts
        assert params[name].help.startswith(help_text(ValidateSpec, name))
        value = default(ValidateSpec, name)
        if value not in (None, (), False):
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else "on" if value is True else value
            assert params[name].help.endswith(f"(default: {shown})"), (name, params[name].help)
    shown = CliRunner().invoke(app, ["validate", "--help"], env={"COLUMNS": "200"}).output
    assert "--sanity-cases" in shown and "--resamples" in shown and "--cohort" in shown


def test_a_montage_outlines_a_mask(tmp_path) -> None:
    import torch
    from PIL import Image

    from volcam.testing.phantoms import chest_ct
    from volcam.viz.render import montage

    phantom = chest_ct(3, covid=True, shape=(48, 48, 12), spacing=(1.9, 1.9, 10.0))
    scan, lesions = phantom.metatensor(), phantom.mask > 0
    cam = torch.from_numpy(lesions.astype(np.float32))[None] * 0.8

    def white(name: str, **outline) -> int:
        montage(scan, cam, tmp_path / name, hottest=2, window="lung", **outline)
        return int((np.asarray(Image.open(tmp_path / name).convert("RGB")) > 245).all(-1).sum())

    assert white("outlined.png", outline=lesions) > white("plain.png") + 20
    with pytest.raises(Exception, match="outline mask"):
        montage(scan, cam, tmp_path / "wrong.png", outline=lesions[:, :, :4])


@pytest.mark.slow
def test_road_is_measured_on_the_checked_cases_when_asked(validated) -> None:
    import volcam
    from volcam.workflows.validate import check_case

    manifest, _ = validated
    model = volcam.load_model(sd.file(sd.CT_CARD))
    scan, lungs = volcam.load(manifest.parent / "case001.nii.gz"), volcam.load(manifest.parent / "case001_lungs.nii.gz")
    found = check_case(model, scan, "gradcam", 1, road=True, region=lungs)
    assert -1 <= found["road"] <= 1 and found["sanity_passed"] in (0.0, 1.0) and found["max_sensitivity"] >= 0


# -- in a browser -----------------------------------------------------------------------------------


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None:
        return "no node on PATH"
    if not (VIEWER / "node_modules" / "playwright-core").is_dir():
        return "no playwright-core in tests/viewer/node_modules (run: bash tests/viewer/setup.sh)"
    return None


def test_chromium_shows_the_report_with_no_console_error(validated, tmp_path) -> None:
    """The page in headless Chromium: no console error, nothing fetched, every section and picture shown, the
    contents hidden when printed. The screenshot goes to ``docs/validation_report.png`` with
    ``VOLCAM_UPDATE_DOCS=1``."""
    why = _missing_browser()
    if why is not None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"browser harness missing under CI: {why}", pytrace=False)
        pytest.skip(why)
    _, out = validated
    request = {
        "file": str(out / "report.html"), "screenshot": str(tmp_path / "report.png"), "profile": str(tmp_path / "p"),
        "report": str(tmp_path / "seen.json"), "width": 1200, "height": 1800, "timeout_ms": 60000,
    }  # fmt: skip
    done = subprocess.run(
        ["node", str(VIEWER / "report_page.mjs")], input=json.dumps(request), cwd=VIEWER, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert done.returncode == 0, (done.stderr[-2000:], seen.get("error"))
    assert not seen["errors"] and not seen["requests"], seen
    assert not [m for m in seen["console"] if m["type"] in ("error", "warning")], seen["console"]
    assert all(h in seen["headings"] for h in SECTIONS), seen["headings"]
    assert "phantoms" in seen["text"] and "gradcam" in seen["text"] and "cam" in seen["text"]
    assert seen["images"] and all(i["complete"] and i["width"] > 100 for i in seen["images"])
    assert seen["print_nav"] == "none"
    assert (tmp_path / "report.png").stat().st_size > 10_000
    if os.environ.get("VOLCAM_UPDATE_DOCS") == "1":
        shutil.copyfile(tmp_path / "report.png", REPOSITORY / "docs" / "validation_report.png")
