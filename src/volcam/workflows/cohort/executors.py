"""Where a cohort's cases run: here, one after the other (the next one loading meanwhile), or as Dask tasks.

Each executor calls ``done`` with every case's record as it finishes, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from volcam.errors import DependencyError, InputError
from volcam.workflows.cohort.case import Task, cached_model, error_message, failed, load_case, process_case
from volcam.workflows.cohort.records import CaseRecord, Settings

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = ["remote_case", "run_dask", "run_here"]

Done = Callable[[CaseRecord], None]


def run_here(tasks: Sequence[Task], settings: Settings, model: Model, done: Done) -> None:
    """Cases one after the other in this process; with ``spec.prefetch`` the next one loads meanwhile."""
    if not settings.spec.prefetch:
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


def remote_case(task: Task, settings: Settings) -> CaseRecord:
    """One case on a Dask worker: the worker's cached model, load, then :func:`process_case`."""
    try:
        model = cached_model(settings.model, settings.trust, settings.device)
    except Exception as error:  # e.g. the card is not on this worker's file system
        return failed(task, settings, "worker", f"cannot load the model there ({error_message(error)})", True)
    return process_case(task, settings, model, load_case(task.case))


def run_dask(tasks: Sequence[Task], settings: Settings, done: Done) -> None:
    """Cases as Dask tasks: on a new LocalCluster (``spec.scheduler == "local"``, ``spec.workers``
    processes, 2 by default) or on the scheduler at the address ``spec.scheduler``."""
    try:
        import logging

        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DependencyError("running on Dask needs dask.distributed: pip install 'volcam[dask]'") from None
    scheduler = settings.spec.scheduler
    cluster = client = None
    try:
        if scheduler == "local":
            # One thread per worker process: the model's threads and the workers then share the cores.
            cluster = LocalCluster(
                n_workers=settings.spec.workers or 2, threads_per_worker=1, processes=True, dashboard_address=None,
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
                killed = type(error).__name__ == "KilledWorker"
                why = "its worker died (out of memory?)" if killed else error_message(error)
                record = failed(task, settings, "worker", why, transient=True)
            done(record)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
