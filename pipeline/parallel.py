"""Streaming work over joblib workers, for ingest and the feature stages.

Each task runs with its math libraries (BLAS, OpenMP) limited to one thread: the summation
order then does not depend on how many workers run or on the machine, so features are
bit-identical for any `compute.n_jobs` (threaded BLAS made mel features differ in the last bits
between n_jobs 1 and 2, which was enough to change the trained models).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import joblib
from threadpoolctl import threadpool_limits
from tqdm import tqdm


def _single_threaded(fn: Callable, args: tuple):
    with threadpool_limits(limits=1):
        return fn(*args)


def stream(fn: Callable, tasks: Iterable[tuple], n_jobs: int, desc: str, unit: str,
           total: int | None = None) -> Iterator:
    """`fn(*task)` for every task, in task order, computed on `n_jobs` workers (-1: one per
    core) and yielded as they come. Tasks are drawn lazily (a generator works), so the caller
    holds a few tasks and results at a time."""
    results = joblib.Parallel(n_jobs=n_jobs, return_as="generator")(
        joblib.delayed(_single_threaded)(fn, task) for task in tasks)
    with tqdm(total=total if total is not None else len(tasks), desc=desc, unit=unit) as bar:
        for result in results:
            bar.update()
            yield result
