"""Many cases: a manifest in, maps + a table + a summary out; resumable, fault-isolated, local or on Dask.

:func:`run_cohort` is what ``volcam cohort`` runs. For each case of the manifest (see
:mod:`volcam.io.tables`): load the scan (and mask) → explain it with every method (one shared
forward) → write the maps under ``OUT/<case id>/`` as NIfTI on the scan's grid (and PNG montages
with ``png=True``) → score them (localization against the mask, deletion/insertion faithfulness) →
``OUT/<case id>/case.json``; with ``store`` also a DICOM parametric map per method, sent to a PACS
(STOW-RS) before the case's folder appears. Then ``results.parquet``/``results.csv``, ``summary.md`` and
``distributions.png`` for the whole cohort (:mod:`volcam.workflows.cohort.report`).

Resuming: a case folder is written as a whole (a temporary folder renamed when complete), and
``case.json`` records the run's fingerprint (a hash of the model's card and weights, the methods and
every option that changes an output) and a signature of the input files. A rerun skips a case
whose folder has its ``case.json`` with the same fingerprint and signature and every file it lists;
anything else is done again. A case that fails records its error (a corrupt file, a wrong shape, a
mask on another grid) and the run goes on; failures that may pass (out of memory, a worker that
died) are not recorded as finished, so the next run tries them again. Ctrl-C or a kill leaves
finished cases and nothing half-written; leftover temporaries are removed on the next run.

Speed: on one machine a background thread loads the next case while the model works on the
current one (``prefetch``). ``scheduler="local"`` starts a ``dask.distributed.LocalCluster`` of
``workers`` processes; any other ``scheduler`` is the address of a running Dask scheduler whose
workers see the same files. Each worker (thread) loads the model once. Outputs are the same
whichever way a case runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volcam.defaults import TOLERANCE_MM
from volcam.errors import DependencyError, InputError, OutputError, VolcamError
from volcam.io.tables import Case, input_signature, read_cases

if TYPE_CHECKING:
    from volcam.model.explanation import ScanExplanation
    from volcam.model.model import Model

__all__ = ["CASE_FILE", "Settings", "run_cohort"]

CASE_FILE = "case.json"
_LOCK = ".volcam-cohort.lock"  # with cohort.json, what marks a folder as a cohort run's
_FORMAT = 1  # bump when a case's outputs change meaning: every case is redone


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to do a case; pickled to Dask workers.

    ``fingerprint`` hashes what changes an output (model, methods, target, layer, options, PNG,
    faithfulness steps, tolerance); not where or how the cases run.
    """

    model: Path
    out: Path
    methods: tuple[str, ...]
    fingerprint: str
    target: str | int | None = None
    layer: str | tuple[str, ...] | None = None
    png: bool = False
    faithfulness_steps: int = 10
    tolerance_mm: float = TOLERANCE_MM
    options: dict[str, Any] = field(default_factory=dict)
    trust: bool = False
    device: str | None = None
    store: str | None = None  # a DICOMweb root the maps go to as DICOM (credentials: the environment)


@dataclass(frozen=True)
class Task:
    """A case to do, with the signature of its inputs when the run started."""

    case: Case
    signature: str


@dataclass
class Loaded:
    """A case's scan and mask as loaded, or why they could not be."""

    scan: Any = None
    mask: Any = None
    seconds: float = 0.0
    error: BaseException | None = None


# -- fingerprint ------------------------------------------------------------------------------------


