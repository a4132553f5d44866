"""The report a reviewer reads: reports/summary.md and the warnings the evaluate stage prints,
as text made from metrics.json's values (pipeline/evaluate.py computes those; nothing here
computes a metric)."""
from __future__ import annotations

import numpy as np
import yaml

from pipeline.evaluate import rival_views
from pipeline.params import Params
from pipeline.selection import INFORMATIVE_ALPHA
from pipeline.stats import MIN_SUBJECTS_INTERVAL, MIN_SUBJECTS_WILCOXON, p_text, signed_interval, verdict


def task_cell(test: dict) -> str:
    """A secondary task's cell of the results table: accuracy; UA."""
    return f"{_fmt(test, 'acc')}; {_fmt(test, 'balanced_acc')}"


def _fmt(test: dict, key: str) -> str:
    """`0.853 [0.74, 0.95]`: the subject mean and its 95% interval (n/a where undefined)."""
    if test[key] is None:
        return "n/a"
    ci = test[f"{key}_ci"]
    return f"{test[key]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def gain_sentence(fusion: dict) -> str:
    """The fused model against its best branch in words, with interval, p-value and verdict:
    `fusion beats mel by +0.040 [-0.02, +0.10], p = 0.31 (Wilcoxon signed-rank over 12 test
    subjects): not significant`."""
    gain, best, ci, p = (fusion[k] for k in ("gain_over_best_branch", "best_branch_on_val", "gain_ci", "gain_p"))
    verb = "beats" if gain > 0 else "trails" if gain < 0 else "ties with"
    n = fusion["gain_n_subjects"]
    interval = signed_interval(ci) or f" (no interval below {MIN_SUBJECTS_INTERVAL} test subjects)"
    if p is None:
        return f"fusion {verb} {best} by {gain:+.3f}{interval}, {p_text(p, n)}"
    return f"fusion {verb} {best} by {gain:+.3f}{interval}, p = {p:.2g} (Wilcoxon signed-rank over {n} test subjects): {verdict(p)}"


def reproducibility_note(metrics: dict) -> str | None:
    """The warning when a run cannot be reproduced bit for bit, else None."""
    if metrics["bit_reproducible"]:
        return None
    return ("this run is not bit-reproducible: training ran kernels without a deterministic implementation "
            f"({', '.join(metrics['nondeterministic_kernels'])}; CUDA), so the same params and seed can give "
            "other last bits and other metrics; run on CPU (train.device: cpu) for bit-identical results")


def trained_sentence(trained: dict, n_folds: int) -> str:
    """What summary.md says of the trained fused model alone, and of the folds that trained none."""
    stand_in = trained.get("stand_in", {})
    others = ("; on fold(s) " + ", ".join(f"{fold} {m}" for fold, m in stand_in.items())
              + " one informative view was left, nothing was trained and that branch stood in") if stand_in else ""
    if trained["test"] is None:
        return f"No fused model was trained on any of the {n_folds} fold(s){others}."
    return (f"The trained fused model alone, on the {trained['folds']} of {n_folds} fold(s) that trained one: "
            f"{_fmt(trained['test'], 'acc')} test accuracy{others}.")


def cleaning_sentence(artifacts: dict) -> str:
    """One line of summary.md on EEG artifact cleaning (reports/artifacts.json)."""
    if not artifacts["ica"] and not artifacts["autoreject"]:
        return ("EEG artifact cleaning: off (`eeg.artifacts.ica` and `eeg.artifacts.autoreject` false): blinks and "
                "muscle activity stay in the EEG views.")
    done = []
    if artifacts["ica"]:
        removed = ", ".join(f"{n} {label}" for label, n in artifacts["removed_by_label"].items()) or "none"
        done.append(f"ICA + ICLabel on each of {len(artifacts['recordings'])} recording(s) removed {removed} "
                    "component(s) (`reports/figures/removed_components.png`)")
    if artifacts["autoreject"]:
        n = artifacts["trials_by_status"]
        done.append(f"autoreject repaired {n['repaired']} and dropped {n['dropped']} of {sum(n.values())} trial(s) "
                    "(dropped trials leave every view)")
    return f"EEG artifact cleaning: {'; '.join(done)} (`reports/artifacts.json`)."


