"""explain: why each fold's models decide as they do -> reports/explain.json, reports/explain.md
and reports/figures/explain/. Per task head of data.tasks, on each fold's validation and test
trials (at most explain.trials of them), averaged over folds and seeds (pipeline/explain.py and
pipeline/attribution.py say how each is computed):

- eeg.patterns: Haufe patterns of the EEG band-power baseline (refitted per fold and task with
  the C the baselines stage chooses on validation), per band and channel, as the mean over the
  task's classes of |pattern| (eeg.patterns_per_class: signed, per class);
- eeg.attribution: Integrated Gradients of the pretrained EEG branch, per channel;
- acoustic.top_features: the acoustic branch's 20 openSMILE features of largest mean
  Integrated Gradients towards the true class (signed), under openSMILE's names;
- a time x mel-frequency saliency image per class of the mel branch (a figure);
- fusion.view_share: each view's share of the trained fused model's attribution, per task and
  class, and fusion.view_contribution its signed part of the true class's log-probability,
  beside robustness's ablation (the test accuracy lost when the view is missing).

The runs (fold, seed) are tasks on `compute.*`'s workers (`attribution.explain_run`: only they load
torch and captum). evaluate does not wait for this stage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.dataset import Trials, available_modalities, load_features, load_trials
from pipeline.explain import IG_METHOD, PRIMARY, finite_or_none, haufe_patterns, nan_mean, task_trials, top_features
from pipeline.parallel import stream
from pipeline.params import Params
from pipeline.split import fold_indices, runs

TOP = 20           # acoustic.top_features' length


def run(params: Params) -> None:
    with io.atomic_path(io.EXPLAIN_FIGURES) as figures:
        figures.mkdir()
        if params.explain.enabled:
            report, drawn = explain(params, load_trials())
            draw(drawn, report, figures)
            text = words(report)
        else:
            report, text = {"enabled": False}, "# Explanations\n\n`explain.enabled` is false: nothing was explained.\n"
        io.write_json(io.EXPLAIN, finite_or_none(report))
        with io.atomic_path(io.REPORTS / "explain.md") as tmp:
            tmp.write_text(text)
    print(f"explain: {report.get('runs', 0)} run(s) explained -> reports/explain.json, reports/explain.md")


def explain(params: Params, trials: Trials) -> tuple[dict, dict]:
    """Every explanation of the run: explain.json's content, and what the figures draw."""
    layout = io.read_json(io.EEG_CHANNELS)
    tasks = task_trials(trials)
    audio = [m for m in ("mel", "acoustic") if m in available_modalities()]
    grid = runs(len(trials.folds), params.train.seeds)
    jobs = [(fold, seed, params, trials, audio, str(Path.cwd())) for fold, _, seed in grid]
    results = list(stream("pipeline.attribution:explain_run", jobs, params.compute, "explain", "run"))
    patterns, pattern_acc = band_power_patterns(params, trials, len(layout["channels"]))
    report = {"enabled": True, "runs": len(results),
              "eeg": {**eeg_section(params, tasks, layout, patterns, results), "patterns_val_acc": pattern_acc}}
    drawn = {"layout": layout, "classes": trials.classes}
    if "acoustic" in audio:
        names = acoustic_names(params)
        importance = {task: nan_mean([r["acoustic"][task] for r in results]) for task in tasks}
        columns = params.acoustic.columns()
        report["acoustic"] = {"top_features": {task: top_features(v, names, TOP) for task, v in importance.items()},
                              "top_features_by_set": {task: {name: top_features(v[cols], names[cols], TOP)
                                                             for name, cols in columns.items()}
                                                      for task, v in importance.items()}}
    if "mel" in audio:
        drawn["mel"] = nan_mean([r["mel"] for r in results])
    fused = [r for r in results if r["share"] is not None]
    if fused:
        report["fusion"] = fusion_section(list(params.fusion.modalities), tasks, fused)
    report["method"] = method(params)
    return report, drawn


def method(params: Params) -> dict:
    """How each entry of explain.json was computed, in words (explain.json and explain.md carry it)."""
    return {"patterns": "Haufe et al. 2014: cov(X) w of the EEG log band-power logistic regression "
                        "(mne.decoding.LinearModel), fitted on each fold's train trials with C chosen on validation, "
                        "in standardised units; eeg.patterns: the mean over the task's classes of |pattern|; "
                        "eeg.patterns_per_class: signed",
            "attribution": f"{IG_METHOD}; {params.explain.steps} steps; at most {params.explain.trials} validation "
                           "and test trials per fold and seed",
            "eeg.attribution": "per channel: its attribution summed over time, mean over trials (signed: "
                               "positive where the channel moves the decision towards the true class)",
            "acoustic.top_features": "per openSMILE feature: its attribution, mean over trials (signed, as "
                                     "eeg.attribution); the 20 largest",
            "fusion.view_share": "per trial |attribution summed over a view's inputs|, normalised over the views; "
                                 "mean over trials (per class: over the class's trials)",
            "fusion.view_contribution": "per trial the attribution summed over a view's inputs (signed: its part of "
                                        "the change of the true class's log-probability from the baseline, in nats), "
                                        "mean over trials; about 0 for every view of a model at chance"}


