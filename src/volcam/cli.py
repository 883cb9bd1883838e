"""The ``volcam`` command: thin front door over the API, one sub-command per job.

Add a command with ``@app.command()`` like any typer app: every command registered on ``app`` has
its :class:`~volcam.errors.VolcamError` printed as one line (``volcam: error: ...``) with exit
status 2, never a traceback, and warnings printed as one ``volcam: warning: ...`` line each.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from volcam._version import __version__
from volcam.defaults import LCAM_LOSS, LCamLossWeights
from volcam.errors import InputError, TargetError, VolcamError, error_line, one_line, scrub
from volcam.io.atomic import check_output_folder
from volcam.workflows.specs import (
    CohortSpec,
    EvaluateSpec,
    ExplainSpec,
    JobSpec,
    LCamSpec,
    ValidateSpec,
    default,
    help_text,
    option_name,
)

__all__ = ["app"]


def _base(name: str) -> type[Exception]:
    """A class of the click that typer runs on (typer ≥ 0.20 bundles its own): found through the MRO
    of ``typer.BadParameter`` so either works."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_CLICK_ERROR = _base("ClickException")
_USAGE_ERROR = _base("UsageError")
# The CLI framework's own control flow: passed through, never reported as an error of volcam's.
_FRAMEWORK = (typer.Exit, typer.Abort, _CLICK_ERROR)
_Command = TypeVar("_Command", bound=Callable[..., Any])
_Spec = TypeVar("_Spec", bound=JobSpec)


def _log_internal_error(error: BaseException) -> Path | None:
    """Write ``error``'s traceback to a log file for a bug report; its path, or None if none could be written."""
    import os
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("VOLCAM_LOG_DIR") or Path(tempfile.gettempdir()) / "volcam-logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"volcam-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        text = (
            f"volcam {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv[1:])}\n\n"
            + "".join(traceback.format_exception(error))
        )
        path.write_text(scrub(text))  # a traceback quotes values: no identifier of a scan read goes in
        return path
    except OSError:
        return None


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: the same clean-up runs (temporaries removed, outputs left as they were)."""
    raise KeyboardInterrupt


def report(error: BaseException) -> int:
    """The one place an exception reaching a front door becomes what the user sees; returns the exit status.

    - a :class:`VolcamError` (a user mistake): ``volcam: error: <file or option>: <reason>``, exit 2;
    - Ctrl-C or SIGTERM: ``volcam: interrupted ...``, exit 130 (outputs were left as they were);
    - anything else (a bug, or a library failing in a way volcam did not foresee): one line and a
      "please report" hint, the traceback in a log file, exit 1. Never a traceback on the terminal.
    """
    if isinstance(error, VolcamError):
        typer.echo(f"volcam: error: {error_line(error, limit=2000)}", err=True)
        return 2
    if isinstance(error, KeyboardInterrupt):
        typer.echo("volcam: interrupted; no output was left half-written", err=True)
        return 130
    if isinstance(error, MemoryError):
        typer.echo(
            "volcam: error: out of memory (a smaller input, --device cuda, or a machine with more memory)", err=True
        )
        return 2
    log = _log_internal_error(error)
    where = f"; details in {log}" if log else ""
    typer.echo(f"volcam: internal error: {error_line(error, limit=160)} (please report it{where})", err=True)
    return 1


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` with every exception through :func:`report` and warnings as one line each."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        import signal

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            typer.echo(f"volcam: warning: {scrub(one_line(str(message)))}", err=True)

        previous = warnings.showwarning
        warnings.showwarning = show
        in_main = threading.current_thread() is threading.main_thread()
        previous_term = signal.signal(signal.SIGTERM, _terminate) if in_main else None
        try:
            return command(*args, **kwargs)
        except _FRAMEWORK:
            raise
        except BaseException as error:
            if isinstance(error, SystemExit | GeneratorExit):
                raise
            raise typer.Exit(report(error)) from None
        finally:
            warnings.showwarning = previous
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)

    return run


class VolcamApp(typer.Typer):
    """A typer app whose commands report every exception as one line (:func:`report`), never a traceback,
    and whose usage errors (a missing argument, a bad option value) are one line too."""

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[_Command], _Command]:
        register = super().command(name, **kwargs)

        def decorator(function: _Command) -> _Command:
            register(_one_line_errors(function))
            return function

        return decorator

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        command = typer.main.get_command(self)
        try:
            kwargs["standalone_mode"] = False  # exits and errors are handled here, not by click
            status = command.main(*args, **kwargs)
        except _USAGE_ERROR as error:  # a missing argument, a bad option value: one line, as for VolcamError
            context = getattr(error, "ctx", None)
            if type(error).__name__ == "NoArgsIsHelpError" and context is not None:  # `volcam` alone: the help
                typer.echo(context.get_help())
                sys.exit(0)
            option = f"{context.command_path}: " if context is not None else ""
            typer.echo(f"volcam: error: {option}{one_line(error.format_message())}", err=True)  # type: ignore[attr-defined]
            sys.exit(2)
        except typer.Abort:
            typer.echo("volcam: interrupted", err=True)
            sys.exit(130)
        except _CLICK_ERROR as error:
            typer.echo(f"volcam: error: {one_line(error.format_message())}", err=True)  # type: ignore[attr-defined]
            sys.exit(getattr(error, "exit_code", 1))
        except typer.Exit as done:
            sys.exit(getattr(done, "exit_code", 0))
        sys.exit(status if isinstance(status, int) else 0)


app = VolcamApp(
    name="volcam",
    help="Class activation maps for 3D medical-imaging classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Class activation maps for 3D medical-imaging classifiers: CT/MR volumes, ultrasound clips."""


