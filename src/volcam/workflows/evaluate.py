"""Every metric for several methods on one scan: a table (CSV + Markdown) and two plots.

:func:`evaluate_to_folder` is what ``volcam evaluate`` runs. Localization is scored on the scan's
own grid (the map as :meth:`volcam.Model.explain` returns it, the lesion mask as loaded, the scan's
spacing in mm); faithfulness, sanity and robustness need the network, so they run on the network's
input (the scan after the card's preprocessing) with the map on that grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from volcam.engine.drive import plain_tensor
from volcam.io.atomic import atomic_file, check_output_folder, output_folder
from volcam.metrics import MetricInputError
from volcam.workflows.scoring import MapScores, column, column_name, columns, score_map
from volcam.workflows.specs import EvaluateSpec

__all__ = ["COLUMNS", "MethodEvaluation", "evaluate_to_folder"]


@dataclass(frozen=True)
class MethodEvaluation:
    """One row of ``metrics.csv``: a method's map on the scan, scored. The fields are the columns, in order."""

    method: str = column("the CAM method")
    target: str = column("the class explained")
    scores: MapScores = field(default_factory=MapScores, metadata={"record": MapScores})
    road: float | None = column("ROAD (LeRF − MoRF)/2 over 10..90% (higher is better; --road)")
    sanity: str | None = column("pass/FAIL: does the map change when the weights are randomised")
    sanity_spearman: float | None = column("Spearman with the original map, every block random")
    sanity_ssim: float | None = column("SSIM with the original map, every block random")
    max_sensitivity: float | None = column(
        "max relative map change under ±2% input noise (lower is better; --robustness)"
    )
    seconds: float | None = column("wall time of this method's map and metrics")

    def row(self) -> dict[str, Any]:
        """The measured columns by name, in column order (the scores' in their place)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("record"):  # a record of its own (the scores): its columns in their place
                out.update(value.row())
            elif value is not None:
                out[column_name(f)] = value
        return out


#: Column → description of ``metrics.csv`` (``metrics.md`` lists them under the table).
COLUMNS = columns(MethodEvaluation)


@dataclass
class _Case:
    """The scan made ready for scoring once, for every method: masks on its grid and the network's input."""

    lesions: torch.Tensor  # (X, Y, Z) boolean, the scan's grid
    spacing: tuple[float, ...]  # the scan's voxel size, mm
    region: torch.Tensor | None  # (X, Y, Z) boolean, or None
    network_region: torch.Tensor | None  # the region on the network's grid
    x: torch.Tensor  # (1, C, *S) the network's input


def evaluate_to_folder(
    scan: Any,
    model: Any,
    mask: Any,
    out: str | Path,
    spec: EvaluateSpec | None = None,
    *,
    region: Any | None = None,
    progress: Callable[[str], None] | None = None,
    **choices: Any,
) -> list[dict[str, Any]]:
    """Explain ``scan`` with each method and score the maps; write the table and plots to ``out``.

    Args:
        scan: ``(C, X, Y, Z)`` as :func:`volcam.load` returns it.
        model: a :class:`volcam.Model` (a model card) for volumes.
        mask: the lesion mask on the scan's grid, ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        out: the folder for ``metrics.csv``, ``metrics.md``, ``metrics.json``,
            ``faithfulness.png`` (deletion and insertion curves) and ``sanity.png``.
        spec: what to measure (:class:`~volcam.workflows.specs.EvaluateSpec`: methods, target, layer,
            tolerance, deletion/insertion steps and baselines, ROAD, robustness); ``choices`` as
            keywords (``methods=["gradcam"], steps=20``) change it.
        region: a body or lung mask on the scan's grid (like ``mask``): the energy, VxAP and MaxF1
            count its voxels only, and deletion/insertion rank and change only its voxels (carried to the
            network's grid by the card's geometric steps). Zeroing air outside the body or deleting
            lung by lung is then what the curves measure, not the background.
        progress: called with a line per method.

    Returns:
        one row per method (:meth:`MethodEvaluation.row`), as written to ``metrics.csv``.
    """
    from volcam.workflows.explain_folder import input_paths

    spec = EvaluateSpec.of(spec, **choices)
    if model.card.kind != "volume":
        raise MetricInputError(f"{model.name} explains clips; volcam evaluate scores volume models")
    inputs = input_paths(scan, model, mask, region)
    check_output_folder(out, inputs)  # before the slow part
    case = _prepare(scan, model, mask, region)
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for method in spec.methods:
        evaluation, curve, check = _evaluate_method(scan, model, case, method, spec)
        curves[evaluation.method], checks[evaluation.method] = curve, check
        rows.append(evaluation.row())
        if progress is not None:
            scores = evaluation.scores
            vxap = "n/a" if scores.vxap is None else f"{scores.vxap:.3f}"  # lesions all outside the region
            progress(
                f"  {evaluation.method:<16} pointing {scores.pointing_hit}  VxAP {vxap}  deletion "
                f"{scores.deletion_auc:.3f}  insertion {scores.insertion_auc:.3f}  sanity {evaluation.sanity}"
            )
    # the tables and plots appear together, or (an error, Ctrl-C) not at all
    with output_folder(out, inputs=inputs, command="evaluate") as folder:
        _write_tables(rows, folder)
        _plot_curves(curves, folder / "faithfulness.png")
        _plot_sanity(checks, folder / "sanity.png")
    return rows


