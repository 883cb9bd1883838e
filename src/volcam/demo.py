"""Explain a scan into a folder (maps, pictures, a JSON summary), and the shipped demo built on it.

:func:`explain_to_folder` is what ``volcam explain`` runs; :func:`run_demo` is ``volcam demo``: the
demo CT model on the sample chest CT (loaded from its DICOM series) and the demo ultrasound model on
the sample clip, with several methods each, scored against the lesion masks that come with them.
Nothing is trained or downloaded: the weights are in ``sample_data/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CT_METHODS", "LUS_METHODS", "explain_to_folder", "input_paths", "localization", "run_demo"]

CT_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam")
LUS_METHODS = ("gradcam", "gradcam++", "layercam")


def localization(cam: np.ndarray, mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 5.0) -> dict:
    """Pointing game (argmax within ``tolerance_mm`` of the mask) and the share of map energy inside it.

    Args:
        cam: ``(*S)`` map; mask: ``(*S)``, nonzero inside the lesions; spacing: mm per axis (a huge
            value on a clip's time axis keeps distances within a frame).
    """
    from scipy.ndimage import distance_transform_edt

    inside = mask > 0
    near = distance_transform_edt(~inside, sampling=tuple(float(s) for s in spacing)) <= tolerance_mm
    total = float(cam.sum())
    return {
        "pointing_hit": bool(near.flat[int(np.argmax(cam))]),
        "energy_in_mask": round(float(cam[inside].sum()) / total, 4) if total > 0 else 0.0,
        "mask_fraction": round(float(inside.mean()), 4),
    }


def method_stem(method: str) -> str:
    """A method's name as a file-name stem: ``gradcam++`` → ``gradcampp``."""
    return method.replace("++", "pp").replace("+", "p").replace("/", "-")


def explain_to_folder(
    scan: Any,
    model: Any,
    out: str | Path,
    methods: Sequence[str] = ("gradcam",),
    *,
    target: str | int | None = None,
    layer: str | Sequence[str] | None = None,
    dicom: bool = False,
    mask: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Explain ``scan`` with ``model`` by each method; write maps, montages and ``summary.json`` to ``out``.

    Per method: ``<method>.nii.gz`` (the map on the scan's grid, with its affine), ``<method>.png``
    (a montage of the hottest slices or frames), and with ``dicom=True`` a derived DICOM series
    ``<method>_dicom/`` (volumes only). ``mask`` (on the scan's grid) adds pointing-game and
    energy scores. Returns the summary written to ``summary.json``.
    """
    from tqdm.auto import tqdm

    from volcam.errors import InputError
    from volcam.io.atomic import output_folder
    from volcam.io.write import write_dicom, write_nifti
    from volcam.viz.render import montage

    out = Path(out)
    clip = (getattr(scan, "meta", {}) or {}).get("axes") == "thw"
    if dicom and clip:
        raise InputError("--dicom writes a derived series for volumes; a clip gets a NIfTI map and a montage")
    spacing = tuple(float(s) for s in scan.meta.get("spacing", (1.0,) * (scan.ndim - 1)))
    summary: dict[str, Any] = {
        "model": model.name,
        "input": {"kind": "clip" if clip else "volume", "shape": list(scan.shape), "spacing": list(spacing)},
        "explanations": [],
    }
    # Every method's files appear together with summary.json, or none do (a later method failing,
    # Ctrl-C or SIGTERM leave `out` as it was).
    with output_folder(out, inputs=input_paths(scan, model), command="explain") as folder:
        # The bar shows on a terminal only (disable=None), so piped output and error lines stay clean.
        bar = tqdm(methods, desc=f"{model.name}", unit="method", leave=False, disable=None if progress else True)
        for method in bar:
            bar.set_postfix_str(method)
            explained = model.explain(scan, method, target=target, layer=layer, **options)
            start = time.perf_counter()
            stem = method_stem(explained.method)
            write_nifti(explained.map, folder / f"{stem}.nii.gz", like=scan)
            files = {"nifti": str(out / f"{stem}.nii.gz")}
            title = (
                f"{model.name} · {explained.method} @ {','.join(explained.layers)} · "
                f"'{explained.target}' (p = {explained.probabilities.get(explained.target, float('nan')):.2f})"
            )
            montage(
                scan, explained.map, folder / f"{stem}.png", hottest=8, title=title, window=None if clip else "lung"
            )
            files["png"] = str(out / f"{stem}.png")
            if dicom:
                write_dicom(explained.map, folder / f"{stem}_dicom", scan, overwrite=True)
                files["dicom"] = str(out / f"{stem}_dicom")
            record = explained.summary()
            record["timings_s"]["write"] = round(time.perf_counter() - start, 4)
            record["files"] = files
            if mask is not None:
                cam = explained.map[0].numpy()
                record["localization"] = localization(cam, mask, (1e9, *spacing[1:]) if clip else spacing)
            summary["explanations"].append(record)
            if progress is not None:
                with tqdm.external_write_mode():  # a line above the bar, not through it
                    progress(f"  {explained.method:<10} → {out / f'{stem}.png'}")
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def input_paths(scan: Any, model: Any = None, *others: Any) -> list[Path]:
    """What a command reads: the scan's source, the model's card and weights, and ``others`` (masks
    or their paths); no output may be, hold or lie inside any of them."""
    from volcam.io.atomic import source_paths

    found = source_paths(scan)
    card = getattr(model, "card", None)
    if card is not None:
        found += [p for p in (card.path, card.weights) if p is not None]
    for other in others:
        found += source_paths(other) if hasattr(other, "meta") else [Path(other)] if other is not None else []
    return found


def _mask(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj)


def run_demo(out: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The shipped demo: CT and ultrasound, several methods each, into ``out/ct`` and ``out/ultrasound``."""
    import volcam
    from volcam import sample_data as sd

    out = Path(out)
    start = time.perf_counter()
    results = {}
    ct_model = volcam.load_model(sd.file(sd.CT_CARD))
    ct = volcam.load(sd.file(sd.CT_DICOM))
    probabilities = ct_model.predict(ct)
    echo(
        f"chest CT {'×'.join(map(str, ct.shape[1:]))} voxels at "
        f"{'×'.join(f'{s:g}' for s in ct.meta['spacing'])} mm (DICOM series): "
        + ", ".join(f"P({k}) = {v:.3f}" for k, v in probabilities.items())
    )
    results["ct"] = explain_to_folder(
        ct, ct_model, out / "ct", CT_METHODS, target="covid", mask=_mask(sd.file(sd.CT_MASK)), progress=echo
    )
    lus_model = volcam.load_model(sd.file(sd.LUS_CARD))
    lus = volcam.load(sd.file(sd.LUS_DICOM))
    probabilities = lus_model.predict(lus)
    echo(
        f"lung ultrasound clip, {lus.shape[1]} frames at {lus.meta['frame_interval'] * 1000:g} ms: "
        + ", ".join(f"P({k}) = {v:.3f}" for k, v in probabilities.items())
    )
    results["ultrasound"] = explain_to_folder(
        lus, lus_model, out / "ultrasound", LUS_METHODS, target="covid", mask=_mask(sd.file(sd.LUS_MASK)), progress=echo
    )
    echo("")
    echo(f"{'':<12}{'method':<12}{'argmax in lesion':>18}{'energy in lesion':>18}{'lesion share':>14}")
    for part, summary in results.items():
        for record in summary["explanations"]:
            loc = record["localization"]
            echo(
                f"{part:<12}{record['method']:<12}{'yes' if loc['pointing_hit'] else 'no':>18}"
                f"{loc['energy_in_mask']:>18.1%}{loc['mask_fraction']:>14.1%}"
            )
    echo(f"\npictures: {out / 'ct'}/*.png and {out / 'ultrasound'}/*.png ({time.perf_counter() - start:.0f} s)")
    return results
