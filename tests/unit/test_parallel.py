"""pipeline/parallel.py: a warning when torch tasks would oversubscribe this machine's cores."""
from __future__ import annotations

import pytest

from pipeline import parallel
from pipeline.parallel import stream, warn_if_oversubscribed
from pipeline.params import ComputeParams


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize(("n_jobs", "threads", "warned"), [(1, 1, False), (2, 1, False), (1, 2, False),
                                                           (2, 2, True), (3, 2, True)])
def test_oversubscription_warns_when_workers_times_threads_exceed_the_cores(n_jobs, threads, warned, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    warn_if_oversubscribed(ComputeParams(n_jobs=n_jobs, torch_threads=threads))
    err = capsys.readouterr().err
    assert ("oversubscribe" in err) is warned, err
    if warned:
        assert f"{n_jobs * threads} threads on 2 cores" in err and err.count("\n") == 1


def test_a_remote_scheduler_is_not_checked(capsys):
    warn_if_oversubscribed(ComputeParams(n_jobs=64, torch_threads=8, backend="dask",
                                         scheduler="tcp://10.0.0.5:8786"))
    assert capsys.readouterr().err == ""


def test_stream_warns_once_when_its_torch_tasks_oversubscribe(capsys, monkeypatch):
    """The test process has torch loaded, so `stream`'s tasks run with torch_threads each."""
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    compute = ComputeParams(n_jobs=1, torch_threads=3)
    results = list(stream(_square, [(k,) for k in range(3)], compute, "squares", "task"))
    assert results == [0, 1, 4]
    assert capsys.readouterr().err.count("oversubscribe") == 1