# options several commands take, declared once; a job's choices take their help line and default from
# its spec (volcam.workflows.specs), the one home of both
def _option(spec: type[JobSpec], name: str, *aliases: str, flags: str | None = None, **kwargs: Any) -> Any:
    """The option of a job's choice, declared from the job's spec: its name, its help line and the default
    the help shows. Its value is ``None`` when not typed, and the spec's default applies (:func:`_given`)."""
    value = default(spec, name)
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else "on" if value is True else value
    tail = f" (default: {shown})" if shown not in (None, "", False) else ""
    return typer.Option(flags or option_name(spec, name), *aliases, help=help_text(spec, name) + tail, **kwargs)


def _given(spec: type[_Spec], **options: Any) -> _Spec:
    """The spec of what was typed: an option left out (``None``) keeps the spec's default, and a wrong
    value fails here with one line naming its option, before anything loads."""
    return spec.of(**{name: value for name, value in options.items() if value is not None})


TrustWeights = Annotated[
    bool, typer.Option("--trust-weights", help="Allow weights that need full unpickling (runs their code).")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default cpu).")]
Series = Annotated[
    str | None, typer.Option(help="For a folder of several DICOM series: its SeriesInstanceUID, description or number.")
]
Volume = Annotated[int | None, typer.Option(help="For a 4D NIfTI: the index of the volume to read.", min=0)]
Card = Annotated[Path, typer.Option("--model", "-m", help="A model card (.json) or a MONAI bundle folder.")]


def _model_and_scan(
    card: Path,
    scan: str | Path,
    layer: Any,
    trust: bool,
    device: str | None,
    series: str | None = None,
    volume: int | None = None,
) -> tuple[Any, Any]:
    """The model and the scan, in that order: a bad card, layer or device fails before the scan is read."""
    from volcam.io import load
    from volcam.model.model import load_model

    loaded = load_model(card, trust=trust, device=device)
    if layer:
        loaded.check_layer(layer)
    return loaded, load(scan, _series(series), volume=volume)


def _series(text: str | None) -> str | int | None:
    """``--series``: a series number when it is one, else a UID or description."""
    return int(text) if text is not None and text.isdigit() else text


def _check_out(out: Path, *inputs: Path | None) -> None:
    """``--out`` before anything heavy loads: a folder volcam may fill, not a file, a user's folder or an input."""

    check_output_folder(out, [p for p in inputs if p is not None])


def _numbers(values: tuple[float, ...], unit: str) -> str:
    return " × ".join(f"{v:.4g}" for v in values) + (f" {unit}" if unit else "")


