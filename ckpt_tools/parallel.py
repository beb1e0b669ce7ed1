"""Order-preserving batches over worker processes, for the commands that take `--jobs` (validate, ls)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from ckpt_tools.errors import UsageError

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import ProcessPoolExecutor

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
MAX_BATCH = 16  # items per batch handed to a worker process


def resolve_jobs(jobs: int) -> int:
    """The number of processes `jobs` asks for: itself, or one per usable CPU for 0; UsageError below 0."""
    if jobs < 0:
        detail = "must be 0 (one per CPU) or more"
        raise UsageError(f"jobs={jobs}: {detail}", argument="jobs", detail=detail)
    if jobs:
        return jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ordered_batches(
    run: Callable[[list[Item]], list[Outcome]],
    items: Sequence[Item],
    jobs: int,
    *,
    local: Callable[[list[Item]], list[Outcome]] | None = None,
    preload: Sequence[str] = (),
    pool: ProcessPoolExecutor | None = None,
) -> list[Outcome]:
    """`run` over consecutive batches of `items`, results in item order. With `jobs` > 1 the batches are queued
    for jobs - 1 worker processes (forked when nothing makes that unsafe, else from a forkserver that imports
    `preload` once, else spawned) while this process takes batches from the
    back of the queue itself with `local` (default `run`), so that the workers' start-up overlaps useful work.
    `pool` (from `early_pool`) is used instead of starting workers here."""
    here = local or run
    size = max(1, min(MAX_BATCH, -(-len(items) // (max(jobs, 1) * 4))))
    batches = [list(items[i : i + size]) for i in range(0, len(items), size)]
    if jobs < 2 or len(batches) < 2:
        return [outcome for batch in batches for outcome in here(batch)]
    done: list[list[Outcome] | None] = [None] * len(batches)
    with contextlib.ExitStack() as stack:
        if pool is None:
            from concurrent.futures import ProcessPoolExecutor  # only here: one job never pays for multiprocessing

            workers = min(jobs - 1, len(batches) - 1)
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=_context(preload)))
        futures = [pool.submit(run, batch) for batch in batches]
        for i in reversed(range(len(batches))):
            if not futures[i].cancel():
                break  # the workers take batches in order: every earlier one is theirs too
            done[i] = here(batches[i])
        for i, future in enumerate(futures):
            if done[i] is None:
                done[i] = future.result()
    return [outcome for batch in done if batch is not None for outcome in batch]


@contextlib.contextmanager
def early_pool(jobs: int, preload: Sequence[str]) -> Iterator[ProcessPoolExecutor | None]:
    """jobs - 1 worker processes started now, each importing `preload` at once, for a caller that has serial work
    to do before its batches exist (ls walks the folders): the workers' imports overlap it. None for one job."""
    if jobs < 2:
        yield None
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs - 1, mp_context=_context(preload)) as pool:
        pool.submit(_import_all, tuple(preload))  # the first task starts the workers
        yield pool


def _import_all(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """fork when it is safe, the cheapest start (a worker inherits every module already imported): this
    process runs no other thread and has not imported TensorFlow (whose thread pools make a forked child
    hang); ProcessPoolExecutor starts every fork worker before its own management thread. Otherwise a
    forkserver (spawn where there is none)."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context
    return multiprocessing.get_context("spawn")
