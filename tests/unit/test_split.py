"""pipeline/split.py: subject-disjoint folds for holdout, kfold and loso."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.params import SplitParams
from pipeline.split import fold_indices, make_folds

SUBJECTS = [f"sub-{i:02d}" for i in range(1, 13)]
PARTS = ("train", "val", "test")


def _params(scheme: str, seed: int = 0, val: int = 2, test: int = 2, folds: int = 4) -> SplitParams:
    return SplitParams(scheme=scheme, seed=seed, val_subjects=val, test_subjects=test, folds=folds)


def _check_partition(fold: dict, subjects: list[str]) -> None:
    parts = [set(fold[p]) for p in PARTS]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not parts[a] & parts[b], f"{PARTS[a]} and {PARTS[b]} share {parts[a] & parts[b]}"
    assert sorted(fold["train"] + fold["val"] + fold["test"]) == sorted(subjects)
    for p in PARTS:
        assert fold[p], f"empty {p} part"


@pytest.mark.parametrize("scheme", ["holdout", "kfold", "loso"])
def test_every_subject_in_exactly_one_part(scheme):
    folds = make_folds(SUBJECTS, _params(scheme))
    for fold in folds:
        _check_partition(fold, SUBJECTS)


def test_trial_level_subjects_are_deduplicated():
    trials = [s for s in SUBJECTS for _ in range(5)]  # one entry per trial
    folds = make_folds(trials, _params("holdout"))
    _check_partition(folds[0], SUBJECTS)


def test_holdout_sizes():
    (fold,) = make_folds(SUBJECTS, _params("holdout", val=3, test=2))
    assert len(fold["test"]) == 2 and len(fold["val"]) == 3 and len(fold["train"]) == 7


def test_loso_one_fold_per_subject_each_test_once():
    folds = make_folds(SUBJECTS, _params("loso", val=2))
    assert len(folds) == len(SUBJECTS)
    tests = [fold["test"] for fold in folds]
    assert all(len(t) == 1 for t in tests)
    assert sorted(t[0] for t in tests) == sorted(SUBJECTS)
    assert all(len(fold["val"]) == 2 for fold in folds)


@pytest.mark.parametrize("k", [3, 4, 6])
def test_kfold_test_parts_partition_subjects(k):
    folds = make_folds(SUBJECTS, _params("kfold", folds=k, val=2))
    assert len(folds) == k
    tests = [s for fold in folds for s in fold["test"]]
    assert sorted(tests) == sorted(SUBJECTS)  # each subject is test exactly once
    sizes = [len(fold["test"]) for fold in folds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["holdout", "kfold", "loso"])
def test_deterministic_for_a_seed(scheme):
    assert make_folds(SUBJECTS, _params(scheme, seed=5)) == make_folds(list(reversed(SUBJECTS)),
                                                                       _params(scheme, seed=5))


def test_holdout_differs_for_another_seed():
    a = make_folds(SUBJECTS, _params("holdout", seed=0))
    b = make_folds(SUBJECTS, _params("holdout", seed=1))
    assert a != b
    # and the difference is not only the val draw: over a few seeds the test part moves too
    tests = {tuple(make_folds(SUBJECTS, _params("holdout", seed=s))[0]["test"]) for s in range(5)}
    assert len(tests) > 1


def test_kfold_test_parts_depend_on_seed():
    """split.seed must reshuffle which subjects are tested together in kfold."""
    tests = {tuple(tuple(f["test"]) for f in make_folds(SUBJECTS, _params("kfold", seed=s)))
             for s in range(5)}
    assert len(tests) > 1


@pytest.mark.parametrize("scheme,kwargs,need", [
    ("holdout", dict(val=2, test=2), 5),
    ("kfold", dict(val=2, folds=4), 4),  # 4 subjects: 1 test, 2 val, 1 train per fold
    ("loso", dict(val=2), 4),
])
def test_too_few_subjects(scheme, kwargs, need):
    with pytest.raises(PipelineError) as info:
        make_folds(SUBJECTS[:need - 1], _params(scheme, **kwargs))
    message = str(info.value)
    assert f"needs at least {need}" in message and f"{need - 1} subjects" in message
    assert scheme in message
    # exactly the announced minimum works
    folds = make_folds(SUBJECTS[:need], _params(scheme, **kwargs))
    for fold in folds:
        _check_partition(fold, SUBJECTS[:need])


@pytest.mark.parametrize("scheme,kwargs", [
    ("holdout", dict(val=1, test=1)),
    ("loso", dict(val=1)),
    ("kfold", dict(val=1, folds=3)),
    ("kfold", dict(val=1, folds=2)),
    ("kfold", dict(val=2, folds=2)),
])
def test_minimum_subject_count_gives_usable_folds(scheme, kwargs):
    """Whatever count make_folds accepts must give every fold a train, val and test subject:
    a fold with no train subject cannot be trained on."""
    p = _params(scheme, **kwargs)
    n = next(n for n in range(2, 20) if _accepts(n, p))
    for fold in make_folds(SUBJECTS[:n], p):
        _check_partition(fold, SUBJECTS[:n])


def _accepts(n: int, p: SplitParams) -> bool:
    try:
        make_folds(SUBJECTS[:n], p)
    except PipelineError:
        return False
    return True


def test_fold_indices():
    trial_subjects = np.array(["a", "b", "a", "c", "d", "c"])
    idx = fold_indices(trial_subjects, {"train": ["a", "d"], "val": ["b"], "test": ["c"]})
    assert idx["train"].tolist() == [0, 2, 4]
    assert idx["val"].tolist() == [1]
    assert idx["test"].tolist() == [3, 5]