@app.command()
def info(
    path: Annotated[
        str,
        typer.Argument(help="A DICOM folder or file, NIfTI, NRRD/MHA or video file, or a DICOMweb study/series URL."),
    ],
) -> None:
    """Show what PATH holds: series, sizes, spacing, orientation, frames and problems (no patient data)."""
    from volcam.io.info import describe

    found, skipped = describe(path)
    lines = []
    if skipped or len(found) > 1:
        passed = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        lines.append(f"{path}: {len(found)} series" + (f" (skipped: {passed})" if passed else ""))
    for item in found:
        name = item.series_uid or item.source
        described = f" '{item.description}'" if item.description else ""
        lines.append(f"{name}{described}")
        lines.append(f"  modality     {item.modality}")
        if item.kind == "clip":
            lines.append(
                f"  frames       {item.shape[0]} × {item.shape[1]} × {item.shape[2]} (frames × rows × columns)"
            )
            if len(item.shape) > 3:
                lines.append("  colour       RGB")
            interval = f"{item.frame_interval * 1000:.4g} ms" if item.frame_interval else "unknown"
            lines.append(f"  frame time   {interval}")
            lines.append(f"  pixel size   {_numbers(item.spacing[1:], 'mm')}")
        elif item.shape:
            lines.append(f"  size         {_numbers(item.shape[:3], '')} (voxel axes as loaded)")
            lines.append(f"  spacing      {_numbers(item.spacing[:3], 'mm')}")
            lines.append(f"  orientation  {item.orientation}")
        lines.append(f"  problems     {'; '.join(item.problems) if item.problems else 'none'}")
    typer.echo(scrub("\n".join(lines)))  # a description may hold a name


@app.command()
def explain(
    input: Annotated[
        str,
        typer.Argument(
            help="A scan: DICOM folder or file, NIfTI, NRRD/MHA, ultrasound clip, or a DICOMweb study/series URL."
        ),
    ],
    model: Card,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the maps, pictures and summary.json.")],
    methods: Annotated[list[str] | None, _option(ExplainSpec, "methods", "--methods")] = None,
    target: Annotated[str | None, _option(ExplainSpec, "target")] = None,
    layer: Annotated[list[str] | None, _option(ExplainSpec, "layer")] = None,
    gradient_sigma_mm: Annotated[float | None, _option(ExplainSpec, "gradient_sigma_mm")] = None,
    dicom: Annotated[list[str] | None, _option(ExplainSpec, "dicom", metavar="KIND[,KIND]")] = None,
    store: Annotated[str | None, _option(ExplainSpec, "store")] = None,
    decisive_threshold: Annotated[float | None, _option(ExplainSpec, "decisive_threshold")] = None,
    series: Series = None,
    volume: Volume = None,
    trust_weights: TrustWeights = False,
    device: Device = None,
) -> None:
    """Explain INPUT with a model card: map as NIfTI (same affine), PNG montage and a JSON summary in OUT; a
    clip also as a video (MP4 and an animated WebP) with its frame-probability curve."""
    from volcam.devices import parse_device
    from volcam.workflows.explain_folder import explain_to_folder

    spec = _given(
        ExplainSpec,
        methods=methods,
        target=target,
        layer=layer,
        gradient_sigma_mm=gradient_sigma_mm,
        dicom=dicom,
        store=store,
        decisive_threshold=decisive_threshold,
    )  # a wrong choice: one line, before anything loads
    parse_device(device)
    _check_out(out, Path(input), model)
    if spec.store is not None:
        from volcam.io.dicom.web import check_store

        check_store(spec.store)  # a wrong address or a PACS that does not answer: before the scan is read
    loaded, scan = _model_and_scan(model, input, spec.layer, trust_weights, device, series, volume)
    try:
        loaded.check_scan(scan)
        loaded.check_target(spec.target)
        summary = explain_to_folder(scan, loaded, out, spec, progress=typer.echo)
    except (InputError, TargetError) as error:  # about this scan: say which file
        raise type(error)(f"{input}: {error}") from None
    first = summary["explanations"][0]
    probabilities = ", ".join(f"{k} {v:.3f}" for k, v in first["probabilities"].items())
    typer.echo(f"prediction: {first['prediction']} ({probabilities}); summary: {Path(out) / 'summary.json'}")
    for record in summary["explanations"]:  # a map that shows nothing says so, one line each
        for line in record.get("warnings", []):
            typer.echo(f"volcam: warning: {scrub(one_line(line))}", err=True)
    if "stored" in summary:
        typer.echo(f"stored {summary['stored']['instances']} DICOM instance(s) in {summary['stored']['url']}")