def _prepare(scan: Any, model: Any, mask: Any, region: Any | None) -> _Case:
    """The masks on the scan's grid (checked), the region on the network's, and the network's input."""
    lesions = _on_grid(mask, scan, "lesion")
    if not bool(lesions.any()):
        raise MetricInputError("the lesion mask is empty")
    within = on_network = None
    if region is not None:
        within = _on_grid(region, scan, "region")
        if not bool(within.any()):
            raise MetricInputError("the region mask is empty")
        on_network = model.preprocessing.mask(within, like=scan).to(model.device)
    spacing = tuple(float(s) for s in (getattr(scan, "meta", {}) or {}).get("spacing", (1.0,) * 3))[:3]
    x = model.prepare(scan)[None].as_tensor().to(model.device)
    return _Case(lesions, spacing, within, on_network, x)


def _evaluate_method(scan: Any, model: Any, case: _Case, method: str, spec: EvaluateSpec) -> tuple[Any, Any, Any]:
    """One method's map and every metric of ``spec``: the row, the deletion/insertion curves, the sanity check."""
    from volcam.metrics import faithfulness, sanity
    from volcam.metrics import robustness as robust

    start = time.perf_counter()
    network, output = model.network, model.output_of  # every metric scores the tensor the engine explains
    explained = model.explain(scan, method, target=spec.target, layer=spec.layer)
    cls = int(explained.result.classes[0])
    chosen = list(explained.layers) if len(explained.layers) > 1 else explained.layers[0]
    scores, curves = score_map(
        explained, case.lesions, case.spacing, tolerance_mm=spec.tolerance_mm, region=case.region, model=model,
        x=case.x, steps=spec.steps, baseline=spec.baseline, insertion_baseline=spec.insertion_baseline,
        network_region=case.network_region,
    )  # fmt: skip
    on_net = plain_tensor(explained.result.map)
    road = float(faithfulness.road(network, case.x, on_net, target=cls, output=output).score[0]) if spec.road else None
    extra = model.method_options(method, chosen)  # a trained module (L-CAM) the card holds
    check = sanity.parameter_randomization(network, case.x, method, cls, chosen, output=output, **extra)
    sensitivity = None
    if spec.robustness:
        found = robust.max_sensitivity(network, case.x, method, cls, chosen, n_samples=4, output=output, **extra)
        sensitivity = float(found.value[0])
    evaluation = MethodEvaluation(
        explained.method, explained.target, scores, road, "pass" if check.passed else "FAIL",
        float(check.spearman[-1].mean()), float(check.ssim[-1].mean()), sensitivity, time.perf_counter() - start,
    )  # fmt: skip
    return evaluation, curves, check


def _on_grid(mask: Any, scan: Any, what: str) -> torch.Tensor:
    """``mask`` ``(X, Y, Z)`` or ``(1, X, Y, Z)`` on the scan's grid → ``(X, Y, Z)`` boolean."""
    plain = torch.as_tensor(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
    if plain.numel() != scan.shape[-3:].numel() or tuple(plain.shape[-3:]) != tuple(scan.shape[-3:]):
        grid = tuple(scan.shape[1:])
        raise MetricInputError(f"the {what} mask has shape {tuple(plain.shape)}; the scan's grid is {grid}")
    return plain.reshape(scan.shape[-3:]) != 0


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _write_tables(rows: list[dict[str, Any]], out: Path) -> None:

    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c, "")) for c in columns) + " |" for row in rows]
    lines += ["", *[f"- `{c}`: {COLUMNS[c]}" for c in columns if c in COLUMNS], ""]
    for name, text in (
        ("metrics.csv", buffer.getvalue()),
        ("metrics.md", "\n".join(lines)),
        ("metrics.json", json.dumps(rows, indent=2) + "\n"),
    ):
        with atomic_file(out / name) as temporary:
            temporary.write_text(text)


def _plot_curves(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, di in curves.items():
        for ax, curve in zip(axes, (di.deletion, di.insertion), strict=True):
            ax.plot(curve.fractions, curve.scores[0], label=f"{name} (AUC {float(curve.auc[0]):.3f})")
    for ax, title in zip(axes, ("deletion (lower is better)", "insertion (higher is better)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("fraction of voxels, most salient first")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("class probability")
    fig.tight_layout()
    with atomic_file(path) as temporary:
        fig.savefig(temporary, format="png", dpi=110)
    plt.close(fig)


def _plot_sanity(checks: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, check in checks.items():
        steps = range(1, len(check.steps) + 1)
        label = f"{name} ({'pass' if check.passed else 'FAIL'})"
        axes[0].plot(steps, check.spearman.mean(1), marker="o", label=label)
        axes[1].plot(steps, check.ssim.mean(1), marker="o", label=label)
        ticks = list(check.steps)
    for ax, title in zip(axes, ("Spearman rank correlation", "SSIM"), strict=True):
        ax.set_title(f"{title} with the original map")
        ax.set_xlabel("blocks randomised, from the head down")
        if checks:
            ax.set_xticks(range(1, len(ticks) + 1), ticks, rotation=60, fontsize=7)
        ax.axhline(next(iter(checks.values())).threshold if checks else 0.5, color="grey", ls="--", lw=1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as temporary:
        fig.savefig(temporary, format="png", dpi=110)
    plt.close(fig)