def results_table(metrics: dict, tasks: list[str], rows: list[tuple[str, dict]] | None = None) -> list[str]:
    """The Markdown lines of summary.md's table: per model (default: every branch, the fusion,
    every student and baseline; or `rows`, (name, metrics entry)) its test metrics with their
    intervals, and a column per secondary task of `tasks`."""
    fusion = metrics["fusion"]
    if rows is None:
        rows = [(m, b) for m, b in metrics["branches"].items()] + [(f"**fusion ({fusion['type']})**", fusion)]
        rows += [(f"student: {view}", s) for view, s in metrics.get("students", {}).items()]
        rows += [(f"_baseline: {n}_", b) for n, b in metrics.get("baselines", {}).items()]
    lines = ["| model | acc | UA | macro F1 | kappa | AUC | acc std over seeds | pred. entropy | collapsed "
             "| best baseline of its rival views (on val) |" + "".join(f" {t}: acc; UA |" for t in tasks),
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(tasks)]
    for name, model in rows:
        test = model["test"]
        seed_std = "n/a" if test["acc_seed_std"] is None else f"{test['acc_seed_std']:.3f}"
        baseline = (f"{model['best_baseline']} {model['best_baseline_acc']:.3f}"
                    + (" (**below it**)" if model["below_baseline"] else "")) if "best_baseline" in model else ""
        lines.append(f"| {name} | {_fmt(test, 'acc')} | {_fmt(test, 'balanced_acc')} | {_fmt(test, 'f1_macro')} | {_fmt(test, 'kappa')} | "
                     f"{_fmt(test, 'auc')} | {seed_std} | {test['pred_entropy']:.2f} | "
                     f"{'**yes**' if test['collapsed'] else 'no'} | {baseline} |"
                     + "".join(f" {task_cell(model['tasks'][t]['test']) if t in model.get('tasks', {}) else ''} |"
                               for t in tasks))
    return lines


def gain_line(fusion: dict) -> str:
    """summary.md's line on the fused model against its best branch on validation."""
    return (f"Against the best branch on validation (`{fusion['best_branch_on_val']}`), paired over test "
            f"subjects: **{gain_sentence(fusion)}**.")


def audit_message(audit: dict) -> str | None:
    """The warning when the null audit fails (a baseline trained on labels permuted within
    subjects scores above chance on test), else None."""
    if audit["passed"]:
        return None
    failed = ", ".join(f"{n} {_fmt(audit['permuted'][n]['test'], 'acc')}" for n in audit["above_chance"])
    return (f"the null audit failed: trained on labels permuted within each training subject, {failed} "
            f"score(s) wholly above chance ({audit['chance']:.3f}) on the test subjects. Something other than the "
            "label tells the classes apart: subjects shared across the split, a normalisation fitted on test, or "
            "trial order or timing that follows the label")


def audit_line(audit: dict) -> str:
    """summary.md's line on the null audit: each baseline on permuted labels, chance, verdict."""
    scores = ", ".join(f"{n} {_fmt(entry['test'], 'acc')}" for n, entry in audit["permuted"].items())
    judged = any(entry["test"]["acc_ci"] for entry in audit["permuted"].values())
    if not audit["passed"]:
        verdict_said = "**failed**"
    elif judged:
        verdict_said = "passed"
    else:
        verdict_said = f"not judged (no intervals below {MIN_SUBJECTS_INTERVAL} test subjects)"
    return (f"Null audit (`audit`): each baseline trained on labels permuted within each training subject scores "
            f"{scores} on test, against chance {audit['chance']:.3f} (guessing from the training class shares): "
            f"{verdict_said}.")


def no_harm_line(fusion: dict) -> str:
    """summary.md's line on the test subjects the fused model (and the trained one alone) serves
    worse than the best branch on validation by more than one trial, named."""
    def said(model: str, harm: dict) -> str:
        if harm["share"] is None:
            return f"{model}: no test subject to compare"
        named = ", ".join(f"{s} ({d:+.3f})" for s, d in sorted(harm["subjects"].items(), key=lambda kv: kv[1]))
        return f"{model}: {harm['harmed']} of {harm['n_subjects']} ({harm['share']:.0%})" + (f": {named}" if named else "")

    trained = fusion["trained"].get("no_harm")
    return (f"Subjects served worse than `{fusion['best_branch_on_val']}` (the best branch on validation) by more "
            "than one trial (`fusion.no_harm`): " + said("as reported", fusion["no_harm"])
            + ("; " + said("the trained fused model alone", trained) if trained else "") + ".")