@app.command()
def evaluate(
    input: Annotated[Path, typer.Argument(help="A volume: DICOM folder or file, NIfTI, NRRD/MHA.")],
    model: Card,
    mask: Annotated[Path, typer.Option("--mask", help="Lesion mask on the scan's grid (NIfTI, ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics.csv/.md/.json and the PNG plots.")],
    methods: Annotated[list[str] | None, _option(EvaluateSpec, "methods", "--methods")] = None,
    target: Annotated[str | None, _option(EvaluateSpec, "target")] = None,
    layer: Annotated[list[str] | None, _option(EvaluateSpec, "layer")] = None,
    tolerance_mm: Annotated[float | None, _option(EvaluateSpec, "tolerance_mm")] = None,
    steps: Annotated[int | None, _option(EvaluateSpec, "steps")] = None,
    road: Annotated[bool | None, _option(EvaluateSpec, "road")] = None,
    robustness: Annotated[bool | None, _option(EvaluateSpec, "robustness")] = None,
    baseline: Annotated[str | None, _option(EvaluateSpec, "baseline")] = None,
    insertion_baseline: Annotated[str | None, _option(EvaluateSpec, "insertion_baseline")] = None,
    region: Annotated[
        Path | None,
        typer.Option(help="Body or lung mask on the scan's grid: deletion/insertion and energy stay within it."),
    ] = None,
    series: Series = None,
    trust_weights: TrustWeights = False,
    device: Device = None,
) -> None:
    """Score CAM methods on INPUT against a lesion MASK: localization, faithfulness, sanity; table + plots in OUT."""
    from volcam.devices import parse_device
    from volcam.io import load
    from volcam.workflows.evaluate import evaluate_to_folder

    spec = _given(
        EvaluateSpec, methods=methods, target=target, layer=layer, tolerance_mm=tolerance_mm, steps=steps, road=road,
        robustness=robustness, baseline=baseline, insertion_baseline=insertion_baseline,
    )  # fmt: skip
    parse_device(device)
    _check_out(out, input, model, mask, region)
    loaded, scan = _model_and_scan(model, input, spec.layer, trust_weights, device, series)
    lesions = load(mask)
    within = load(region) if region is not None else None
    try:
        loaded.check_scan(scan)
        loaded.check_target(spec.target)
        rows = evaluate_to_folder(scan, loaded, lesions, out, spec, region=within, progress=typer.echo)
    except (InputError, TargetError) as error:  # about this scan or its masks: say which files
        masks = " / ".join(str(p) for p in (mask, region) if p is not None)
        raise type(error)(f"{input} / {masks}: {error}") from None
    failed = [r["method"] for r in rows if r.get("sanity") == "FAIL"]
    plots = f"{Path(out) / 'faithfulness.png'}, {Path(out) / 'sanity.png'}"
    typer.echo(f"table: {Path(out) / 'metrics.md'}; plots: {plots}")
    if failed:
        typer.echo(f"sanity check FAILED for {', '.join(failed)}: the map does not change with the model's weights")


def _loss_help(name: str) -> str:
    """The help line of an L-CAM loss weight, with its default (:data:`volcam.defaults.LCAM_LOSS`)."""
    text = next(f.metadata["help"] for f in fields(LCamLossWeights) if f.name == name)
    return f"{text} (default: {getattr(LCAM_LOSS, name):g})"


