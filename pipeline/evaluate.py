"""Test metrics from scikit-learn, aggregated over folds and seeds."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

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
