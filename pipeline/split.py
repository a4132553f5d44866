"""Subject-disjoint splits: holdout, k-fold and leave-one-subject-out, via scikit-learn.

Every scheme yields folds of {train, val, test} subject lists; holdout is one fold. No
subject is ever in two parts of one fold.
"""
from __future__ import annotations

import itertools

import numpy as np

from pipeline.errors import PipelineError
from pipeline.params import SplitParams


def _take_val(rest: np.ndarray, n_val: int, rng: np.random.Generator) -> tuple[list, list]:
    val = set(rng.choice(rest, size=n_val, replace=False).tolist())
    return sorted(s for s in rest if s not in val), sorted(val)


def make_folds(subjects: list[str], p: SplitParams) -> list[dict[str, list[str]]]:
    """Folds of subject lists for `p.scheme`, deterministic for `p.seed`."""
    # imported here: the training stages and their workers read folds (fold_indices) without
    # paying 1.5 s for scikit-learn
    from sklearn.model_selection import GroupShuffleSplit, LeaveOneGroupOut, PredefinedSplit

    subjects = np.array(sorted(set(subjects)))
    n = len(subjects)
    need = {"holdout": p.val_subjects + p.test_subjects + 1,
            # every fold must keep >= 1 train subject after its test part and val subjects
            "kfold": next(k for k in range(p.folds, 10 ** 6) if k - -(-k // p.folds) >= p.val_subjects + 1),
            "loso": p.val_subjects + 2}[p.scheme]
    if n < need:
        raise PipelineError(f"split: {n} subjects, but split.scheme={p.scheme} with "
                            f"val_subjects={p.val_subjects} needs at least {need}")
    rng = np.random.default_rng(p.seed)
    if p.scheme == "holdout":
        splitter = GroupShuffleSplit(n_splits=1, test_size=p.test_subjects, random_state=p.seed)
    elif p.scheme == "kfold":
        # Test folds from a seeded permutation (GroupKFold would sort the subjects, ignoring the seed).
        fold_of = np.empty(n, dtype=int)
        for k, part in enumerate(np.array_split(rng.permutation(n), p.folds)):
            fold_of[part] = k
        splitter = PredefinedSplit(fold_of)
    else:
        splitter = LeaveOneGroupOut()
    folds = []
    for rest_idx, test_idx in splitter.split(subjects, groups=subjects):  # one row per subject
        train, val = _take_val(subjects[rest_idx], p.val_subjects, rng)
        folds.append({"train": train, "val": val, "test": sorted(subjects[test_idx].tolist())})
    return folds


def final_split(subjects, p: SplitParams) -> dict[str, list[str]]:
    """Every subject, for the final model: `p.val_subjects` of them for early stopping (drawn as
    the splits draw validation subjects, seeded by `p.seed`), the others to train; no test part."""
    subjects = np.array(sorted(set(subjects)))
    if len(subjects) < p.val_subjects + 1:
        raise PipelineError(f"final: {len(subjects)} subjects, but split.val_subjects={p.val_subjects} needs at "
                            f"least {p.val_subjects + 1}")
    train, val = _take_val(subjects, p.val_subjects, np.random.default_rng(p.seed))
    return {"train": train, "val": val, "test": []}


def fold_indices(trial_subjects, fold: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Trial indices of each part of a fold."""
    trial_subjects = np.asarray(trial_subjects)
    return {part: np.flatnonzero(np.isin(trial_subjects, fold[part])) for part in ("train", "val", "test")}


def runs(n_folds: int, seeds) -> list[tuple[int, int, int]]:
    """(fold, seed index, seed) of every training run."""
    return [(f, i, s) for f, (i, s) in itertools.product(range(n_folds), enumerate(seeds))]
