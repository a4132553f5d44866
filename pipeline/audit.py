"""The null audit: models trained on labels that carry no information must land at chance.

Published EEG-emotion results that do not reproduce usually fail here: subjects mixed across
splits, or a per-subject normalisation that carries the labels. Permuting labels within each
subject keeps every subject's class shares (what a subject-level shortcut could learn) and
breaks the tie between a trial's recording and its label. Two checks use it:

- every run: the baselines stage fits each classical baseline on labels permuted within each
  training subject of a fold (validation and test labels as they are), and evaluate reports
  its test accuracy beside `chance`, the accuracy of guessing from the training class shares;
  the audit fails when a permuted-label interval lies wholly above chance;
- `audit.permute_labels: true` permutes every label column within subjects at ingest, and the
  whole pipeline, fused model included, should then land at chance.
"""
from __future__ import annotations

import numpy as np


def permuted_within_subjects(subjects: np.ndarray, rng: np.random.Generator,
                             where: np.ndarray | None = None) -> np.ndarray:
    """Row order (n,) that shuffles rows within each subject: `labels[order]` are the labels
    permuted within subjects. Rows outside `where` (a boolean mask, default all) keep their
    own. Subjects in sorted order, so the same seed gives the same order anywhere."""
    subjects = np.asarray(subjects)
    order = np.arange(len(subjects))
    chosen = np.ones(len(subjects), bool) if where is None else np.asarray(where, bool)
    for subject in sorted(set(subjects[chosen].tolist())):
        rows = np.flatnonzero((subjects == subject) & chosen)
        order[rows] = rows[rng.permutation(len(rows))]
    return order


def fold_rng(seed: int, fold: int) -> np.random.Generator:
    """The permutation stream of one fold: independent of how many folds or workers there are."""
    return np.random.default_rng([seed, fold])


def chance_accuracy(labels: np.ndarray, subjects: np.ndarray, folds: list[dict[str, np.ndarray]],
                    n_classes: int) -> float:
    """Mean over test subjects of the better accuracy of two guesses from the fold's training
    class shares alone: at random in those shares (sum over classes of train share x the
    subject's test share), and always the most common training class (its test share). A model
    trained on permuted labels still learns the shares (the intercept is not penalised), so with
    unbalanced classes it can score the second. A subject tested in several folds: its mean.
    1 / n_classes with balanced classes."""
    by_subject: dict[str, list[float]] = {}
    for index in folds:
        train = np.bincount(labels[index["train"]], minlength=n_classes) / len(index["train"])
        test = index["test"]
        for subject in sorted(set(subjects[test].tolist())):
            mine = labels[test][subjects[test] == subject]
            shares = np.bincount(mine, minlength=n_classes) / len(mine)
            by_subject.setdefault(subject, []).append(max(float(train @ shares), float(shares[train.argmax()])))
    return float(np.mean([np.mean(v) for v in by_subject.values()]))


def audit_verdict(permuted: dict[str, dict], chance: float) -> tuple[bool, list[str]]:
    """(passed, the baselines whose permuted-label test accuracy interval lies wholly above
    `chance`). `permuted`: baseline -> its test summary (acc, acc_ci); a baseline without an
    interval (too few test subjects) cannot fail it."""
    above = [name for name, test in permuted.items() if test["acc_ci"] is not None and test["acc_ci"][0] > chance]
    return not above, above
