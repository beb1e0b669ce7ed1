"""Order-preserving batches over worker processes, for the commands that take `--jobs` (validate, ls)."""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from ckpt_tools.errors import UsageError

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import Future, ProcessPoolExecutor

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
MAX_BATCH = 16  # items per batch: the last batches decide how evenly the processes finish
IN_FLIGHT_PER_WORKER = 2  # batches queued per worker ahead of its results, so that it never waits for one


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
    """`run` over consecutive batches of `items`, results in item order. With `jobs` > 1, jobs - 1 worker
    processes (forked when nothing makes that unsafe, else from a forkserver that imports `preload` once, else
    spawned) take batches from the front while this process takes them from the back with `local` (default
    `run`), so that the workers' start-up overlaps useful work. `pool` (from `early_pool`) is used instead of
    starting workers here."""
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
        else:
            workers = jobs - 1
        front = _Front(pool, run, batches, IN_FLIGHT_PER_WORKER * workers)
        back = len(batches)
        while front.top_up(back):
            back -= 1
            done[back] = here(batches[back])
        for i, future in front.submitted:
            done[i] = future.result()
    return [outcome for batch in done if batch is not None for outcome in batch]


class _Front(Generic[Item, Outcome]):
    """The batches handed to the workers, from the front, a few at a time: a queued batch can no longer be taken
    back, so queueing them all at once would leave the workers the last ones while this process sits idle."""

    def __init__(
        self,
        pool: ProcessPoolExecutor,
        run: Callable[[list[Item]], list[Outcome]],
        batches: list[list[Item]],
        in_flight: int,
    ) -> None:
        self.pool, self.run, self.batches, self.in_flight = pool, run, batches, max(1, in_flight)
        self.submitted: list[tuple[int, Future[list[Outcome]]]] = []
        self._unfinished: collections.deque[Future[list[Outcome]]] = collections.deque()

    def top_up(self, back: int) -> bool:
        """Queue the next batches, none at or past `back`, until `in_flight` of them are unfinished; whether a
        batch before `back` is left for this process to take."""
        unfinished = self._unfinished
        while unfinished and unfinished[0].done():
            unfinished.popleft()
        while len(unfinished) < self.in_flight and len(self.submitted) < back:
            i = len(self.submitted)
            future = self.pool.submit(self.run, self.batches[i])
            self.submitted.append((i, future))
            unfinished.append(future)
        return len(self.submitted) < back


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
