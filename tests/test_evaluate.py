"""pipeline/evaluate.py: metrics checked against hand-computed values; aggregation over runs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.dataset import Trials
from pipeline.evaluate import (COLLAPSE_SHARE, METRICS, aggregate, below_best_message, classification_metrics,
                               model_metrics, prediction_entropy, robustness_summary, score_model, selection_metrics)


def test_binary_by_hand():
    y = np.array([0, 0, 1, 1])
    # class-1 probability ranks the samples perfectly, but sample 1 is predicted 1 (0.6 > 0.5)
    p1 = np.array([0.1, 0.6, 0.7, 0.9])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]))
    assert m["acc"] == pytest.approx(0.75)
    # class 0: P = 1, R = 1/2 -> F1 = 2/3; class 1: P = 2/3, R = 1 -> F1 = 4/5
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # p_o = 3/4; p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> kappa = (3/4 - 1/2) / (1 - 1/2)
    assert m["kappa"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(1.0)  # AUC ranks probabilities, not argmax


def test_binary_auc_by_hand():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.2, 0.8, 0.6, 0.9])  # pairs (neg, pos): 0.2<0.6, 0.2<0.9, 0.8>0.6, 0.8<0.9
    m = classification_metrics(y, np.column_stack([1 - p1, p1]))
    assert m["auc"] == pytest.approx(3 / 4)


def test_three_classes_by_hand():
    y = np.array([0, 1, 2, 2])
    pred = np.array([0, 2, 2, 2])
    proba = np.full((4, 3), 0.1)
    proba[np.arange(4), pred] = 0.8
    m = classification_metrics(y, proba)
    assert m["acc"] == pytest.approx(0.75)
    # F1: class 0 -> 1; class 1 -> 0 (never predicted); class 2: P = 2/3, R = 1 -> 4/5
    assert m["f1_macro"] == pytest.approx((1 + 0 + 4 / 5) / 3)
    # p_o = 3/4; true (1,1,2)/4, predicted (1,0,3)/4: p_e = (1 + 0 + 6)/16 -> kappa = 5/9
    assert m["kappa"] == pytest.approx((0.75 - 7 / 16) / (1 - 7 / 16))


def test_perfect_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, proba)
    assert m == pytest.approx({"acc": 1.0, "f1_macro": 1.0, "kappa": 1.0, "auc": 1.0})


def test_auc_over_present_classes_only():
    # 4 classes in the model, only classes 1 and 3 in this test set
    y = np.array([1, 1, 3, 3])
    proba = np.array([[0.1, 0.6, 0.1, 0.2],
                      [0.1, 0.5, 0.2, 0.2],
                      [0.3, 0.1, 0.2, 0.4],
                      [0.1, 0.2, 0.1, 0.6]])
    assert classification_metrics(y, proba)["auc"] == pytest.approx(1.0)


def test_single_class_auc_is_nan():
    m = classification_metrics(np.array([2, 2, 2]), np.tile([0.2, 0.3, 0.5], (3, 1)))
    assert math.isnan(m["auc"])
    assert m["acc"] == 1.0


def test_aggregate_mean_and_population_std():
    runs = [{"acc": 0.5, "f1_macro": 0.4, "kappa": 0.0, "auc": 0.6},
            {"acc": 0.7, "f1_macro": 0.6, "kappa": 0.2, "auc": 0.8},
            {"acc": 0.9, "f1_macro": 0.8, "kappa": 0.4, "auc": float("nan")}]
    out = aggregate(runs)
    assert set(out) == set(METRICS) | {f"{m}_std" for m in METRICS}
    assert out["acc"] == pytest.approx(0.7)
    assert out["acc_std"] == pytest.approx(math.sqrt((0.2 ** 2 + 0 + 0.2 ** 2) / 3))  # ddof 0
    assert out["kappa"] == pytest.approx(0.2)
    assert out["auc"] == pytest.approx(0.7)  # NaN runs are left out
    assert out["auc_std"] == pytest.approx(0.1)


def test_aggregate_one_run_has_zero_std():
    out = aggregate([{"acc": 0.3, "f1_macro": 0.2, "kappa": 0.1, "auc": 0.5}])
    assert out["acc"] == 0.3 and out["acc_std"] == 0.0


def _trials() -> Trials:
    """Two subjects of 4 trials (classes 0, 1, 2, 0) in the test part, one in val, one in train."""
    labels = np.array([0, 1, 2, 0] * 4)
    subjects = np.repeat(["a", "b", "c", "d"], 4)
    return Trials(labels=labels, subjects=subjects, classes=["x", "y", "z"],
                  folds=[{"train": ["d"], "val": ["c"], "test": ["a", "b"]}])


def _onehot(pred, n=3):
    return np.eye(n)[pred]


def test_prediction_entropy_by_hand():
    assert prediction_entropy(np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    assert prediction_entropy(np.array([1, 1, 1, 1]), 3) == pytest.approx(0.0)
    # two classes half and half out of three: ln 2 / ln 3
    assert prediction_entropy(np.array([0, 1, 0, 1]), 3) == pytest.approx(math.log(2) / math.log(3))


def test_score_model_recall_confusion_and_subjects_by_hand():
    trials = _trials()
    # predictions for all 16 trials; on test (subjects a, b) labels are 0 1 2 0 | 0 1 2 0
    pred = np.array([0, 1, 1, 0, 0, 2, 2, 1] + [0] * 8)
    scored = score_model("m", _onehot(pred)[None, None], trials, seeds=(7,))
    (row,) = scored["test"]
    assert row["seed"] == 7 and row["acc"] == pytest.approx(5 / 8)
    # recall: class x 3/4 (one 0 predicted as 1), y 1/2, z 1/2
    assert (row["recall_x"], row["recall_y"], row["recall_z"]) == pytest.approx((0.75, 0.5, 0.5))
    assert scored["confusion"].tolist() == [[3, 1, 0], [0, 1, 1], [0, 1, 1]]
    assert {(r["subject"], r["acc"]) for r in scored["subjects"]} == {("a", 0.75), ("b", 0.5)}
    assert len(scored["pairs"]) == 8 and scored["pairs"][2] == ("z", "y")
    assert not row["collapsed"]


def test_collapsed_model_is_flagged():
    trials = _trials()
    scored = score_model("fusion", _onehot(np.zeros(16, dtype=int))[None, None], trials, seeds=(0,))
    (row,) = scored["test"]
    assert row["collapsed"] and row["top_class"] == "x" and row["top_share"] == 1.0
    assert row["pred_entropy"] == pytest.approx(0.0)
    # 7 of 8 the same class is still >= COLLAPSE_SHARE; 6 of 8 is not
    assert 7 / 8 >= COLLAPSE_SHARE > 6 / 8
    almost = np.array([0, 0, 0, 0, 0, 0, 0, 1] + [0] * 8)
    assert score_model("m", _onehot(almost)[None, None], trials, (0,))["test"][0]["collapsed"]
    healthy = np.array([0, 0, 0, 0, 0, 0, 1, 1] + [0] * 8)
    assert not score_model("m", _onehot(healthy)[None, None], trials, (0,))["test"][0]["collapsed"]


def test_gain_is_measured_against_the_branch_best_on_validation_not_test():
    """Branch a is perfect on val and poor on test, b the other way round: the fusion's gain
    must be taken against a (chosen on validation), although b is better on test."""
    trials = _trials()  # test: subjects a, b (trials 0-7); val: subject c (8-11)
    y = trials.labels
    wrong = (y + 1) % 3
    a = np.where(np.arange(16) < 8, wrong, y)                       # val right, test wrong
    b = np.where((np.arange(16) >= 8) & (np.arange(16) < 12), wrong, y)  # val wrong, test right
    fusion = np.where(np.arange(16) < 4, y, wrong)                  # half the test trials right
    scored = {name: score_model(name, _onehot(pred)[None, None], trials, (0,))
              for name, pred in (("a", a), ("b", b), ("fusion", fusion))}
    metrics = model_metrics(scored, "concat", ("a", "b"), trials.classes)
    assert metrics["fusion"]["best_branch_on_val"] == "a"
    assert metrics["fusion"]["gain_over_best_branch"] == pytest.approx(0.5 - 0.0)
    assert list(metrics["branches"]) == ["a", "b"] and metrics["fusion"]["type"] == "concat"
    # only fused branches compete: leave a out and b is the reference
    assert model_metrics(scored, "concat", ("b",), trials.classes)["fusion"]["gain_over_best_branch"] == \
        pytest.approx(0.5 - 1.0)


def test_below_best_branch_flag_and_warning():
    trials = _trials()
    y = trials.labels
    wrong = (y + 1) % 3
    scored = {"a": score_model("a", _onehot(y)[None, None], trials, (0,)),
              "fusion": score_model("fusion", _onehot(np.where(np.arange(16) < 2, y, wrong))[None, None], trials, (0,))}
    fusion = model_metrics(scored, "gated", ("a",), trials.classes)["fusion"]
    assert fusion["below_best_branch"] and fusion["gain_over_best_branch"] == pytest.approx(0.25 - 1.0)
    message = below_best_message(fusion)
    assert "gated" in message and "a (best on validation) 1.000" in message and "-0.750" in message
    scored["fusion"] = scored["a"]
    assert below_best_message(model_metrics(scored, "gated", ("a",), trials.classes)["fusion"]) is None


def test_selection_metrics_count_choices_and_flag_chance_views():
    decisions = [{"selected": "fusion", "informative_p": {"eeg": 0.5, "mel": 0.001}},
                 {"selected": "mel", "informative_p": {"eeg": 0.01, "mel": 0.001}},
                 {"selected": "mel", "informative_p": {"eeg": 0.3, "mel": 0.2}}]
    selected, informative = selection_metrics(decisions, ("eeg", "mel"))
    assert selected == {"fusion": 1, "mel": 2}
    assert informative == {"eeg": {"informative": False, "informative_folds": 1},
                           "mel": {"informative": True, "informative_folds": 2}}


def test_robustness_summary_averages_runs_and_views_they_had():
    runs = {"r0": {"robustness": {"clean": 0.8, "missing": {"eeg": 0.7, "mel": 0.2},
                                  "noise": {"eeg": {"1": 0.6}, "mel": {"1": 0.3}}}},
            "r1": {"robustness": {"clean": 0.6, "missing": {"mel": 0.4}, "noise": {"mel": {"1": 0.5}}}}}
    out = robustness_summary(runs)
    assert out["clean"] == pytest.approx(0.7)
    assert out["missing"] == pytest.approx({"eeg": 0.7, "mel": 0.3})
    assert out["noise"]["mel"]["1"] == pytest.approx(0.4)
    assert robustness_summary({}) == {}
