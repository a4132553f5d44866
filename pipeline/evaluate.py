"""Evaluation: scikit-learn metrics of every branch and the fusion on each fold's test
subjects, aggregated over folds and seeds, with collapse detection, per-fold and per-subject
tables, fusion diagnostics, figures and a Markdown summary for review."""
from __future__ import annotations

import numpy as np
import yaml
from scipy.stats import entropy
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             recall_score, roc_auc_score)

from pipeline.dataset import Trials
from pipeline.params import Params
from pipeline.selection import INFORMATIVE_ALPHA
from pipeline.split import fold_indices

METRICS = ("acc", "f1_macro", "kappa", "auc")
# A model is flagged as collapsed when one class takes at least this share of its test predictions.
COLLAPSE_SHARE = 0.8


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


def prediction_entropy(y_pred: np.ndarray, n_classes: int) -> float:
    """Entropy of the predicted-class histogram divided by log(n_classes): 1 when every class is
    predicted equally often, 0 when only one class is ever predicted."""
    counts = np.bincount(y_pred, minlength=n_classes)
    return float(entropy(counts) / np.log(n_classes))


def collapse_share(y_pred: np.ndarray, n_classes: int) -> tuple[int, float]:
    """The most predicted class and its share of the predictions."""
    counts = np.bincount(y_pred, minlength=n_classes)
    return int(counts.argmax()), float(counts.max() / max(counts.sum(), 1))


def score_model(name: str, probs: np.ndarray, trials: Trials, seeds) -> dict:
    """Everything evaluate reports about one model. probs: (n_folds, n_seeds, n_trials, n_classes).

    Returns test and val runs (one row per fold and seed), per-subject test rows, the summed
    test confusion matrix and the (actual, predicted) test pairs.
    """
    n_classes = probs.shape[-1]
    out = {"test": [], "val": [], "subjects": [], "pairs": [],
           "confusion": np.zeros((n_classes, n_classes), dtype=np.int64)}
    for fold, by_seed in enumerate(probs):
        parts = fold_indices(trials.subjects, trials.folds[fold])
        for seed, p in zip(seeds, by_seed):
            for part in ("test", "val"):
                idx = parts[part]
                y_true, y_pred = trials.labels[idx], p[idx].argmax(1)
                row = {"model": name, "fold": fold, "seed": seed, "part": part,
                       **classification_metrics(y_true, p[idx])}
                if part == "test":
                    top, share = collapse_share(y_pred, n_classes)
                    row |= {"pred_entropy": prediction_entropy(y_pred, n_classes),
                            "collapsed": share >= COLLAPSE_SHARE, "top_class": trials.classes[top],
                            "top_share": share}
                    recall = recall_score(y_true, y_pred, labels=np.arange(n_classes), average=None, zero_division=0)
                    row |= {f"recall_{c}": float(r) for c, r in zip(trials.classes, recall)}
                    out["confusion"] += confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
                    out["pairs"] += [(trials.classes[a], trials.classes[b]) for a, b in zip(y_true, y_pred)]
                    for subject in np.unique(trials.subjects[idx]):
                        mine = trials.subjects[idx] == subject
                        out["subjects"].append({"model": name, "fold": fold, "seed": seed, "subject": subject,
                                                "n_trials": int(mine.sum()),
                                                "acc": float((y_pred[mine] == y_true[mine]).mean())})
                out[part].append(row)
    return out


def summarize_test(scored: dict, classes: list[str]) -> dict:
    runs = scored["test"]
    summary = aggregate(runs)
    summary["pred_entropy"] = float(np.mean([r["pred_entropy"] for r in runs]))
    summary["collapsed"] = bool(any(r["collapsed"] for r in runs))
    summary["recall"] = {c: float(np.mean([r[f"recall_{c}"] for r in runs])) for c in classes}
    return summary


def _fmt(test: dict, key: str) -> str:
    return f"{test[key]:.3f} ± {test[key + '_std']:.3f}"


