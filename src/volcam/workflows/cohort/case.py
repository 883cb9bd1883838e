"""One case of a cohort: load its scan and mask, explain it with every method (one shared forward),
score the maps, write its folder (NIfTI maps, montages, DICOM objects; ``case.json`` last), store.

A problem of the case never raises: it becomes the case's record (status ``error``), persisted unless
it may pass on another try (out of memory, a full disk, a PACS that is down).
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volcam.errors import InputError, OutputError, VolcamError, error_line
from volcam.io.atomic import atomic_folder
from volcam.io.dicom.instances import dicom_instances
from volcam.io.dicom.web import release, store
from volcam.io.load import load
from volcam.io.tables import Case
from volcam.workflows.cohort.records import CASE_FILE, CaseRecord, MapRecord, Settings, is_case_folder
from volcam.workflows.explain_folder import method_stem
from volcam.workflows.scoring import score_map
from volcam.workflows.specs import CohortSpec

if TYPE_CHECKING:
    from volcam.model.explanation import ScanExplanation
    from volcam.model.model import Model

__all__ = ["Loaded", "Task", "cached_model", "error_message", "failed", "load_case", "process_case"]


@dataclass(frozen=True)
class Task:
    """A case to do, with the signature of its inputs when the run started."""

    case: Case
    signature: str


@dataclass
class Loaded:
    """A case's scan, mask and region as loaded, or why they could not be."""

    scan: Any = None
    mask: Any = None
    region: Any = None
    seconds: float = 0.0
    error: BaseException | None = None


_models: dict[tuple[Any, ...], Any] = {}
_models_lock = threading.Lock()


def cached_model(path: Path, trust: bool, device: str | None) -> Model:
    """The model of ``path``, loaded once per process and thread (a Dask worker loads it once).

    Per thread because explaining registers hooks on the network: two threads must not share one.
    """
    from volcam.model.model import load_model

    key = (str(Path(path).resolve()), trust, device, threading.get_ident())
    with _models_lock:
        if key not in _models:
            _models[key] = load_model(path, trust=trust, device=device)
        return _models[key]


def load_case(case: Case) -> Loaded:
    """Read the case's scan, mask and region (what prefetch overlaps with the model); errors are kept, not raised."""
    start = time.perf_counter()
    loaded = Loaded()
    try:
        loaded.scan = load(case.image)
        loaded.mask = load(case.mask) if case.mask is not None else None
        loaded.region = load(case.region) if case.region is not None else None
    except Exception as error:  # any unreadable input becomes this case's error row
        loaded.error = error
    loaded.seconds = time.perf_counter() - start
    return loaded


def _out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def is_transient(error: BaseException) -> bool:
    """Out of memory or a full disk (or quota): may pass on another try (fewer workers, a free GPU, room
    on the disk), so not recorded as finished."""
    return _out_of_memory(error) or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))


def error_message(error: BaseException) -> str:
    """One line (:func:`volcam.errors.error_line`, scrubbed), out of memory said plainly. (The record
    scrubs its error again, whoever wrote it: :class:`~volcam.workflows.cohort.records.CaseRecord`.)"""
    if _out_of_memory(error):
        return f"out of memory ({error_line(error, limit=300).removeprefix(type(error).__name__ + ': ')})"
    return error_line(error, limit=300)


def failed(
    task: Task, settings: Settings, stage: str, why: str, transient: bool, timings: Mapping[str, Any] | None = None
) -> CaseRecord:
    """The record of a case that failed at ``stage`` (load, explain, metrics, write, store, worker);
    ``timings``: the seconds of the steps done (``load_s``, ...)."""
    record = CaseRecord(
        case=task.case.case_id, status="error", error=f"{stage}: {why}", transient=transient,
        fingerprint=settings.fingerprint, inputs=task.signature,
    )  # fmt: skip
    return replace(record, **(timings or {}))


def process_case(task: Task, settings: Settings, model: Model, loaded: Loaded) -> CaseRecord:
    """Explain, score and write one loaded case; its record (an error record if a step failed).

    Never raises for a problem of the case (only for Ctrl-C): the cohort goes on. A scan retrieved
    from a DICOMweb server has its files removed when the case is done.
    """
    try:
        return _process_case(task, settings, model, loaded)
    finally:
        release(loaded.scan)
        release(loaded.mask)
        release(loaded.region)


def _process_case(task: Task, settings: Settings, model: Model, loaded: Loaded) -> CaseRecord:
    spec = settings.spec
    timings: dict[str, Any] = {"load_s": loaded.seconds}  # seconds of each step done: CaseRecord's *_s
    if loaded.error is not None:
        error = loaded.error
        record = failed(task, settings, "load", error_message(error), is_transient(error), timings)
        return _persist(settings, record.on(task.case, model.labels))
    stage = "explain"
    try:
        start = time.perf_counter()
        found = model.explain(loaded.scan, list(spec.methods), spec.target, spec.layer, **spec.options)
        explained = found if isinstance(found, list) else [found]  # a list of methods gives a list
        timings["explain_s"] = time.perf_counter() - start
        stage, start = "metrics", time.perf_counter()
        maps = score_maps(model, explained, loaded, spec)
        timings["metrics_s"] = time.perf_counter() - start
        first = explained[0]
        record = CaseRecord(
            case=task.case.case_id, status="ok", prediction=first.prediction, target=first.target,
            probabilities=dict(first.probabilities), maps=maps, fingerprint=settings.fingerprint,
            inputs=task.signature,
        )  # fmt: skip
        record = replace(record, **timings).on(task.case, model.labels)
        stage, start = "write", time.perf_counter()
        with case_folder(settings.out / task.case.case_id, task.case.case_id) as temporary:
            files, dicom = write_maps(temporary, record, loaded.scan, explained, spec)
            record = replace(record, files=files, write_s=time.perf_counter() - start)
            if spec.store is not None:
                stage = "store"
                record = replace(record, stored=store(dicom, spec.store))
            (temporary / CASE_FILE).write_text(record.to_json())
        return record
    except Exception as error:  # a case's failure is its row; the cohort goes on
        # a PACS that is down or refuses may accept on the next run: not recorded as finished
        transient = is_transient(error) or stage == "store"
        record = failed(task, settings, stage, error_message(error), transient, timings)
        return _persist(settings, record.on(task.case, model.labels))