def band_power_patterns(params: Params, trials: Trials, n_channels: int) -> tuple[dict[str, np.ndarray], dict]:
    """Per task: the Haufe patterns of the EEG band-power baseline (classes, channels, bands),
    mean over folds (NaN for a class no fold's train trials had), and the baseline's validation
    accuracy, mean over folds. A fold whose train trials hold fewer than two of the task's
    classes, or whose validation trials none of its labels, is left out (NaN if every fold is)."""
    from pipeline.baselines import log_band_power

    bands = params.baselines.bands
    x = log_band_power(load_features("eeg"), params.eeg.sfreq, bands)
    patterns, accuracy = {}, {}
    for task, view in task_trials(trials).items():
        per_fold, accs = [], []
        for fold in trials.folds:
            index = {part: idx[view.labels[idx] >= 0] for part, idx in fold_indices(trials.subjects, fold).items()}
            if len(np.unique(view.labels[index["train"]])) < 2 or not len(index["val"]):
                continue
            rows, classes, acc = haufe_patterns(x, view.labels, index, params.baselines.c_grid)
            full = np.full((len(view.classes), n_channels * len(bands)), np.nan)
            full[classes] = rows
            per_fold.append(full.reshape(len(view.classes), n_channels, len(bands)))
            accs.append(acc)
        shape = (len(view.classes), n_channels, len(bands))
        patterns[task] = nan_mean(per_fold) if per_fold else np.full(shape, np.nan)
        accuracy[task] = float(np.mean(accs)) if accs else float("nan")
    return patterns, accuracy


def acoustic_names(params: Params) -> list[str]:
    """The acoustic view's column names: openSMILE's names of each set's functionals, in order."""
    from pipeline.features.acoustic import smiles

    return [name for smile in smiles(params.acoustic.feature_sets) for name in smile.feature_names]


def eeg_section(params: Params, tasks: dict[str, Trials], layout: dict, patterns: dict, results: list[dict]) -> dict:
    """explain.json's eeg: Haufe patterns (|pattern| over classes, and signed per class) and the branch's attributions."""
    channels, bands = layout["channels"], list(params.baselines.bands)
    return {
        "channels": channels, "bands": bands,
        "patterns": {task: {band: dict(zip(channels, nan_mean(list(np.abs(pat[:, :, b]))).tolist()))
                            for b, band in enumerate(bands)} for task, pat in patterns.items()},
        "patterns_per_class": {task: {name: {band: dict(zip(channels, pat[c, :, b].tolist())) for b, band in enumerate(bands)}
                                      for c, name in enumerate(tasks[task].classes)} for task, pat in patterns.items()},
        "attribution": {task: dict(zip(channels, nan_mean([r["eeg"][task] for r in results]).tolist()))
                        for task in tasks},
    }


def fusion_section(views: list[str], tasks: dict[str, Trials], fused: list[dict]) -> dict:
    """explain.json's fusion: each view's share per task and class, beside the ablation of robustness."""
    share, per_class, contribution = ({task: nan_mean([r["share"][task][key] for r in fused]) for task in tasks}
                                      for key in ("all", "class", "contribution"))
    drop = ablation_drop(views)
    return {"views": views, "runs": len(fused),
            "view_share": {task: dict(zip(views, s.tolist())) for task, s in share.items()},
            "view_contribution": {task: dict(zip(views, c.tolist())) for task, c in contribution.items()},
            "view_share_per_class": {task: {name: dict(zip(views, per_class[task][c].tolist()))
                                            for c, name in enumerate(tasks[task].classes)} for task in tasks},
            "ablation_drop": drop, "agreement": agreement(dict(zip(views, share[PRIMARY].tolist())), drop)}


def ablation_drop(views: list[str]) -> dict[str, float] | None:
    """The fuse stage's ablation (primary task, test trials): the accuracy lost with each view
    missing, mean over the runs that fused every view (None without such a run)."""
    diagnostics = io.read_json(io.FUSION_DIR / "diagnostics.json").values()
    drops = [d["ablation_drop"] for d in diagnostics if set(d.get("ablation_drop", {})) == set(views)]
    return {m: float(np.mean([d[m] for d in drops])) for m in views} if drops else None


def agreement(share: dict[str, float], drop: dict[str, float] | None) -> dict | None:
    """Where view share and ablation agree (primary task): each one's ranking of the views, the
    Spearman correlation of the two, and whether they name the same most important view."""
    views = [m for m, v in share.items() if np.isfinite(v)]
    if drop is None or len(views) < 2:
        return None
    by_share = sorted(views, key=lambda m: -share[m])
    by_drop = sorted(views, key=lambda m: -drop[m])
    ranks = [np.array([order.index(m) for m in views], float) for order in (by_share, by_drop)]
    rho = float(np.corrcoef(*ranks)[0, 1])
    return {"share_order": by_share, "ablation_order": by_drop, "spearman": rho, "same_top": by_share[0] == by_drop[0]}