def model_fingerprint(model: Model) -> str:
    """A hash of what the model computes: its card's fields (not its path) and every weight tensor."""
    import torch

    card = model.card
    digest = hashlib.sha256()
    fields = {k: getattr(card, k) for k in ("name", "kind", "labels", "layer", "in_channels", "network")}
    fields["preprocessing"] = card.preprocessing
    fields["modality"] = card.modality
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(model: Model, **choices: Any) -> str:
    """The run's fingerprint: the model's and every output-changing choice (JSON-able values)."""
    text = json.dumps({"format": _FORMAT, "model": model_fingerprint(model), **choices}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# -- one case ---------------------------------------------------------------------------------------

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
    """Read the case's scan and mask (what prefetch overlaps with the model); errors are kept, not raised."""
    from volcam.io import load

    start = time.perf_counter()
    loaded = Loaded()
    try:
        loaded.scan = load(case.image)
        loaded.mask = load(case.mask) if case.mask is not None else None
    except Exception as error:  # any unreadable input becomes this case's error row
        loaded.error = error
    loaded.seconds = time.perf_counter() - start
    return loaded


def _transient(error: BaseException) -> bool:
    """Out of memory: may pass on another try (fewer workers, a free GPU), so not recorded as finished."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _message(error: BaseException) -> str:
    """One line (:func:`volcam.errors.error_line`), out of memory said plainly."""
    from volcam.errors import error_line, first_line, one_line

    if _transient(error):
        return f"out of memory ({one_line(first_line(error, limit=300))})"
    return error_line(error, limit=300)


def error_record(task: Task, settings: Settings, stage: str, message: str, transient: bool = False) -> dict[str, Any]:
    """The record of a case that failed at ``stage`` (load, explain, metrics, write, worker)."""
    return {
        "case": task.case.case_id,
        "fingerprint": settings.fingerprint,
        "inputs": task.signature,
        "status": "error",
        "error": f"{stage}: {message}",
        "transient": transient,
        "timings": {},
    }


def _lesions(scan: Any, mask: Any) -> Any:
    """The mask as a bool ``(X, Y, Z)`` tensor on the scan's grid (an InputError if on another grid)."""
    import torch

    plain = torch.as_tensor(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
    if tuple(plain.shape[-3:]) != tuple(scan.shape[-3:]) or plain.numel() != scan[0].numel():
        raise InputError(f"the lesion mask has shape {tuple(plain.shape)}; the scan's grid is {tuple(scan.shape[1:])}")
    return plain.reshape(scan.shape[-3:]) != 0


def _scores(
    model: Model, explained: ScanExplanation, lesions: Any, x: Any, spacing: tuple[float, ...], settings: Settings
) -> dict:
    """Localization against ``lesions`` (when there are any) and faithfulness, for one method's map, as
    ``volcam evaluate`` scores it (:func:`volcam.workflows.scoring.score_map`)."""
    from volcam.workflows.scoring import score_map

    scores, _ = score_map(
        explained, lesions, spacing, tolerance_mm=settings.tolerance_mm, model=model, x=x,
        steps=settings.faithfulness_steps,
    )  # fmt: skip
    return scores.row()


@contextlib.contextmanager
def _case_folder(folder: Path, record: dict[str, Any]) -> Iterator[Path]:
    """The case's folder, whole or not at all: yield a temporary folder to fill; ``case.json`` is written last."""
    from volcam.io.atomic import atomic_folder

    if folder.exists() and not _is_case_folder(folder, str(record.get("case"))):
        raise OutputError(f"{folder}: exists and was not written by volcam for this case; not replaced")
    with atomic_folder(folder, overwrite=True) as temporary:
        yield temporary
        (temporary / CASE_FILE).write_text(json.dumps(record, indent=1) + "\n")


def _write_case(
    folder: Path, record: dict[str, Any], scan: Any = None, explained: Sequence[ScanExplanation] = (), png: bool = False
) -> None:
    """The case's folder, whole or not at all: maps (+ montages), then ``case.json`` listing them."""
    with _case_folder(folder, record) as temporary:
        _write_maps(temporary, record, scan, explained, png)


def _write_maps(
    temporary: Path,
    record: dict[str, Any],
    scan: Any = None,
    explained: Sequence[ScanExplanation] = (),
    png: bool = False,
    dicom: bool = False,
) -> list[Path]:
    """Each method's map (NIfTI, + montage, + DICOM parametric map) into ``temporary``, listed in ``record``;
    returns the DICOM objects written."""
    from volcam.io.write import write_nifti
    from volcam.viz.render import montage
    from volcam.workflows.explain_folder import method_stem

    files = []
    written: list[Path] = []
    start = time.perf_counter()
    for one in explained:
        stem = method_stem(one.method)
        write_nifti(one.map, temporary / f"{stem}.nii.gz", like=scan)
        files.append(f"{stem}.nii.gz")
        if png:
            title = f"{record['case']} · {one.method} · '{one.target}' (p = {one.probabilities.get(one.target, 0):.2f})"
            clip = (getattr(scan, "meta", {}) or {}).get("axes") == "thw"
            montage(scan, one.map, temporary / f"{stem}.png", hottest=8, title=title, window=None if clip else "lung")
            files.append(f"{stem}.png")
        if dicom:
            from volcam.io.write import dicom_instances, write_dicom

            written.append(write_dicom(one, temporary / f"{stem}_parametric-map", scan, overwrite=True))
            files += [p.relative_to(temporary).as_posix() for p in dicom_instances(written[-1])]
    record["files"] = files
    if explained:
        record["timings"]["write_s"] = time.perf_counter() - start
    return written


def process_case(task: Task, settings: Settings, model: Model, loaded: Loaded) -> dict[str, Any]:
    """Explain, score and write one loaded case; returns its record (an error record if a step failed).

    Never raises for a problem of the case (only for Ctrl-C): the cohort goes on. A scan retrieved
    from a DICOMweb server has its files removed when the case is done.
    """
    from volcam.io.dicomweb import release

    try:
        return _process_case(task, settings, model, loaded)
    finally:
        release(loaded.scan)
        release(loaded.mask)


def _process_case(task: Task, settings: Settings, model: Model, loaded: Loaded) -> dict[str, Any]:
    if loaded.error is not None:
        record = error_record(task, settings, "load", _message(loaded.error), _transient(loaded.error))
        record["timings"] = {"load_s": loaded.seconds}
        return _persist(task, settings, record)
    timings = {"load_s": loaded.seconds}
    stage = "explain"
    try:
        start = time.perf_counter()
        scan = loaded.scan
        found = model.explain(scan, list(settings.methods), settings.target, settings.layer, **settings.options)
        explained = found if isinstance(found, list) else [found]  # a list of methods gives a list
        timings["explain_s"] = time.perf_counter() - start
        stage, start = "metrics", time.perf_counter()
        scores = {}
        if model.card.kind == "volume":  # faithfulness needs the network's input; clips get maps only
            lesions = _lesions(scan, loaded.mask) if loaded.mask is not None else None
            x = model.prepare(scan)[None].as_tensor().to(model.device)
            spacing = tuple(float(s) for s in (getattr(scan, "meta", {}) or {}).get("spacing", (1.0,) * 3))[:3]
            scores = {one.method: _scores(model, one, lesions, x, spacing, settings) for one in explained}
        timings["metrics_s"] = time.perf_counter() - start
        first = explained[0]
        record = {
            "case": task.case.case_id,
            "fingerprint": settings.fingerprint,
            "inputs": task.signature,
            "status": "ok",
            "error": "",
            "transient": False,
            "prediction": first.prediction,
            "target": first.target,
            "probabilities": first.probabilities,
            "metrics": scores,
            "timings": timings,
        }
        stage = "write"
        with _case_folder(settings.out / task.case.case_id, record) as temporary:
            written = _write_maps(temporary, record, scan, explained, settings.png, settings.store is not None)
            if settings.store is not None:
                from volcam.io.dicomweb import store

                stage = "store"
                record["stored"] = store(written, settings.store)
        return record
    except Exception as error:  # a case's failure is its row; the cohort goes on
        # a PACS that is down or refuses may accept on the next run: not recorded as finished
        record = error_record(task, settings, stage, _message(error), _transient(error) or stage == "store")
        record["timings"] = timings
        return _persist(task, settings, record)


def _persist(task: Task, settings: Settings, record: dict[str, Any]) -> dict[str, Any]:
    """Write an error record as the case's folder, unless the error may pass on a rerun."""
    if not record["transient"]:
        with contextlib.suppress(OSError, VolcamError):  # cannot even write the error: it stays in the table
            _write_case(settings.out / task.case.case_id, record)
    return record


def remote_case(task: Task, settings: Settings) -> dict[str, Any]:
    """One case on a Dask worker: the worker's cached model, load, then :func:`process_case`."""
    try:
        model = cached_model(settings.model, settings.trust, settings.device)
    except Exception as error:  # e.g. the card is not on this worker's file system
        return error_record(task, settings, "worker", f"cannot load the model there ({_message(error)})", True)
    return process_case(task, settings, model, load_case(task.case))


def finished_record(task: Task, settings: Settings) -> dict[str, Any] | None:
    """The case's record when its folder shows it done with these settings and these inputs, else None."""
    folder = settings.out / task.case.case_id
    try:
        record = json.loads((folder / CASE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != settings.fingerprint:
        return None
    if record.get("inputs") != task.signature or record.get("transient"):
        return None
    if not all((folder / name).is_file() for name in record.get("files", [])):
        return None
    return record


# -- the run ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run per output folder at a time (POSIX advisory lock); then clear what a killed run left."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / _LOCK, "a")  # noqa: SIM115 (held open for the whole run)
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks; one run per folder is up to the user
            pass
        except OSError:
            raise OutputError(f"{out}: another volcam cohort run is writing there") from None
        from volcam.io.atomic import remove_stale

        remove_stale(out)
        yield
    finally:
        handle.close()


def _run_here(
    tasks: Sequence[Task], settings: Settings, model: Model, prefetch: bool, done: Callable[[dict], None]
) -> None:
    """Cases one after the other in this process; with ``prefetch`` the next one loads meanwhile."""
    if not prefetch:
        for task in tasks:
            done(process_case(task, settings, model, load_case(task.case)))
        return
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volcam-prefetch")
    try:
        upcoming = loader.submit(load_case, tasks[0].case) if tasks else None
        for i, task in enumerate(tasks):
            assert upcoming is not None  # submitted for task i, which exists
            loaded = upcoming.result()
            upcoming = loader.submit(load_case, tasks[i + 1].case) if i + 1 < len(tasks) else None
            done(process_case(task, settings, model, loaded))
    finally:
        loader.shutdown(wait=False, cancel_futures=True)


def _run_dask(
    tasks: Sequence[Task], settings: Settings, scheduler: str, workers: int | None, done: Callable[[dict], None]
) -> None:
    """Cases as Dask tasks: on a new LocalCluster (``"local"``) or the scheduler at that address."""
    try:
        import logging

        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DependencyError("running on Dask needs dask.distributed: pip install 'volcam[dask]'") from None
    cluster = client = None
    try:
        if scheduler == "local":
            # One thread per worker process: the model's threads and the workers then share the cores.
            cluster = LocalCluster(
                n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.ERROR,
            )  # fmt: skip
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as error:
                raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
        futures = {client.submit(remote_case, task, settings, pure=False): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                record = future.result()
            except Exception as error:  # the worker died under it (KilledWorker), or the task could not run
                why = "its worker died (out of memory?)" if type(error).__name__ == "KilledWorker" else _message(error)
                record = error_record(task, settings, "worker", why, transient=True)
            done(record)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _progress_bar(total: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="case", desc="cohort", disable=not show or total == 0, smoothing=0.1)


def run_cohort(
    manifest: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    methods: Sequence[str] = ("gradcam",),
    *,
    target: str | int | None = None,
    layer: str | Sequence[str] | None = None,
    png: bool = False,
    faithfulness_steps: int = 10,
    tolerance_mm: float = TOLERANCE_MM,
    prefetch: bool = True,
    scheduler: str | None = None,
    workers: int | None = None,
    trust: bool = False,
    device: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    store: str | None = None,
    **options: Any,
) -> Any:
    """Explain and score every case of a manifest; write maps, a table and a summary; return the table.

    Args:
        manifest: a ``.csv``/``.parquet`` manifest or a folder of scans (see :mod:`volcam.io.tables`).
        model: a model card (``.json``) or a MONAI bundle folder.
        out: the output folder: ``<case id>/`` per case, ``results.parquet``, ``results.csv``,
            ``summary.md``, ``distributions.png``, ``cohort.json`` (the settings).
        methods: CAM method names; they share one forward per case.
        target: the class explained (label or index); ``None``: each case's predicted class.
        layer: target layer(s); ``None``: the card's.
        png: also a PNG montage per map.
        faithfulness_steps: deletion/insertion steps per map (10: 10% each); 0 skips faithfulness,
            the slowest part (2 × steps + 2 batched forwards per map).
        tolerance_mm: pointing-game tolerance (cases with a mask).
        prefetch: load the next case in a background thread while this one computes (in-process).
        scheduler: ``None`` runs here; ``"local"`` starts a Dask LocalCluster of ``workers``
            processes (2 by default); else the address of a Dask scheduler (``tcp://host:8786``)
            whose workers can read the scans and write to ``out``.
        trust, device: as for :func:`volcam.load_model`.
        progress: a progress bar (cases/min, ETA) on stderr.
        store: a DICOMweb root (``http://pacs:8042/dicom-web``; checked before any case runs): each
            case also writes a DICOM parametric map per method and sends it there (STOW-RS); a case
            whose store fails is an error row that the next run tries again. Manifest images may be
            DICOMweb addresses too (credentials for both: :mod:`volcam.io.dicomweb`).
        echo: where to say what is skipped (e.g. ``print``); silent by default.
        options: method options, e.g. ``gradient_sigma_mm``.

    Returns:
        a pandas DataFrame, one row per case in manifest order (as ``results.parquet``), with
        ``attrs["computed"]`` and ``attrs["skipped"]``: the case ids done by this run and those
        found finished; ``attrs["seconds"]``: the whole run, ``attrs["cases_seconds"]``: its cases.

    Raises:
        VolcamError: a bad manifest, card, method, layer or target, before any case runs. A
            problem of one case never raises: it is that case's row.
    """
    from volcam.methods.registry import get_method
    from volcam.model.model import load_model
    from volcam.workflows.cohort.report import write_report

    say = echo or (lambda _: None)
    methods = tuple(methods)
    if not methods:
        raise InputError("give at least one CAM method")
    for name in methods:
        get_method(name)  # an unknown name fails before anything is loaded
    if workers is not None and workers < 1:
        raise InputError(f"workers={workers}: give 1 or more worker processes")
    if scheduler is None and workers not in (None, 1):
        raise InputError("workers= needs scheduler='local' (or the address of a Dask scheduler)")
    cases = read_cases(manifest)
    check_cohort_folder(Path(out), cases, manifest, model)  # before the model loads
    if store is not None:
        from volcam.io.dicomweb import check_store

        store = check_store(store).root  # a wrong address or a PACS that does not answer: before any case
    loaded_model = (
        cached_model(Path(model), trust, device) if scheduler is None else load_model(model, trust=trust, device=device)
    )
    if layer is not None:
        loaded_model.check_layer(layer)
    loaded_model.check_target(target)
    out = Path(out).absolute()  # workers write there, wherever they started
    chosen_layer = layer if layer is None or isinstance(layer, str) else tuple(layer)
    choices = {
        "methods": methods, "target": target, "layer": chosen_layer, "png": png,
        "faithfulness_steps": int(faithfulness_steps), "tolerance_mm": float(tolerance_mm), "options": options,
        **({"store": store} if store is not None else {}),
    }  # fmt: skip
    settings = Settings(
        model=Path(model).absolute(), out=out, fingerprint=fingerprint(loaded_model, **choices), trust=trust,
        device=device, methods=methods, target=target, layer=chosen_layer, png=png,
        faithfulness_steps=int(faithfulness_steps), tolerance_mm=float(tolerance_mm), options=dict(options),
        store=store,
    )  # fmt: skip
    started = time.perf_counter()
    with _exclusive(out):
        _write_settings(out, settings, loaded_model, manifest)
        tasks = [Task(case, input_signature(case)) for case in cases]
        records: dict[str, dict[str, Any]] = {}
        pending = []
        for task in tasks:
            record = finished_record(task, settings)
            if record is None:
                pending.append(task)
            else:
                records[task.case.case_id] = record
        if records:
            say(f"{len(records)} finished cases skipped; {len(pending)} to do")
        bar = _progress_bar(len(pending), progress)
        computed: list[str] = []

        errors = 0

        def done(record: dict[str, Any]) -> None:
            nonlocal errors
            records[record["case"]] = record
            computed.append(record["case"])
            errors += record["status"] != "ok"
            bar.update(1)
            minutes = bar.format_dict["elapsed"] / 60
            bar.set_postfix_str(f"{len(computed) / minutes if minutes else 0:.1f} cases/min, {errors} errors")

        loop_started = time.perf_counter()
        try:
            if scheduler is None:
                _run_here(pending, settings, loaded_model, prefetch, done)
            elif pending:  # nothing to do: no cluster to start
                _run_dask(pending, settings, scheduler, workers, done)
        finally:
            bar.close()
        loop = time.perf_counter() - loop_started
        wall = time.perf_counter() - started
        table = write_report(cases, records, settings, loaded_model, manifest, computed=computed, seconds=wall)
    table.attrs["computed"] = computed
    table.attrs["skipped"] = [c.case_id for c in cases if c.case_id not in computed]
    table.attrs["seconds"] = time.perf_counter() - started  # with the report
    table.attrs["cases_seconds"] = loop
    return table


def _is_case_folder(folder: Path, case_id: str) -> bool:
    """Whether ``folder`` is one this cohort code wrote for ``case_id`` (its ``case.json`` says so)."""
    try:
        record = json.loads((folder / CASE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("case") == case_id and "fingerprint" in record


def check_cohort_folder(
    out: Path, cases: Sequence[Case], manifest: str | os.PathLike, model: str | os.PathLike
) -> None:
    """Refuse, with one line and before anything runs, an output folder a cohort run must not write into.

    ``out`` may not be, hold or lie inside the manifest, a scan, a mask or the model; it is new, empty
    or a cohort folder (``cohort.json``); and each case folder that exists is one a cohort wrote
    (``case.json`` naming that case), so a folder of the user's that happens to bear a case's name is
    never replaced. (Case ids are plain folder names: :func:`volcam.io.tables.read_cases` checks.)
    """
    from volcam.io.atomic import check_output_folder

    inputs: list[Any] = [manifest, model]
    for case in cases:
        inputs += [case.image, case.mask]
    out = check_output_folder(
        out, inputs, ours=lambda folder: any((folder / name).is_file() for name in ("cohort.json", _LOCK)),
        maker="a cohort run",
    )  # fmt: skip
    if not out.is_dir():
        return
    for case in cases:
        folder = out / case.case_id
        if folder.is_symlink() or (folder.exists() and not (folder.is_dir() and _is_case_folder(folder, case.case_id))):
            raise OutputError(
                f"{folder}: exists and was not written by volcam for case {case.case_id!r}; "
                "move it away or choose another --out (volcam never replaces a folder it did not make)"
            )


def _write_settings(out: Path, settings: Settings, model: Model, manifest: str | os.PathLike) -> None:
    """``cohort.json``: what this folder holds (model, methods, options, fingerprint), for people and reruns."""
    from volcam._version import __version__
    from volcam.io.atomic import atomic_file

    text = json.dumps(
        {
            "volcam": __version__,
            "manifest": str(manifest),
            "model": {"name": model.name, "card": str(settings.model), "labels": list(model.labels)},
            "methods": list(settings.methods),
            "target": settings.target,
            "layer": settings.layer,
            "png": settings.png,
            "faithfulness_steps": settings.faithfulness_steps,
            "tolerance_mm": settings.tolerance_mm,
            "options": settings.options,
            "fingerprint": settings.fingerprint,
        },
        indent=2,
        default=str,
    )
    with atomic_file(out / "cohort.json") as temporary:
        temporary.write_text(text + "\n")