@app.command("train-lcam")
def train_lcam(
    model: Annotated[Path, typer.Argument(help="A model card (.json); the trained module is recorded in it.")],
    images: Annotated[
        Path, typer.Argument(help="A folder of scans, or a manifest (.csv/.tsv: path[,label], relative to it).")
    ],
    variant: Annotated[str | None, _option(LCamSpec, "variant")] = None,
    epochs: Annotated[int | None, _option(LCamSpec, "epochs")] = None,
    layer: Annotated[str | None, _option(LCamSpec, "layer")] = None,
    target: Annotated[str | None, _option(LCamSpec, "target")] = None,
    batch_size: Annotated[int | None, _option(LCamSpec, "batch_size")] = None,
    lr: Annotated[float | None, _option(LCamSpec, "lr")] = None,
    validation: Annotated[float | None, _option(LCamSpec, "validation")] = None,
    patience: Annotated[int | None, _option(LCamSpec, "patience")] = None,
    seed: Annotated[int | None, _option(LCamSpec, "seed")] = None,
    area_weight: Annotated[float | None, typer.Option(help=_loss_help("area_weight"))] = None,
    tv_weight: Annotated[float | None, typer.Option(help=_loss_help("tv_weight"))] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Weights file; default: beside the card.")] = None,
    device: Device = None,
) -> None:
    """Train an L-CAM attention module on MODEL's frozen network over IMAGES; record it in the card."""
    from volcam.devices import parse_device
    from volcam.workflows.lcam_training import train_lcam as train

    weights = {"area_weight": area_weight, "tv_weight": tv_weight}
    loss = replace(LCAM_LOSS, **{name: value for name, value in weights.items() if value is not None})
    spec = _given(
        LCamSpec, variant=variant, epochs=epochs, layer=layer, target=target, batch_size=batch_size, lr=lr,
        validation=validation, patience=patience, seed=seed, loss=loss,
    )  # fmt: skip
    parse_device(device)
    run = train(model, images, spec=spec, out=out, device=device)
    for row in run.history:
        typer.echo(f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f}  validation {row['val_loss']:.4f}")
    stop = " (stopped early)" if run.stopped_early else ""
    typer.echo(
        f"L-CAM-{run.variant.capitalize()} at {run.layer}: best epoch {run.best_epoch}{stop}; "
        f"saved {run.path}, recorded in {model}"
    )


@app.command()
def methods() -> None:
    """List the CAM methods with their cost in passes and what each does."""
    from volcam.api import methods as all_methods

    for info in all_methods():
        typer.echo(f"{info.name:<16}{info.passes:<22}{info.summary}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's pictures and maps.")] = Path(
        "volcam-demo"
    ),
) -> None:
    """Explain the shipped chest CT and lung-ultrasound samples with the demo models (no training, no download)."""
    from volcam.demo import run_demo

    run_demo(out, echo=typer.echo)


# `volcam cohort`'s exit status when the run finishes (0: every case ok; 2, 1 and 130 as for every command):
# scripts tell a cohort with failed cases from a clean one, and one where nothing worked from both.
COHORT_SOME_FAILED = 3
COHORT_ALL_FAILED = 4
_COHORT_HELP = (
    "Explain and score every case of MANIFEST: maps per case, results.parquet/.csv, summary.md (resumable). "
    f"Exit status: 0 when every case is ok, {COHORT_SOME_FAILED} when some failed (their errors are in the "
    f"table), {COHORT_ALL_FAILED} when every case failed, 2 for a wrong option, manifest, card or --out "
    "(before any case runs), 130 when interrupted."
)