def summary_markdown(metrics: dict, params: Params, diagnostics: dict, artifacts: dict) -> str:
    """reports/summary.md: the table a reviewer reads, with the params that produced it (and
    what artifact cleaning removed: reports/artifacts.json)."""
    fusion = metrics["fusion"]
    tasks = list(params.data.secondary_tasks)  # a column each: that task's test accuracy
    warning = below_best_message(fusion, params.fusion.select)
    not_reproducible = reproducibility_note(metrics)
    audit = metrics["audit"]
    lines = [f"# Results: fusion `{fusion['type']}` of {', '.join(params.fusion.modalities)}", "",
             *([f"> **Labels permuted within subjects** (`audit.permute_labels: true`): a check of the pipeline, "
                f"not a result; every accuracy here should be near chance ({audit['chance']:.3f}).", ""]
               if audit["permute_labels"] else []),
             *([f"> **Warning:** {audit_message(audit)}.", ""] if not audit["passed"] else []),
             *([f"> **Warning:** {warning}.", ""] if warning else []),
             *([f"> **Warning:** {not_reproducible}.", ""] if not_reproducible else []),
             f"Protocol: `{params.split.scheme}`, {metrics['n_folds']} fold(s) x {metrics['n_seeds']} seed(s), "
             f"subject-disjoint, **{metrics['n_subjects_test']} test subjects**. Each test metric is the mean over "
             "test subjects of the subject's score (itself the mean over seeds), with its 95% interval over "
             "subjects in brackets; a subject is one observation, its trials are not independent."
             + (f" **With {metrics['n_subjects_test']} test subjects there are no intervals**: below "
                f"{MIN_SUBJECTS_INTERVAL} no interval covers the subjects' mean 93% of the time (docs/statistics.md); "
                "`split.scheme: loso` tests every subject." if metrics["n_subjects_test"] < MIN_SUBJECTS_INTERVAL else
                f" **With {metrics['n_subjects_test']} test subjects these intervals are wide**, as they should be: "
                "so few subjects show little of how much subjects vary; `split.scheme: loso` tests every subject."
                if metrics["n_subjects_test"] < MIN_SUBJECTS_WILCOXON else ""), "",
             cleaning_sentence(artifacts), "",
             *results_table(metrics, tasks), "", gain_line(fusion), "", no_harm_line(fusion), "", audit_line(audit), ""]
    selected, trained = fusion.get("selected", {}), fusion["trained"]
    if params.fusion.select == "safe":
        alpha, margin = params.fusion.select_alpha, params.fusion.select_margin
        rule = (f"the best branch or the validation-weighted ensemble of the fused branches where it is right on "
                f"significantly more validation trials than the fused model (McNemar's test at {alpha}), the "
                "fused model otherwise" if alpha is not None else
                f"the best on validation of the fused model, the best branch and the validation-weighted ensemble "
                f"of the fused branches, the fused model only if it beats both by more than {margin}")
        lines += [f"Selection (`fusion.select: safe`): per fold, {rule}; folds reporting each: "
                  + ", ".join(f"{k} {v}" for k, v in selected.items()) + ".", ""]
    lines += [trained_sentence(trained, metrics["n_folds"]), ""]
    students = metrics.get("students", {})
    if students:
        lines += [f"Distillation (`distill`, targets {params.distill.teacher_targets}, alpha {params.distill.alpha}, "
                  f"T {params.distill.temperature}): single-view students of the trained fused model, each against "
                  "its view's branch paired over test subjects (Wilcoxon signed-rank):",
                  *(distillation_sentence(view, student) for view, student in students.items()), ""]
    uninformative = [m for m, b in metrics["branches"].items() if not b.get("informative", True)]
    if uninformative:
        lines += [f"Views at chance on validation (binomial test, p >= {INFORMATIVE_ALPHA} in most folds): "
                  f"{', '.join(uninformative)}"
                  + (" (left out of the fusion where so: `fusion.drop_uninformative`)." if params.fusion.drop_uninformative
                     else "; `fusion.drop_uninformative: true` leaves them out of the fusion."), ""]
    robust = fusion.get("robust", {})
    if robust:
        lines += [f"Robustness of the trained fused model (test accuracy, mean over the {robust['runs']} run(s) that "
                  "fused every view; `reports/robustness.json`): clean "
                  f"{robust['clean']:.3f}; with a modality missing: "
                  + ", ".join(f"{m} {a:.3f}" for m, a in robust["missing"].items()) + ".", ""]
    drops = diagnostics.get("ablation_drop", {})
    if drops:
        lines += ["Modality contribution (test accuracy drop when the modality's input is replaced by its train "
                  "mean): " + ", ".join(f"{m} {np.mean(v):+.3f}" for m, v in drops.items()) + "."]
    if params.explain.enabled:
        lines += ["", "Why the models decide (the explain stage, which evaluate does not wait for): "
                      "[explain.md](explain.md), with Haufe patterns of the EEG band-power baseline, the EEG branch's "
                      "attributions per channel, the acoustic branch's openSMILE features ranked, the mel branch's "
                      "saliency per class and each view's share of the fused model's attribution set beside this "
                      "ablation (`reports/explain.json`, figures in `reports/figures/explain/`)."]
    off = [what for what, on in (("single-view students (`distill.enabled`)", params.distill.students),
                                 ("explanations (`explain.enabled`)", params.explain.enabled)) if not on]
    if off:
        lines += ["", f"Not in this run: {' and '.join(off)}, off by default so that an experiment does not pay "
                      "for them; `make release` turns them on."]
    weights = diagnostics.get("fusion_weights", {})
    if weights:
        lines += ["", "Learned fusion weights (mean over test trials): "
                  + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in weights.items()) + "."]
    lines += ["", "What the fusion cost (parameters, seconds per training epoch, ms per trial): `reports/cost.json` "
                  "(`dvc exp show`); wall times differ between machines, so it stays out of dvc.lock."]
    lines += ["", "Figures: `reports/figures/`. Per-trial predictions: `reports/predictions.csv`; per-fold and "
                  "per-subject rows: `reports/per_fold.csv`, "
                  "`reports/per_subject.csv`.", "", "<details><summary>params</summary>", "", "```yaml",
              yaml.safe_dump({k: getattr(params, k).model_dump(mode="json") for k in ("split", "train", "fusion")},
                             sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def distillation_sentence(view: str, student: dict) -> str:
    """What summary.md says of one student: whether distillation helped that view, in words."""
    gain, ci, p, n = (student[k] for k in ("gain_over_branch", "gain_ci", "gain_p", "gain_n_subjects"))
    if p is not None and p < 0.05:
        said = "**helped**" if gain > 0 else "**hurt**"
    else:
        said = "did not measurably help" if p is not None else "cannot be judged here"
    teacher = "" if student["gap_to_teacher"] is None else f"; {student['gap_to_teacher']:+.3f} against its teacher"
    return (f"- `{view}`: distillation {said}: student {_fmt(student['test'], 'acc')} against the {view} branch, "
            f"{gain:+.3f}{signed_interval(ci)}, {p_text(p, n)}{teacher}.")


def below_baseline_message(model: str, flagged: dict) -> str | None:
    if not flagged.get("below_baseline"):
        return None
    scores = (f"test accuracy {flagged['test']['acc']:.3f} against {flagged['best_baseline']} "
              f"{flagged['best_baseline_acc']:.3f}")
    if model == "fusion":
        return (f"fusion ({flagged['type']}) is below the classical baseline on every view's features side by side: "
                f"{scores}; the fused network does not beat logistic regression on them")
    return (f"branch {model} is below the best classical baseline of its rival views "
            f"({', '.join(sorted(rival_views(model)))}): {scores}; a fusion gain over it partly measures a weak branch")


def below_best_message(fusion: dict, select: str) -> str | None:
    """The warning when the fused model loses to the branch chosen on validation, else None;
    it suggests safe selection only where `fusion.select` is not already safe."""
    if not fusion["below_best_branch"]:
        return None
    best = fusion["best_branch_on_val"]
    return (f"fusion ({fusion['type']}) is below its best branch: test accuracy {fusion['test']['acc']:.3f} against "
            f"{best} (best on validation) {fusion['test']['acc'] - fusion['gain_over_best_branch']:.3f}, "
            f"gap {fusion['gain_over_best_branch']:+.3f}"
            + signed_interval(fusion["gain_ci"])
            + f", {p_text(fusion['gain_p'], fusion['gain_n_subjects'])} ({verdict(fusion['gain_p'])})"
            + ("; consider fusion.select: safe" if select != "safe" else
               " (safe selection's choice on validation did not hold on test)"))