def score_maps(
    model: Model, explained: Sequence[ScanExplanation], loaded: Loaded, spec: CohortSpec
) -> tuple[MapRecord, ...]:
    """Each map's localization against the mask (when there is one) and faithfulness, as ``volcam
    evaluate`` scores it (:func:`volcam.workflows.scoring.score_map`), within the case's region when it
    has one (energy, VxAP, MaxF1 count its voxels; deletion/insertion change only them); clips get no
    scores."""
    if model.card.kind != "volume":  # faithfulness needs the network's input; clips get maps only
        return ()
    scan = loaded.scan
    lesions = _lesions(scan, loaded.mask) if loaded.mask is not None else None
    region = network_region = None
    if loaded.region is not None:
        region = _lesions(scan, loaded.region, "region")
        if not bool(region.any()):
            raise InputError("the region mask is empty")
        network_region = model.preprocessing.mask(region, like=scan).to(model.device)
    x = model.prepare(scan)[None].as_tensor().to(model.device)
    spacing = tuple(float(s) for s in (getattr(scan, "meta", {}) or {}).get("spacing", (1.0,) * 3))[:3]
    maps = []
    for one in explained:
        scores, _ = score_map(
            one, lesions, spacing, tolerance_mm=spec.tolerance_mm, region=region, model=model, x=x,
            steps=spec.faithfulness_steps, network_region=network_region,
        )  # fmt: skip
        maps.append(MapRecord(one.method, scores))
    return tuple(maps)


def _lesions(scan: Any, mask: Any, what: str = "lesion") -> Any:
    """The mask as a bool ``(X, Y, Z)`` tensor on the scan's grid (an InputError if on another grid)."""
    import torch

    plain = torch.as_tensor(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
    if tuple(plain.shape[-3:]) != tuple(scan.shape[-3:]) or plain.numel() != scan[0].numel():
        raise InputError(f"the {what} mask has shape {tuple(plain.shape)}; the scan's grid is {tuple(scan.shape[1:])}")
    return plain.reshape(scan.shape[-3:]) != 0


@contextlib.contextmanager
def case_folder(folder: Path, case_id: str) -> Iterator[Path]:
    """The case's folder, whole or not at all: a temporary folder to fill (``case.json`` last), renamed
    to ``folder`` when the block ends without an error. A folder volcam did not write is never replaced."""
    if folder.exists() and not is_case_folder(folder, case_id):
        raise OutputError(f"{folder}: exists and was not written by volcam for this case; not replaced")
    with atomic_folder(folder, overwrite=True) as temporary:
        yield temporary


def write_maps(
    temporary: Path, record: CaseRecord, scan: Any, explained: Sequence[ScanExplanation], spec: CohortSpec
) -> tuple[tuple[str, ...], list[Path]]:
    """Each method's map into ``temporary``: NIfTI, a montage with ``spec.png``, a DICOM object per kind
    of ``spec.dicom`` (``<method>_<kind>/``). The files written (relative) and the DICOM objects."""
    from volcam.io.write import write_dicom, write_nifti
    from volcam.viz.render import montage

    files: list[str] = []
    dicom: list[Path] = []
    for one in explained:
        stem = method_stem(one.method)
        write_nifti(one.map, temporary / f"{stem}.nii.gz", like=scan)
        files.append(f"{stem}.nii.gz")
        if spec.png:
            title = f"{record.case} · {one.method} · '{one.target}' (p = {one.probabilities.get(one.target, 0):.2f})"
            clip = (getattr(scan, "meta", {}) or {}).get("axes") == "thw"
            montage(scan, one.map, temporary / f"{stem}.png", hottest=8, title=title, window=None if clip else "lung")
            files.append(f"{stem}.png")
        for kind in spec.dicom:
            dicom.append(write_dicom(one, temporary / f"{stem}_{kind}", scan, kind=kind, overwrite=True))
            files += [p.relative_to(temporary).as_posix() for p in dicom_instances(dicom[-1])]
    return tuple(files), dicom


def _persist(settings: Settings, record: CaseRecord) -> CaseRecord:
    """Write an error record as the case's folder, unless the error may pass on a rerun."""
    if not record.transient:
        # cannot even write the error: it stays in the table
        with contextlib.suppress(OSError, VolcamError), case_folder(settings.out / record.case, record.case) as folder:
            (folder / CASE_FILE).write_text(record.to_json())
    return record