@app.command(help=_COHORT_HELP)
def cohort(
    manifest: Annotated[
        Path,
        typer.Argument(help="A manifest (.csv/.parquet: case, image, optional mask and label) or a folder of scans."),
    ],
    model: Card,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the case folders, results table and summary.")],
    methods: Annotated[list[str] | None, _option(CohortSpec, "methods", "--methods")] = None,
    target: Annotated[str | None, _option(CohortSpec, "target")] = None,
    layer: Annotated[list[str] | None, _option(CohortSpec, "layer")] = None,
    png: Annotated[bool | None, _option(CohortSpec, "png")] = None,
    faithfulness_steps: Annotated[int | None, _option(CohortSpec, "faithfulness_steps")] = None,
    tolerance_mm: Annotated[float | None, _option(CohortSpec, "tolerance_mm")] = None,
    dicom: Annotated[list[str] | None, _option(CohortSpec, "dicom", metavar="KIND[,KIND]")] = None,
    store: Annotated[str | None, _option(CohortSpec, "store")] = None,
    prefetch: Annotated[bool | None, _option(CohortSpec, "prefetch", flags="--prefetch/--no-prefetch")] = None,
    scheduler: Annotated[str | None, _option(CohortSpec, "scheduler")] = None,
    workers: Annotated[int | None, _option(CohortSpec, "workers")] = None,
    trust_weights: TrustWeights = False,
    device: Device = None,
) -> None:
    """Explain and score every case of MANIFEST: maps per case, results.parquet/.csv, summary.md (resumable);
    the exit status says whether cases failed (``_COHORT_HELP``)."""
    from volcam.devices import parse_device
    from volcam.workflows.cohort.run import run_cohort

    spec = _given(
        CohortSpec, methods=methods, target=target, layer=layer, png=png, faithfulness_steps=faithfulness_steps,
        tolerance_mm=tolerance_mm, dicom=dicom, store=store, prefetch=prefetch, scheduler=scheduler, workers=workers,
    )  # fmt: skip
    parse_device(device)
    try:
        table = run_cohort(manifest, model, out, spec, trust=trust_weights, device=device, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo(f"volcam: interrupted; finished cases are kept in {out}, run again to resume", err=True)
        raise typer.Exit(130) from None
    failed = int((table["status"] != "ok").sum())
    typer.echo(
        f"{len(table) - failed} cases ok, {failed} failed ({len(table.attrs['computed'])} done now); "
        f"table: {Path(out) / 'results.parquet'}; summary: {Path(out) / 'summary.md'}"
    )
    if failed:
        raise typer.Exit(COHORT_ALL_FAILED if failed == len(table) else COHORT_SOME_FAILED)


@app.command()
def validate(
    manifest: Annotated[
        Path,
        typer.Argument(help="A manifest (.csv/.parquet: case, image, mask, optional label and region) or a folder."),
    ],
    model: Card,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html and the tables (CSV, Parquet).")],
    methods: Annotated[list[str] | None, _option(ValidateSpec, "methods", "--methods")] = None,
    target: Annotated[str | None, _option(ValidateSpec, "target")] = None,
    layer: Annotated[list[str] | None, _option(ValidateSpec, "layer")] = None,
    tolerance_mm: Annotated[float | None, _option(ValidateSpec, "tolerance_mm")] = None,
    faithfulness_steps: Annotated[int | None, _option(ValidateSpec, "faithfulness_steps")] = None,
    sanity_cases: Annotated[int | None, _option(ValidateSpec, "sanity_cases")] = None,
    road: Annotated[bool | None, _option(ValidateSpec, "road")] = None,
    resamples: Annotated[int | None, _option(ValidateSpec, "resamples")] = None,
    seed: Annotated[int | None, _option(ValidateSpec, "seed")] = None,
    misses: Annotated[int | None, _option(ValidateSpec, "misses")] = None,
    prefetch: Annotated[bool | None, _option(ValidateSpec, "prefetch", flags="--prefetch/--no-prefetch")] = None,
    scheduler: Annotated[str | None, _option(ValidateSpec, "scheduler")] = None,
    workers: Annotated[int | None, _option(ValidateSpec, "workers")] = None,
    cohort: Annotated[
        Path | None,
        typer.Option(help="Folder for the cohort's maps and case records (resumable); default: OUT-cohort beside OUT."),
    ] = None,
    trust_weights: TrustWeights = False,
    device: Device = None,
) -> None:
    """Validate a model's explanations on MANIFEST's cases with lesion masks: one self-contained report.html
    (localisation, faithfulness, sanity, robustness, every number with its 95 % interval, methods ranked and
    compared, the misses pictured) and its tables as CSV and Parquet in OUT."""
    from volcam.devices import parse_device
    from volcam.workflows.validate import cohort_folder, validate_to_folder

    spec = _given(
        ValidateSpec, methods=methods, target=target, layer=layer, tolerance_mm=tolerance_mm,
        faithfulness_steps=faithfulness_steps, sanity_cases=sanity_cases, road=road, resamples=resamples, seed=seed,
        misses=misses, prefetch=prefetch, scheduler=scheduler, workers=workers,
    )  # fmt: skip
    parse_device(device)
    work = cohort if cohort is not None else cohort_folder(out)
    try:
        found = validate_to_folder(
            manifest, model, out, spec, cohort=work, trust=trust_weights, device=device, echo=typer.echo
        )
    except KeyboardInterrupt:
        typer.echo(f"volcam: interrupted; finished cases are kept in {work}, run again to resume", err=True)
        raise typer.Exit(130) from None
    cases = found.tables["cases"]
    failed = int((cases["status"] != "ok").sum())
    typer.echo(f"{len(cases) - failed} cases ok, {failed} failed; report: {Path(out) / 'report.html'}; maps: {work}")


def main() -> None:
    """Entry point for ``python -m volcam.cli``."""
    app()


if __name__ == "__main__":
    main()
