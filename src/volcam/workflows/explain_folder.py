"""Explain a scan into a folder: a map per method on the scan's grid (NIfTI, PNG, DICOM) and a summary.

:func:`explain_to_folder` is what ``volcam explain`` runs; the demo and the napari dock use it too.
The folder is one transaction (:func:`volcam.io.atomic.output_folder`): every method's files appear
together with ``summary.json``, or none do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, InputError
from volcam.io.atomic import output_folder, source_paths
from volcam.workflows.specs import ExplainSpec

__all__ = ["explain_to_folder", "input_paths", "method_stem"]


def method_stem(method: str) -> str:
    """A method's name as a file-name stem: ``gradcam++`` → ``gradcampp``."""
    return method.replace("++", "pp").replace("+", "p").replace("/", "-")


def explain_to_folder(
    scan: Any,
    model: Any,
    out: str | Path,
    spec: ExplainSpec | None = None,
    *,
    mask: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    **choices: Any,
) -> dict[str, Any]:
    """Explain ``scan`` with ``model`` by each method of ``spec``; write maps, montages and ``summary.json`` to ``out``.

    Args:
        scan: what :func:`volcam.load` returns, ``(C, *S)``.
        model: a :class:`volcam.Model`.
        out: the folder; it appears whole or not at all.
        spec: what to explain and which files to write (:class:`~volcam.workflows.specs.ExplainSpec`);
            ``choices`` as keywords (``methods=["gradcam"], target="covid", dicom="segmentation"``)
            change it, unknown keywords are method options.
        mask: a lesion mask on the scan's grid: adds pointing-game and energy scores.
        progress: called with a line per method written.

    Per method: ``<method>.nii.gz`` (the map on the scan's grid, with its affine), ``<method>.png``
    (a montage of the hottest slices or frames), and per DICOM kind in ``spec.dicom`` a folder
    ``<method>_<kind>/`` of DICOM instances on the scan's study and frame of reference (volumes only;
    :func:`volcam.io.dicom.instances.dicom_instances` lists them). A clip's method also gets
    ``<method>.mp4`` and ``<method>.webp`` (``.gif`` where PyAV has no WebP encoder): the clip with its
    map and the explained class's probability per frame (:func:`volcam.viz.video.write_clip_video`),
    and its record the frame probabilities and the decisive frames (``spec.decisive_threshold``).
    Returns the summary written to ``summary.json``.

    With ``spec.store`` (a DICOMweb root, e.g. ``http://pacs:8042/dicom-web``; checked before any work)
    the DICOM objects are also sent there with STOW-RS before the folder appears: a store that fails
    leaves no folder. The summary then says where they went (``"stored"``); credentials come from the
    environment (:mod:`volcam.io.dicom.web`).
    """
    from tqdm.auto import tqdm

    spec = ExplainSpec.of(spec, **choices)
    if spec.store is not None:
        from volcam.io.dicom.web import check_store

        check_store(spec.store)  # a wrong address or a server that does not answer fails before any work
    out = Path(out)
    summary = _summary_head(scan, model, spec)
    # Every method's files appear together with summary.json, or none do (a later method failing,
    # Ctrl-C or SIGTERM leave `out` as it was).
    with output_folder(out, inputs=input_paths(scan, model), command="explain") as folder:
        # The bar shows on a terminal only (disable=None), so piped output and error lines stay clean.
        bar = tqdm(spec.methods, desc=model.name, unit="method", leave=False, disable=None if progress else True)
        for method in bar:
            bar.set_postfix_str(method)
            explained = model.explain(scan, method, target=spec.target, layer=spec.layer, **spec.method_kwargs())
            record = _write_explanation(explained, scan, model, folder, out, spec, mask)
            summary["explanations"].append(record)
            if progress is not None:
                written = [record["files"][key] for key in ("png", "video", "animation") if key in record["files"]]
                with tqdm.external_write_mode():  # a line above the bar, not through it
                    progress(f"  {explained.method:<10} → {', '.join(written)}")
        if spec.store is not None:
            summary["stored"] = _store(folder, summary, spec.store)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _is_clip(scan: Any) -> bool:
    return (getattr(scan, "meta", {}) or {}).get("axes") == "thw"


def _spacing(scan: Any) -> tuple[float, ...]:
    """The scan's voxel size (mm; seconds on a clip's time axis) as loaded."""
    return tuple(float(s) for s in scan.meta.get("spacing", (1.0,) * (scan.ndim - 1)))


def _summary_head(scan: Any, model: Any, spec: ExplainSpec) -> dict[str, Any]:
    """The summary before any map: the model, the input, what was asked; checks what the scan allows."""

    clip = _is_clip(scan)
    if spec.dicom and clip:
        raise InputError("--dicom writes DICOM objects of volumes; a clip gets a NIfTI map, a montage and a video")
    spacing = _spacing(scan)
    return {
        "model": model.name,
        "input": {"kind": "clip" if clip else "volume", "shape": list(scan.shape), "spacing": list(spacing)},
        "explanations": [],
    }


