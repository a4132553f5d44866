"""Streaming independent tasks over workers: joblib's loky pool (`compute.backend: local`) or a
Dask cluster (`dask`: a LocalCluster of `compute.n_jobs` one-thread workers, or the scheduler
at `compute.scheduler`). Ingest, the feature stages and every training run of the pretrain and
fuse stages go through `stream`.

Each task runs with its math libraries (BLAS, OpenMP) limited to one thread and torch limited
to `compute.torch_threads`: the summation order then does not depend on how many workers run,
where they run or on the machine, so results are bit-identical for any backend and n_jobs
(threaded BLAS made mel features differ in the last bits between n_jobs 1 and 2, which was
enough to change the trained models). With `compute.portable_numerics` each task first checks
that its process computes with the pinned kernels (pipeline/numerics.py): a worker started
without them stops the stage instead of computing other bits.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import joblib
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline.errors import warn
from pipeline.numerics import check_cpu_dispatch
from pipeline.params import ComputeParams

if TYPE_CHECKING:
    import numpy as np

LOCAL = ComputeParams(n_jobs=1)  # in-process, one task after another


def task_function(fn: Callable | str) -> Callable:
    """`fn`, or the function a "module:function" name names, imported here."""
    if callable(fn):
        return fn
    module, name = fn.split(":")
    return getattr(importlib.import_module(module), name)


def _limited(fn: Callable | str, args: tuple, torch_threads: int, portable: bool):
    if portable:
        check_cpu_dispatch(f"worker process {os.getpid()}")
    with threadpool_limits(limits=1):
        fn = task_function(fn)
        if "torch" in sys.modules:  # only tasks that use torch pay for importing it
            sys.modules["torch"].set_num_threads(torch_threads)
        return fn(*args)


def warn_if_oversubscribed(compute: ComputeParams) -> None:
    """Torch tasks on this machine use n_jobs workers x torch_threads threads: more than its
    cores and they slow each other down (a remote scheduler's machines are not checked)."""
    if compute.scheduler:
        return
    threads, cores = joblib.effective_n_jobs(compute.n_jobs) * compute.torch_threads, os.cpu_count() or 1
    if compute.torch_threads > 1 and threads > cores:
        warn(f"compute.n_jobs={compute.n_jobs} workers x compute.torch_threads={compute.torch_threads} "
             f"= {threads} threads on {cores} cores: the training runs oversubscribe the CPU; lower one of them")


@contextlib.contextmanager
def backend(compute: ComputeParams):
    """joblib's pool as `compute` asks: loky here, or a Dask client (closed afterwards)."""
    if compute.backend == "local":
        yield compute.n_jobs
        return
    import dask
    from dask.distributed import Client, LocalCluster

    if compute.scheduler:
        client = Client(compute.scheduler)
    else:
        workers = joblib.effective_n_jobs(compute.n_jobs)
        # dask's default MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold: every
        # large tensor is then a fresh mmap and its page faults made training 2x slower here
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            client = Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0"))
    print(f"dask: {len(client.scheduler_info()['workers'])} worker(s) at {client.scheduler.address}, "
          f"dashboard {client.dashboard_link}")
    with client, joblib.parallel_config(backend="dask"):
        yield -1  # every worker of the cluster


def stream(fn: Callable | str, tasks: Iterable[tuple], compute: ComputeParams, desc: str, unit: str,
           total: int | None = None) -> Iterator:
    """`fn(*task)` for every task, in task order, computed as `compute` says and yielded as they
    come. Tasks are drawn lazily (a generator works), so the caller holds a few tasks and results
    at a time; `fn` and its arguments must pickle (module-level functions, plain data).

    `fn` may be a "module:function" name, imported by whoever runs the task: the training stages
    name their runs so, and their own process never loads torch (1.5 s of start-up here), which
    only the runs use; such tasks are taken to train with torch."""
    if isinstance(fn, str) or "torch" in sys.modules:  # the tasks train with torch_threads each (`_limited`)
        warn_if_oversubscribed(compute)
    with backend(compute) as n_jobs, tqdm(total=total if total is not None else len(tasks),
                                          desc=desc, unit=unit) as bar:
        results = joblib.Parallel(n_jobs=n_jobs, return_as="generator")(
            joblib.delayed(_limited)(fn, task, compute.torch_threads, compute.portable_numerics)
            for task in tasks)
        for result in results:
            bar.update()
            yield result


def stream_files(trials, view: str, fn: Callable, extra, compute: ComputeParams, desc: str,
                 unit: str = "file") -> Iterator[tuple[str, "np.ndarray", object]]:
    """`fn(path, onsets, durations, extra)` once per file of the trial table's `<view>_path`
    column, with its trials' `<view>_onset` and `<view>_duration` arrays in table order, run as
    `compute` says (`stream`). Yields (path, those trials' row positions, fn's result) per file:
    what the feature stages write into their (n_trials, ...) array."""
    groups = list(trials.groupby(f"{view}_path", sort=False).indices.items())
    onsets, durations = trials[f"{view}_onset"].to_numpy(), trials[f"{view}_duration"].to_numpy()
    tasks = [(path, onsets[rows], durations[rows], extra) for path, rows in groups]
    for (path, rows), result in zip(groups, stream(fn, tasks, compute, desc, unit)):
        yield path, rows, result
