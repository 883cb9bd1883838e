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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from volcam.defaults import TOLERANCE_MM
from volcam.metrics._common import MetricInputError
from volcam.workflows.scoring import column_descriptions, score_map

__all__ = ["COLUMNS", "evaluate_to_folder"]

COLUMNS = {  # the per-map scores' columns (volcam.workflows.scoring), then what only evaluate measures
    **column_descriptions(),
    "road": "ROAD (LeRF − MoRF)/2 over 10..90% (higher is better; --road)",
    "sanity": "pass/FAIL: does the map change when the weights are randomised",
    "sanity_spearman": "Spearman with the original map, every block random",
    "sanity_ssim": "SSIM with the original map, every block random",
    "max_sensitivity": "max relative map change under ±2% input noise (lower is better; --robustness)",
    "seconds": "wall time of this method's map and metrics",
}


def evaluate_to_folder(
    scan: Any,
    model: Any,
    mask: Any,
    out: str | Path,
    methods: Sequence[str] = ("gradcam",),
    *,
    target: str | int | None = None,
    layer: str | Sequence[str] | None = None,
    tolerance_mm: float = TOLERANCE_MM,
    steps: int = 100,
    road: bool = False,
    robustness: bool = False,
    baseline: str | float = "zero",
    insertion_baseline: str | float = "blur",
    region: Any | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Explain ``scan`` with each method and score the maps; write the table and plots to ``out``.

    Args:
        scan: ``(C, X, Y, Z)`` as :func:`volcam.load` returns it.
        model: a :class:`volcam.Model` (a model card) for volumes.
        mask: the lesion mask on the scan's grid, ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        out: the folder for ``metrics.csv``, ``metrics.md``, ``metrics.json``,
            ``faithfulness.png`` (deletion and insertion curves) and ``sanity.png``.
        methods: CAM method names.
        target: the class explained (label or index); ``None``: the predicted class.
        layer: target layer(s); ``None``: the card's.
        tolerance_mm: pointing-game tolerance.
        steps: deletion/insertion steps (100: 1% each).
        road: also ROAD (sparse imputations: slower).
        robustness: also max-sensitivity under input noise.
        baseline: what deletion turns voxels into: ``"zero"``, ``"mean"``, ``"blur"`` or a number
            (in the network input's units, after the card's intensity steps).
        insertion_baseline: what insertion starts from (same choices).
        region: a body or lung mask on the scan's grid (like ``mask``): the energy is counted
            within it, and deletion/insertion rank and change only its voxels (carried to the
            network's grid by the card's geometric steps). Zeroing air outside the body or deleting
            lung by lung is then what the curves measure, not the background.

    Returns:
        one row per method, as written to ``metrics.csv``.
    """
    from volcam.io.atomic import check_output_folder
    from volcam.metrics import faithfulness, sanity
    from volcam.metrics import robustness as robust
    from volcam.workflows.explain_folder import input_paths

    if model.card.kind != "volume":
        raise MetricInputError(f"{model.name} explains clips; volcam evaluate scores volume models")
    if not methods:
        raise MetricInputError("give at least one CAM method")
    check_output_folder(out, input_paths(scan, model, mask, region))  # before the slow part
    scan_spacing = tuple(float(s) for s in (getattr(scan, "meta", {}) or {}).get("spacing", (1.0,) * 3))[:3]
    lesions = _on_grid(mask, scan, "lesion")
    if not bool(lesions.any()):
        raise MetricInputError("the lesion mask is empty")
    within = on_net_region = None
    if region is not None:
        within = _on_grid(region, scan, "region")
        if not bool(within.any()):
            raise MetricInputError("the region mask is empty")
        on_net_region = model.preprocessing.mask(within, like=scan).to(model.device)
    network, output = model.network, model.output_of  # every metric scores the tensor the engine explains
    x = model.prepare(scan)[None].as_tensor().to(model.device)
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for method in methods:
        start = time.perf_counter()
        explained = model.explain(scan, method, target=target, layer=layer)
        cls = int(explained.result.classes[0])
        chosen = list(explained.layers) if len(explained.layers) > 1 else explained.layers[0]
        on_net = explained.result.map
        on_net = on_net.as_tensor() if hasattr(on_net, "as_tensor") else on_net
        scores, curves[explained.method] = score_map(
            explained, lesions, scan_spacing, tolerance_mm=tolerance_mm, region=within, model=model, x=x,
            steps=steps, baseline=baseline, insertion_baseline=insertion_baseline, network_region=on_net_region,
        )  # fmt: skip
        row: dict[str, Any] = {"method": explained.method, "target": explained.target, **scores.row()}
        if road:
            row["road"] = float(faithfulness.road(network, x, on_net, target=cls, output=output).score[0])
        extra = model.method_options(method, chosen)  # a trained module (L-CAM) the card holds
        check = sanity.parameter_randomization(network, x, method, cls, chosen, output=output, **extra)
        checks[explained.method] = check
        row.update(
            sanity="pass" if check.passed else "FAIL",
            sanity_spearman=float(check.spearman[-1].mean()),
            sanity_ssim=float(check.ssim[-1].mean()),
        )
        if robustness:
            sensitivity = robust.max_sensitivity(network, x, method, cls, chosen, n_samples=4, output=output, **extra)
            row["max_sensitivity"] = float(sensitivity.value[0])
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if progress is not None:
            progress(
                f"  {explained.method:<16} pointing {row['pointing_hit']}  deletion {row['deletion_auc']:.3f}  "
                f"insertion {row['insertion_auc']:.3f}  sanity {row['sanity']}"
            )
    from volcam.io.atomic import output_folder

    # the tables and plots appear together, or (an error, Ctrl-C) not at all
    with output_folder(out, inputs=input_paths(scan, model, mask, region), command="evaluate") as folder:
        _write_tables(rows, folder)
        _plot_curves(curves, folder / "faithfulness.png")
        _plot_sanity(checks, folder / "sanity.png")
    return rows


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
    from volcam.io.atomic import atomic_file

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

    from volcam.io.atomic import atomic_file

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

    from volcam.io.atomic import atomic_file

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