def _write_explanation(
    explained: Any, scan: Any, model: Any, folder: Path, out: Path, spec: ExplainSpec, mask: np.ndarray | None
) -> dict[str, Any]:
    """Write one method's files (NIfTI, montage, DICOM kinds; a clip's video) into ``folder`` (that becomes
    ``out``); its summary record, with where the files will be and the localization against ``mask``."""
    from volcam.io.write import write_dicom, write_nifti
    from volcam.metrics.localization import localization, within_frames
    from volcam.viz.render import montage

    start = time.perf_counter()
    clip, stem = _is_clip(scan), method_stem(explained.method)
    probability = explained.probabilities.get(explained.target, float("nan"))
    layers = ",".join(explained.layers)
    title = f"{model.name} · {explained.method} @ {layers} · '{explained.target}' (p = {probability:.2f})"
    # The NIfTI (resampling, quantising and compressing slabs: NumPy, torch and zlib work that releases the
    # GIL) is written on a second thread while this one draws the montage (matplotlib: the GIL's). The
    # explanation itself is written, not its .map: a map still to be resampled goes slab by slab.
    with ThreadPoolExecutor(1, thread_name_prefix="volcam-nifti") as pool:
        nifti = pool.submit(write_nifti, explained, folder / f"{stem}.nii.gz", like=scan)
        montage(scan, explained, folder / f"{stem}.png", hottest=8, title=title, window=None if clip else "lung")
        nifti.result()
    files: dict[str, Any] = {"nifti": str(out / f"{stem}.nii.gz"), "png": str(out / f"{stem}.png")}
    for kind in spec.dicom:
        write_dicom(explained, folder / f"{stem}_{kind}", scan, kind=kind, overwrite=True)
    if spec.dicom:
        files["dicom"] = {kind: str(out / f"{stem}_{kind}") for kind in spec.dicom}
    record = explained.summary()
    if clip:
        written = _clip_outputs(explained, scan, model, folder / stem, spec.decisive_threshold, title, record)
        files.update({key: str(out / path.name) for key, path in written.items()})
    record["timings_s"]["write"] = round(time.perf_counter() - start, 4)
    record["files"] = files
    if mask is not None:
        spacing = tuple(float(s) for s in scan.meta.get("spacing", (1.0,) * (scan.ndim - 1)))
        record["localization"] = localization(
            explained.map[0].numpy(), mask, within_frames(spacing) if clip else spacing
        )
    return record


def _clip_outputs(
    explained: Any, scan: Any, model: Any, stem: Path, threshold: float, title: str, record: dict[str, Any]
) -> dict[str, Path]:
    """A clip's video (``<stem>.mp4`` and the animation; what was written, by kind) and, into ``record``,
    its frame probabilities (label → ``(T,)``), its decisive frames and the video's seconds."""
    from volcam.viz.video import FrameCurve, write_clip_video

    # (T, classes); float64, so the JSON holds the rounded numbers, not their float32 neighbours
    frame_probabilities = explained.result.frame_probabilities.detach().cpu().double().numpy()
    labels = [model.label(k) for k in range(frame_probabilities.shape[1])]
    # the explained class's curve; a custom target (no label of its own) shows the clip's class
    index = labels.index(explained.target) if explained.target in labels else int(frame_probabilities.mean(0).argmax())
    interval = scan.meta.get("frame_interval")
    curve = FrameCurve(frame_probabilities[:, index], labels[index], threshold, float(interval) if interval else None)
    decisive = curve.decisive
    record["frame_probabilities"] = {
        label: np.round(frame_probabilities[:, k], 5).tolist() for k, label in enumerate(labels)
    }
    record["decisive_frames"] = {
        "label": curve.label,
        "threshold": threshold,
        "indices": decisive.tolist(),
        "times_s": np.round(curve.times[decisive], 4).tolist() if interval else None,
    }
    start = time.perf_counter()
    try:
        written = write_clip_video(scan, explained, curve, stem, title=title)
    except DependencyError as error:  # PyAV is optional: the maps and the summary still come, and say so
        record["warnings"].append(f"no video of the clip: {error}")
        return {}
    record["timings_s"]["video"] = round(time.perf_counter() - start, 4)
    return written


def _store(folder: Path, summary: dict[str, Any], url: str) -> dict[str, Any]:
    """Send the DICOM objects the summary lists (written in ``folder``) to ``url``; where and how many."""
    from volcam.io.dicom.web import parse_address, store

    written = []
    for record in summary["explanations"]:
        found = record["files"].get("dicom") or {}
        written += [folder / Path(p).name for p in (found.values() if isinstance(found, dict) else [found])]
    return {"url": parse_address(url, study=False).root, "instances": store(written, url)}


def input_paths(scan: Any, model: Any = None, *others: Any) -> list[Path]:
    """What a command reads: the scan's source, the model's card and weights, and ``others`` (masks
    or their paths); no output may be, hold or lie inside any of them."""

    found = source_paths(scan)
    card = getattr(model, "card", None)
    if card is not None:
        found += [p for p in (card.path, card.weights) if p is not None]
    for other in others:
        found += source_paths(other) if hasattr(other, "meta") else [Path(other)] if other is not None else []
    return found
