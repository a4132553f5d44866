"""pipeline/evaluate.py: metrics checked against hand-computed values; aggregation over subjects."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pipeline.dataset import Trials
from pipeline.evaluate import (COLLAPSE_SHARE, METRICS, baseline_flags, classification_metrics, model_metrics,
                               nondeterministic_kernels, prediction_entropy, prediction_table, robustness_summary,
                               score_model, selection_metrics, subject_scores, summarize_test)
from pipeline.report import below_baseline_message, below_best_message, gain_sentence, reproducibility_note


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
    # UA: recalls 1, 0, 1 -> 2/3 (accuracy, WA, weighs class 2's two trials double)
    assert m["balanced_acc"] == pytest.approx(2 / 3)
    # F1: class 0 -> 1; class 1 -> 0 (never predicted); class 2: P = 2/3, R = 1 -> 4/5
    assert m["f1_macro"] == pytest.approx((1 + 0 + 4 / 5) / 3)
    # p_o = 3/4; true (1,1,2)/4, predicted (1,0,3)/4: p_e = (1 + 0 + 6)/16 -> kappa = 5/9
    assert m["kappa"] == pytest.approx((0.75 - 7 / 16) / (1 - 7 / 16))


def test_perfect_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, proba)
    assert m == pytest.approx({"acc": 1.0, "balanced_acc": 1.0, "f1_macro": 1.0, "kappa": 1.0, "auc": 1.0})


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


def test_macro_f1_averages_over_the_classes_present():
    """Perfect predictions on a test part with 3 of 5 classes: F1 1, not 3/5."""
    y = np.array([0, 1, 4, 0, 1, 4])
    m = classification_metrics(y, np.eye(5)[y])
    assert m["f1_macro"] == pytest.approx(1.0) and m["acc"] == 1.0
    # predicting an absent class still costs the present class its recall
    pred = np.array([0, 1, 4, 0, 1, 2])
    # F1: class 0 -> 1, class 1 -> 1, class 4: P = 1, R = 1/2 -> 2/3
    assert classification_metrics(y, np.eye(5)[pred])["f1_macro"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_undefined_kappa_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(np.array([1, 1]), np.eye(3)[[1, 1]])
    assert math.isnan(m["kappa"])


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


def _two_seeds() -> np.ndarray:
    """(1 fold, 2 seeds, 16 trials, 3 classes). Test labels 0 1 2 0 | 0 1 2 0 (subjects a | b).
    Seed 0: a 3/4 right, b 2/4; seed 1: a 4/4, b 1/4."""
    rest = [0] * 8
    seed0 = np.array([0, 1, 1, 0, 0, 1, 0, 1] + rest)
    seed1 = np.array([0, 1, 2, 0, 0, 0, 0, 1] + rest)
    return np.stack([_onehot(seed0), _onehot(seed1)])[None]


def test_summary_is_over_subjects_with_interval_and_sample_std():
    trials = _trials()
    scored = score_model("m", _two_seeds(), trials, seeds=(0, 1))
    assert subject_scores(scored) == pytest.approx({"a": 0.875, "b": 0.375})
    summary = summarize_test(scored, trials.classes, seed=0)
    assert summary["acc"] == pytest.approx(0.625)
    assert summary["acc_std"] == pytest.approx(0.5 / math.sqrt(2))  # ddof 1 over the 2 subjects
    assert summary["acc_ci"] is None                                  # 2 subjects: no interval covers
    assert summary["acc_seed_std"] == pytest.approx(0.0)             # both seeds average 0.625
    assert set(METRICS) | {f"{k}_ci" for k in METRICS} | {f"{k}_std" for k in METRICS} <= set(summary)


def test_recall_leaves_out_classes_absent_from_the_test_part():
    trials = Trials(labels=np.array([0, 1, 0, 1, 2, 2, 2, 2]), subjects=np.repeat(["a", "b", "c", "d"], 2),
                    classes=["x", "y", "z"], folds=[{"train": ["d"], "val": ["c"], "test": ["a", "b"]}])
    scored = score_model("m", _onehot(trials.labels)[None, None], trials, seeds=(0,))
    summary = summarize_test(scored, trials.classes, seed=0)
    assert summary["recall"] == {"x": 1.0, "y": 1.0, "z": None}
    assert summary["f1_macro"] == pytest.approx(1.0)


def test_prediction_table_has_one_row_per_seed_and_test_trial():
    trials = _trials()
    table = prediction_table("m", _two_seeds(), trials, seeds=(0, 1))
    assert len(table) == 2 * 8 and set(table["trial"]) == set(range(8))
    assert list(table.columns) == ["model", "fold", "seed", "subject", "trial", "label", "predicted", "p_x", "p_y", "p_z"]
    row = table[(table["seed"] == 1) & (table["trial"] == 5)].iloc[0]
    assert (row["subject"], row["label"], row["predicted"], row["p_x"]) == ("b", "y", "x", 1.0)
    right = table["label"] == table["predicted"]
    assert right[table["seed"] == 0].mean() == pytest.approx(5 / 8)


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
    metrics = model_metrics(scored, "concat", ("a", "b"), trials.classes, 0)
    assert metrics["fusion"]["best_branch_on_val"] == "a"
    assert metrics["fusion"]["gain_over_best_branch"] == pytest.approx(0.5 - 0.0)
    assert list(metrics["branches"]) == ["a", "b"] and metrics["fusion"]["type"] == "concat"
    # only fused branches compete: leave a out and b is the reference
    assert model_metrics(scored, "concat", ("b",), trials.classes, 0)["fusion"]["gain_over_best_branch"] == \
        pytest.approx(0.5 - 1.0)


def test_below_best_branch_flag_and_warning():
    trials = _trials()
    y = trials.labels
    wrong = (y + 1) % 3
    scored = {"a": score_model("a", _onehot(y)[None, None], trials, (0,)),
              "fusion": score_model("fusion", _onehot(np.where(np.arange(16) < 2, y, wrong))[None, None], trials, (0,))}
    fusion = model_metrics(scored, "gated", ("a",), trials.classes, 0)["fusion"]
    assert fusion["below_best_branch"] and fusion["gain_over_best_branch"] == pytest.approx(0.25 - 1.0)
    message = below_best_message(fusion, "fusion")
    assert "gated" in message and "a (best on validation) 1.000" in message and "-0.750" in message
    assert message.endswith("consider fusion.select: safe")
    assert "consider" not in below_best_message(fusion, "safe")
    # 2 test subjects: no test over subjects can reach 0.05, and none over trials is made
    assert fusion["gain_test"] == "none" and fusion["gain_p"] is None
    assert fusion["gain_ci"] is None  # 2 subjects: no interval
    assert gain_sentence(fusion) == ("fusion trails a by -0.750 (no interval below 4 test subjects), "
                                     "p: n/a, too few test subjects (2; a test over subjects needs 6)")
    assert "p: n/a, too few test subjects" in message
    scored["fusion"] = scored["a"]
    assert below_best_message(model_metrics(scored, "gated", ("a",), trials.classes, 0)["fusion"], "fusion") is None


def test_selection_metrics_count_choices_and_flag_chance_views():
    decisions = [{"selected": "fusion", "informative_p": {"eeg": 0.5, "mel": 0.001}},
                 {"selected": "mel", "informative_p": {"eeg": 0.01, "mel": 0.001}},
                 {"selected": "mel", "informative_p": {"eeg": 0.3, "mel": 0.2}}]
    selected, informative = selection_metrics(decisions, ("eeg", "mel"))
    assert selected == {"fusion": 1, "mel": 2}
    assert informative == {"eeg": {"informative": False, "informative_folds": 1},
                           "mel": {"informative": True, "informative_folds": 2}}


def test_robustness_summary_compares_like_with_like():
    """Clean, missing and noisy figures all over the same runs: those that fused every view (a
    run of a fold that left eeg out would otherwise count in clean and mel but not in eeg)."""
    both = {"clean": 0.8, "missing": {"eeg": 0.7, "mel": 0.2}, "noise": {"eeg": {"1": 0.6}, "mel": {"1": 0.3}}}
    runs = {"r0": {"robustness": both},
            "r1": {"robustness": {**both, "clean": 0.6, "missing": {"eeg": 0.5, "mel": 0.4}}},
            "r2": {"robustness": {"clean": 0.1, "missing": {"mel": 0.1}, "noise": {"mel": {"1": 0.1}}}}}
    out = robustness_summary(runs, ("eeg", "mel"))
    assert out["runs"] == 2 and out["model"] == "the trained fused model"
    assert out["clean"] == pytest.approx(0.7)
    assert out["missing"] == pytest.approx({"eeg": 0.6, "mel": 0.3})
    assert out["noise"]["mel"]["1"] == pytest.approx(0.3)
    assert robustness_summary({"r2": runs["r2"]}, ("eeg", "mel")) == {}


def test_baseline_flags_take_the_views_best_baseline_on_validation():
    branches = {"eeg": {"test": {"acc": 0.45}}, "mel": {"test": {"acc": 0.60}}}
    baselines = {"eeg_band_power": {"view": "eeg", "val_acc": 0.50, "test": {"acc": 0.40}},
                 "eeg_tangent_space": {"view": "eeg", "val_acc": 0.55, "test": {"acc": 0.50}},
                 "early_fusion": {"view": None, "val_acc": 0.90, "test": {"acc": 0.90}}}
    flags = baseline_flags(branches, baselines)
    # tangent space is best on validation, so it is the reference although band power is lower on test
    assert flags == {"eeg": {"best_baseline": "eeg_tangent_space", "best_baseline_acc": 0.50, "below_baseline": True}}
    message = below_baseline_message("eeg", {**branches["eeg"], **flags["eeg"]})
    assert "branch eeg" in message and "0.450" in message and "eeg_tangent_space 0.500" in message
    branches["eeg"]["test"]["acc"] = 0.55
    assert not baseline_flags(branches, baselines)["eeg"]["below_baseline"]
    assert below_baseline_message("mel", branches["mel"]) is None


def test_the_fusion_answers_to_early_fusion_and_no_branch_does():
    """The fused network's rival is the baseline on every view's features side by side; a branch
    is never measured against it."""
    models = {"eeg": {"test": {"acc": 0.45}}, "fusion": {"type": "concat", "test": {"acc": 0.85}}}
    baselines = {"eeg_band_power": {"view": "eeg", "val_acc": 0.50, "test": {"acc": 0.40}},
                 "early_fusion": {"view": None, "val_acc": 0.90, "test": {"acc": 0.90}}}
    flags = baseline_flags(models, baselines)
    assert flags["fusion"] == {"best_baseline": "early_fusion", "best_baseline_acc": 0.90, "below_baseline": True}
    assert flags["eeg"]["best_baseline"] == "eeg_band_power"
    message = below_baseline_message("fusion", {**models["fusion"], **flags["fusion"]})
    assert message.startswith("fusion (concat) is below") and "early_fusion 0.900" in message
    models["fusion"]["test"]["acc"] = 0.95
    assert not baseline_flags(models, baselines)["fusion"]["below_baseline"]


def test_a_run_with_nondeterministic_kernels_says_it_is_not_bit_reproducible():
    histories = {"eeg": {"fold0_seed0": [{"val_acc": 0.5}, {"val_acc": 0.6, "nondeterministic": ["b_cuda"]}]},
                 "fusion": {"fold0_seed0": [{"val_acc": 0.5, "nondeterministic": ["a_cuda", "b_cuda"]}]}}
    kernels = nondeterministic_kernels(histories)
    assert kernels == ["a_cuda", "b_cuda"]
    note = reproducibility_note({"bit_reproducible": False, "nondeterministic_kernels": kernels})
    assert "not bit-reproducible" in note and "a_cuda, b_cuda" in note and "train.device: cpu" in note
    assert nondeterministic_kernels({"eeg": {"r": [{"val_acc": 0.5}]}}) == []
    assert reproducibility_note({"bit_reproducible": True}) is None


def test_balanced_accuracy_over_the_classes_present():
    """UA averages the recall of the classes the trials have: a prediction of a class they lack
    is a miss, not a class of recall 0 (scikit-learn's balanced_accuracy_score, no warning)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from pipeline.evaluate import balanced_accuracy

    y, pred = np.array([1, 1, 1, 3]), np.array([1, 1, 4, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 0) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))


def test_no_harm_counts_subjects_worse_by_more_than_one_trial():
    """10 trials a subject: s1 loses 2 trials to the branch (harmed), s2 exactly 1 (not more than
    one: not harmed), s3 gains; s4, unscored by the branch, is not counted."""
    from pipeline.evaluate import no_harm

    def scored(accs: dict) -> dict:
        return {"subjects": [{"model": "m", "fold": 0, "seed": 0, "subject": s, "n_trials": 10, "acc": a}
                             for s, a in accs.items()]}

    harm = no_harm(scored({"s1": 0.5, "s2": 0.6, "s3": 0.9, "s4": 0.1}), scored({"s1": 0.7, "s2": 0.7, "s3": 0.7}))
    assert harm["harmed"] == 1 and harm["n_subjects"] == 3 and harm["share"] == pytest.approx(1 / 3)
    assert harm["subjects"] == {"s1": pytest.approx(-0.2)}
    assert no_harm(scored({}), scored({}))["share"] is None