def words(report: dict) -> str:
    """reports/explain.md: what explain.json says, in words, with its figures."""
    eeg, lines = report["eeg"], ["# Explanations", "",
                                 f"{report['runs']} run(s) (fold, seed) explained; numbers in `reports/explain.json`, "
                                 "figures in `reports/figures/explain/`. How each was computed:", ""]
    lines += [f"- `{key}`: {text}" for key, text in report["method"].items()]
    lines += ["", "## EEG", "", "![Haufe patterns](figures/explain/eeg_patterns.png)",
              "![EEG branch attributions](figures/explain/eeg_attribution.png)", "",
              "| task | band | channels of the largest Haufe pattern |", "|---|---|---|"]
    for task, by_band in eeg["patterns"].items():
        for band, values in by_band.items():
            lines.append(f"| {task} | {band} | {', '.join(ranked_keys(values)[:6])} |")
    lines += ["", "| task | channels of the largest EEG branch attribution |", "|---|---|"]
    lines += [f"| {task} | {', '.join(ranked_keys(values)[:6])} |" for task, values in eeg["attribution"].items()]
    if "acoustic" in report:
        lines += ["", "## Speech", "", "![acoustic features](figures/explain/acoustic_top_features.png)",
                  "![mel saliency](figures/explain/mel_saliency.png)", "",
                  "| task | the acoustic branch's five most important openSMILE features |", "|---|---|"]
        lines += [f"| {task} | {', '.join(f'`{name}`' for name, _ in top[:5])} |"
                  for task, top in report["acoustic"]["top_features"].items()]
    fusion = report.get("fusion")
    if fusion:
        views = fusion["views"]
        lines += ["", "## Fusion", "", "![view shares](figures/explain/view_share.png)", "",
                  "| task | " + " | ".join(views) + " |", "|---" * (len(views) + 1) + "|"]
        lines += [f"| {task} | " + " | ".join(f"{share[m]:.2f}" for m in views) + " |"
                  for task, share in fusion["view_share"].items()]
        lines += ["", "Each view's signed contribution to the true class's log-probability (nats, mean over trials; "
                      "about 0 for a model at chance):", "", "| task | " + " | ".join(views) + " |",
                  "|---" * (len(views) + 1) + "|"]
        lines += [f"| {task} | " + " | ".join(f"{part[m]:+.3f}" for m in views) + " |"
                  for task, part in fusion["view_contribution"].items()]
        agree = fusion["agreement"]
        if agree is not None:
            lines += ["", "Beside the ablation (`reports/robustness.json`: the test accuracy lost with a view missing, "
                          "primary task: " + ", ".join(f"{m} {fusion['ablation_drop'][m]:+.3f}" for m in views)
                          + f"): view share ranks {' > '.join(agree['share_order'])}, the ablation "
                          f"{' > '.join(agree['ablation_order'])} (Spearman {agree['spearman']:+.2f}); "
                          + ("both name " + agree["share_order"][0] + " the most important view."
                             if agree["same_top"] else "they disagree on the most important view.")]
    return "\n".join(lines) + "\n"


def ranked_keys(values: dict[str, float]) -> list[str]:
    """The keys of `values`, largest value first (NaN last)."""
    return sorted(values, key=lambda k: -values[k] if values[k] == values[k] else float("inf"))


def draw(drawn: dict, report: dict, figures: Path) -> None:
    """The figures under reports/figures/explain/: the report's numbers, and what it does not
    hold (`drawn`: the channel layout, the classes, the mel saliency images)."""
    from pipeline import plots

    def per_channel(values: dict[str, float]) -> np.ndarray:  # the report's channel -> value, in layout order
        return np.array([values[ch] for ch in drawn["layout"]["channels"]], dtype=float)

    eeg = report["eeg"]
    plots.plot_channel_maps(figures / "eeg_patterns.png", {
        task: {band: per_channel(values) for band, values in by_band.items()} for task, by_band in eeg["patterns"].items()},
        drawn["layout"], "Haufe patterns of the EEG band-power baseline (mean |pattern| over classes)")
    plots.plot_channel_maps(figures / "eeg_attribution.png",
                            {task: {"branch": per_channel(values)} for task, values in eeg["attribution"].items()},
                            drawn["layout"], "EEG branch: Integrated Gradients per channel (towards the true class)",
                            signed=True)
    if "acoustic" in report:
        plots.plot_top_features(figures / "acoustic_top_features.png", report["acoustic"]["top_features"])
    if "mel" in drawn:
        plots.plot_mel_saliency(figures / "mel_saliency.png", drawn["mel"], drawn["classes"])
    if "fusion" in report:
        plots.plot_view_shares(figures / "view_share.png", report["fusion"]["view_share_per_class"])
