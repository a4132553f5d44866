"""pipeline/audit.py: permutations within subjects, chance by hand, the verdict, and the
summary's words (pipeline/report.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.audit import audit_verdict, chance_accuracy, fold_rng, permuted_within_subjects
from pipeline.report import audit_line, audit_message

SUBJECTS = np.repeat(["s1", "s2", "s3"], 6)
LABELS = np.tile([0, 0, 1, 1, 2, 2], 3)


def test_permutation_stays_within_each_subject_and_moves_labels():
    order = permuted_within_subjects(SUBJECTS, np.random.default_rng(0))
    assert (SUBJECTS[order] == SUBJECTS).all()  # every row takes a label of its own subject
    for s in ("s1", "s2", "s3"):
        assert sorted(LABELS[order][SUBJECTS == s]) == sorted(LABELS[SUBJECTS == s])  # shares kept
    assert (LABELS[order] != LABELS).sum() >= 6  # and the labels moved
    assert (order == permuted_within_subjects(SUBJECTS, np.random.default_rng(0))).all()  # seeded
    assert (order != permuted_within_subjects(SUBJECTS, np.random.default_rng(1))).any()


def test_permutation_leaves_rows_outside_where_alone():
    train = SUBJECTS != "s3"
    order = permuted_within_subjects(SUBJECTS, fold_rng(0, 1), where=train)
    assert (order[~train] == np.flatnonzero(~train)).all()
    assert (order[train] != np.flatnonzero(train)).any()
    assert set(order[train]) == set(np.flatnonzero(train))


def test_chance_by_hand():
    # train shares (class 0, 1) = (3/4, 1/4). Subject a tests [0, 1]: guessing in the shares
    # 3/4 x 1/2 + 1/4 x 1/2 = 1/2, always class 0: 1/2. Subject b tests [0, 0, 0, 1]: in the
    # shares 3/4 x 3/4 + 1/4 x 1/4 = 5/8, always class 0: 3/4, the better. Mean (1/2 + 3/4) / 2.
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0, 1])
    subjects = np.array(["t", "t", "t", "t", "a", "a", "b", "b", "b", "b"])
    folds = [{"train": np.arange(4), "val": np.array([], int), "test": np.arange(4, 10)}]
    assert chance_accuracy(labels, subjects, folds, 2) == pytest.approx(5 / 8)
    balanced = [{"train": np.flatnonzero(SUBJECTS != "s3"), "val": np.array([], int),
                 "test": np.flatnonzero(SUBJECTS == "s3")}]
    assert chance_accuracy(LABELS, SUBJECTS, balanced, 3) == pytest.approx(1 / 3)


def _audit(ci, chance=0.2):
    permuted = {"band_power": {"acc": 0.3, "acc_ci": ci, "acc_std": 0.05}}
    passed, above = audit_verdict(permuted, chance)
    return {"permute_labels": False, "chance": chance, "passed": passed, "above_chance": above,
            "permuted": {n: {"test": t} for n, t in permuted.items()}}


def test_verdict_fails_only_when_an_interval_lies_wholly_above_chance():
    assert _audit([0.21, 0.39])["above_chance"] == ["band_power"]
    assert _audit([0.20, 0.39])["passed"]  # touching chance is not above it
    assert _audit([0.15, 0.25])["passed"]
    assert _audit(None)["passed"]  # no interval (too few subjects): nothing to judge


def test_summary_words():
    failed = _audit([0.21, 0.39])
    assert "band_power 0.300 [0.21, 0.39]" in audit_message(failed) and "0.200" in audit_message(failed)
    assert audit_line(failed).endswith("**failed**.")
    assert audit_message(_audit([0.15, 0.25])) is None and audit_line(_audit([0.15, 0.25])).endswith(": passed.")
    assert audit_line(_audit(None)).endswith("not judged (no intervals below 4 test subjects).")
