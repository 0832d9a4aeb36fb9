"""Work over a split's games shared among processes (the standard library's process pool).

Decoding per-position outputs (Soft-NMS) is per game and independent, and most of the time of
an ensemble's build or a prediction's writing: :func:`map_games` spreads the games over
``workers`` processes and gives back the results in the games' order, the same as one process
(:func:`iterate_games`: as they come, for a caller that writes them meanwhile).
The processes are spawned, not forked: a caller may hold threads (Ray's, torch's) that a fork
would copy mid-work. As with any spawned pool, a script that asks for more than one worker
needs the ``if __name__ == "__main__":`` guard around its work (the commands have it).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

CHUNKS_PER_WORKER = 4  # several chunks per process: one slow game does not hold the others back
DEFAULT_MAX_WORKERS = 8  # each process holds its own copy of what it works on


class WorkerError(ValueError):
    """A worker process that died (killed, out of memory) or a bad number of workers."""


def usable_cpus(limit: int = DEFAULT_MAX_WORKERS) -> int:
    """The CPUs this process may run on (its affinity, which a scheduler such as SLURM sets), at
    most ``limit``: the default number of workers of the commands that take ``--workers``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, limit))


def check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorkerError(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


def positive_int(text: str) -> int:
    """``--workers N`` for argparse: a whole number >= 1, refused before any work otherwise."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def spawn_pool(workers: int, **kwargs: Any) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), **kwargs)


def died(error: BrokenProcessPool) -> WorkerError:
    """The error to raise when a pool's process died: what happened and what to try."""
    return WorkerError(
        f"a worker process died before it finished ({error}); out of memory? Try fewer workers (--workers 1)"
    )


def map_games(
    function: Callable[..., dict[str, T]], games: Sequence[str], *args: Any, workers: int = 1
) -> dict[str, T]:
    """``function(chunk, *args)`` over chunks of ``games``, merged into ``{game: value}`` in ``games``' order.

    ``function`` returns ``{game: value}`` for the games of its chunk (it may leave some out); it
    and ``args`` must pickle (a module-level function) when ``workers`` > 1.
    """
    return dict(iterate_games(function, games, *args, workers=workers))


def iterate_games(
    function: Callable[..., dict[str, T]], games: Sequence[str], *args: Any, workers: int = 1
) -> Generator[tuple[str, T], None, None]:
    """:func:`map_games` one ``(game, value)`` at a time, in ``games``' order, each chunk's as soon
    as it and the chunks before it are done: the caller works on them (writes them, say) while
    the processes go on with the next.

    A caller that may stop before the end (an error of its own) closes the generator
    (``with contextlib.closing(iterate_games(...)) as pairs:``): the processes then finish the
    chunks they hold, drop the others and exit before the caller goes on.
    """
    check_workers(workers)  # here, not at the first value
    return _iterate_games(function, list(games), args, workers)


def _iterate_games(
    function: Callable[..., dict[str, T]], games: list[str], args: tuple[Any, ...], workers: int
) -> Generator[tuple[str, T], None, None]:
    if workers == 1 or len(games) < 2:
        done = function(games, *args)
        yield from ((game, done[game]) for game in games if game in done)
        return
    count = min(len(games), CHUNKS_PER_WORKER * workers)
    # Consecutive games per chunk: the chunks' order is the games' order.
    bounds = [len(games) * i // count for i in range(count + 1)]
    chunks = [games[a:b] for a, b in itertools.pairwise(bounds)]
    pool = spawn_pool(min(workers, count))
    try:
        results = pool.map(function, chunks, *([arg] * count for arg in args))
        for chunk, done in zip(chunks, results, strict=True):
            yield from ((game, done[game]) for game in chunk if game in done)
    except BrokenProcessPool as error:
        raise died(error) from None
    finally:
        # On an error (here or the caller's, once it closes the generator), the chunks not
        # started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
