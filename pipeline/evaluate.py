"""Test metrics from scikit-learn, aggregated over folds and seeds."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from pipeline import io
from pipeline.dataset import load_trials
from pipeline.params import MODALITIES, Params
from pipeline.split import fold_indices

METRICS = ("acc", "f1_macro", "kappa", "auc")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """acc, macro F1, Cohen's kappa and one-vs-rest macro AUC of probabilities (n, n_classes).

    AUC is computed over the classes present in `y_true` (renormalised), NaN if fewer than two.
    """
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    labels = np.arange(n_classes)
    present = np.unique(y_true)
    if len(present) >= 2:
        sub = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
        auc = float(roc_auc_score(y_true, sub if len(present) > 2 else sub[:, 1],
                                  multi_class="ovr", labels=present if len(present) > 2 else None))
    else:
        auc = float("nan")
    return {"acc": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
            "auc": auc}


def aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over runs, plus `<metric>_std` (population std)."""
    out = {}
    for key in METRICS:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[key] = float(np.nanmean(values))
        out[f"{key}_std"] = float(np.nanstd(values))
    return out


def _scores(probs: np.ndarray, trials, part: str) -> list[dict[str, float]]:
    """Metrics of every (fold, seed) run on one part of its fold."""
    runs = []
    for fold, by_seed in enumerate(probs):
        idx = fold_indices(trials.subjects, trials.folds[fold])[part]
        runs += [classification_metrics(trials.labels[idx], p[idx]) for p in by_seed]
    return runs


def run_evaluate(params: Params) -> None:
    trials = load_trials()
    branches, val_acc = {}, {}
    for m in MODALITIES:
        probs = np.load(io.branch_dir(m) / "probabilities.npy")
        branches[m] = {"test": aggregate(_scores(probs, trials, "test"))}
        val_acc[m] = aggregate(_scores(probs, trials, "val"))["acc"]
    fusion_probs = np.load(io.FUSION_DIR / "probabilities.npy")
    fusion_test = aggregate(_scores(fusion_probs, trials, "test"))
    best = max(params.fusion.modalities, key=val_acc.get)  # chosen on validation, never on test
    metrics = {
        "fusion": {"type": params.fusion.type, "test": fusion_test,
                   "gain_over_best_branch": fusion_test["acc"] - branches[best]["test"]["acc"],
                   "best_branch_on_val": best},
        "branches": branches,
        "n_seeds": len(params.train.seeds),
        "n_folds": len(trials.folds),
    }
    io.write_json(io.REPORTS / "metrics.json", metrics)
    print(f"evaluate: fusion {params.fusion.type} test acc {fusion_test['acc']:.3f} "
          f"+- {fusion_test['acc_std']:.3f}; " + ", ".join(
              f"{m} {b['test']['acc']:.3f}" for m, b in branches.items())
          + f"; gain over {best} (best on val) {metrics['fusion']['gain_over_best_branch']:+.3f}")