def summary_markdown(metrics: dict, params: Params, diagnostics: dict) -> str:
    """reports/summary.md: the table a reviewer reads, with the params that produced it."""
    fusion = metrics["fusion"]
    warning = below_best_message(fusion)
    lines = [f"# Results: fusion `{fusion['type']}` of {', '.join(params.fusion.modalities)}", "",
             *([f"> **Warning:** {warning}.", ""] if warning else []),
             f"Protocol: `{params.split.scheme}`, {metrics['n_folds']} fold(s) x {metrics['n_seeds']} seed(s), "
             "subject-disjoint; test metrics as mean ± std over folds and seeds.", "",
             "| model | acc | macro F1 | kappa | AUC | pred. entropy | collapsed |",
             "|---|---|---|---|---|---|---|"]
    rows = [(m, b["test"]) for m, b in metrics["branches"].items()] + [(f"**fusion ({fusion['type']})**", fusion["test"])]
    for name, test in rows:
        lines.append(f"| {name} | {_fmt(test, 'acc')} | {_fmt(test, 'f1_macro')} | {_fmt(test, 'kappa')} | "
                     f"{_fmt(test, 'auc')} | {test['pred_entropy']:.2f} | {'**yes**' if test['collapsed'] else 'no'} |")
    lines += ["", f"Gain over the best branch on validation (`{fusion['best_branch_on_val']}`): "
                  f"**{fusion['gain_over_best_branch']:+.3f}** test accuracy.", ""]
    selected = fusion.get("selected", {})
    if params.fusion.select == "safe":
        lines += [f"Selection (`fusion.select: safe`, margin {params.fusion.select_margin}): per fold, on validation, "
                  "the fused model or, where it did not beat the best branch, the best branch or the "
                  "validation-weighted ensemble; folds reporting each: "
                  + ", ".join(f"{k} {v}" for k, v in selected.items())
                  + f". The trained fused model alone: {fusion['trained']['test']['acc']:.3f} test accuracy.", ""]
    uninformative = [m for m, b in metrics["branches"].items() if not b.get("informative", True)]
    if uninformative:
        lines += [f"Views at chance on validation (binomial test, p >= {INFORMATIVE_ALPHA} in most folds): "
                  f"{', '.join(uninformative)}"
                  + (" (left out of the fusion where so: `fusion.drop_uninformative`)." if params.fusion.drop_uninformative
                     else "; `fusion.drop_uninformative: true` leaves them out of the fusion."), ""]
    robust = fusion.get("robust", {})
    if robust:
        lines += ["Robustness of the fused model (test accuracy, mean over runs; `reports/robustness.json`): clean "
                  f"{robust['clean']:.3f}; with a modality missing: "
                  + ", ".join(f"{m} {a:.3f}" for m, a in robust["missing"].items()) + ".", ""]
    drops = diagnostics.get("ablation_drop", {})
    if drops:
        lines += ["Modality contribution (test accuracy drop when the modality's input is replaced by its train "
                  "mean): " + ", ".join(f"{m} {np.mean(v):+.3f}" for m, v in drops.items()) + "."]
    weights = diagnostics.get("fusion_weights", {})
    if weights:
        lines += ["", "Learned fusion weights (mean over test trials): "
                  + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in weights.items()) + "."]
    lines += ["", "Figures: `reports/figures/`. Per-fold and per-subject rows: `reports/per_fold.csv`, "
                  "`reports/per_subject.csv`.", "", "<details><summary>params</summary>", "", "```yaml",
              yaml.safe_dump({k: getattr(params, k).model_dump(mode="json") for k in ("split", "train", "fusion")},
                             sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def mean_val_acc(scored: dict) -> float:
    """Validation accuracy of a scored model, mean over folds and seeds."""
    return float(np.mean([r["acc"] for r in scored["val"]]))


def model_metrics(scored: dict[str, dict], fusion_type: str, fused: tuple[str, ...], classes: list[str]) -> dict:
    """The `fusion` and `branches` parts of metrics.json from scored models (`score_model`,
    keyed by modality and 'fusion'). The fusion's gain is measured against the fused branch
    that is best on validation, never on test."""
    branches = {m: {"test": summarize_test(s, classes)} for m, s in scored.items() if m != "fusion"}
    best = max(fused, key=lambda m: mean_val_acc(scored[m]))
    fusion_test = summarize_test(scored["fusion"], classes)
    gain = fusion_test["acc"] - branches[best]["test"]["acc"]
    return {"fusion": {"type": fusion_type, "test": fusion_test, "gain_over_best_branch": gain,
                       "best_branch_on_val": best, "below_best_branch": bool(gain < 0)},
            "branches": branches}


def below_best_message(fusion: dict) -> str | None:
    """The warning when the fused model loses to the branch chosen on validation, else None."""
    if not fusion["below_best_branch"]:
        return None
    best = fusion["best_branch_on_val"]
    return (f"fusion ({fusion['type']}) is below its best branch: test accuracy {fusion['test']['acc']:.3f} against "
            f"{best} (best on validation) {fusion['test']['acc'] - fusion['gain_over_best_branch']:.3f}, "
            f"gap {fusion['gain_over_best_branch']:+.3f}; consider fusion.select: safe")


def selection_metrics(decisions: list[dict], fused: tuple[str, ...]) -> tuple[dict, dict]:
    """From the fuse stage's per-fold decisions: how often each source was reported for the
    fusion (`fusion.selected`), and per branch whether it beat chance on validation
    (`informative`: in at least half of the folds, p < INFORMATIVE_ALPHA; `informative_folds`)."""
    selected = {k: sum(d["selected"] == k for d in decisions) for k in ("fusion", *fused, "ensemble")}
    informative = {}
    for m in fused:
        k = sum(d["informative_p"][m] < INFORMATIVE_ALPHA for d in decisions)
        informative[m] = {"informative": bool(2 * k >= len(decisions)), "informative_folds": k}
    return {k: v for k, v in selected.items() if v}, informative


def robustness_summary(runs: dict[str, dict]) -> dict:
    """Mean over the fusion runs of the test accuracy clean, with each modality missing, and with
    noise of each std on each modality (a modality left out of a fold's fusion is averaged over
    the runs that had it)."""
    robust = [r["robustness"] for r in runs.values() if "robustness" in r]
    if not robust:
        return {}
    modalities = dict.fromkeys(m for r in robust for m in r["missing"])
    stds = dict.fromkeys(s for r in robust for by_std in r["noise"].values() for s in by_std)
    return {"clean": float(np.mean([r["clean"] for r in robust])),
            "missing": {m: float(np.mean([r["missing"][m] for r in robust if m in r["missing"]])) for m in modalities},
            "noise": {m: {s: float(np.mean([r["noise"][m][s] for r in robust if m in r["noise"]])) for s in stds}
                      for m in modalities}}
