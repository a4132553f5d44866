"""`python -m pipeline compare A B`: two runs model by model, paired over the same test subjects.

A and B are git revisions or DVC experiment names, or `workspace`. Each run's per-trial test
predictions (reports/predictions.csv, a DVC output) and params.yaml are read through `dvc.api`
at that revision, without checking either out. For every model both runs have, each test
subject's accuracy (mean over seeds) is paired between A and B: the mean difference B - A, its
bootstrap interval over subjects and a Wilcoxon signed-rank p-value over subjects (none below
MIN_SUBJECTS_WILCOXON subjects), as `pipeline.stats` computes them for evaluate; unweighted
accuracy (UA, balanced accuracy) the same way beside it, with its difference and interval.
"""
from __future__ import annotations

import functools
import io as _io

import pandas as pd
import yaml

from pipeline import io
from pipeline.dataset import AS_WRITTEN
from pipeline.errors import PipelineError
from pipeline.stats import MIN_SUBJECTS_WILCOXON, paired_difference, signed_interval, verdict

WORKSPACE = "workspace"
TRIAL_KEYS = ["fold", "subject", "trial", "label"]


def _rev(name: str) -> str | None:
    return None if name == WORKSPACE else name


class Revision:
    """The project's files at one git revision or DVC experiment (`workspace`: as on disk), read
    through one dvc.api.DVCFileSystem: it opens the repo and indexes its outputs once, where each
    dvc.api.read call does both again (about 0.4 s of CPU a file here). `who` is the command named
    in error lines. A context manager: leaving it closes the repo."""

    def __init__(self, rev: str, who: str = "compare"):
        self.rev, self.who = rev, who

    def __enter__(self) -> Revision:
        return self

    def __exit__(self, *exc) -> None:
        if "_fs" in self.__dict__:
            self._fs.close()

    @functools.cached_property
    def _fs(self):
        from dvc.api import DVCFileSystem

        return DVCFileSystem(rev=_rev(self.rev), subrepos=True)

    def read(self, path: str, mode: str = "r") -> str | bytes:
        """The text (mode "rb": bytes) of `path`; a failure is one line saying what to do."""
        try:
            with self._fs.open(path, mode) as file:
                return file.read()
        except Exception as error:  # dvc raises many kinds; the user needs the path, the rev and why
            if self.rev != WORKSPACE and self._locked_output(path):
                raise PipelineError(
                    f"{self.who}: {path} at {self.rev} is a DVC output that is not in this clone's cache: `dvc pull` "
                    f"it from the project's remote (README: Review), or `dvc repro` at {self.rev}") from None
            if isinstance(error, FileNotFoundError):
                reason = "no such file there, neither a DVC output nor tracked by Git"
            else:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PipelineError(f"{self.who}: cannot read {path} at {self.rev}: {reason}") from None

    def _locked_output(self, path: str) -> bool:
        """Whether dvc.lock here records `path` (or a folder holding it) as a stage's output."""
        try:
            with self._fs.open("dvc.lock") as file:
                lock = yaml.safe_load(file) or {}
        except Exception:  # no dvc.lock (nothing was reproduced here), or no such revision
            return False
        return any(path == out.get("path") or path.startswith(f"{out.get('path')}/")
                   for stage in (lock.get("stages") or {}).values() for out in stage.get("outs") or [])


def load_predictions(revision: Revision) -> pd.DataFrame:
    text = revision.read(str(io.PREDICTIONS))
    table = pd.read_csv(_io.StringIO(text), dtype={"subject": str, "label": str, "predicted": str}, **AS_WRITTEN)
    missing = [c for c in ["model", "seed", "predicted", *TRIAL_KEYS] if c not in table.columns]
    if missing:
        raise PipelineError(f"compare: {io.PREDICTIONS} at {revision.rev} lacks column(s) {', '.join(missing)}; "
                            "rerun evaluate there")
    return table


def load_params(revision: Revision) -> dict:
    return yaml.safe_load(revision.read("params.yaml")) or {}


def _by_task(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows per task: "" for the primary one, `<task>` for a secondary task's models (named
    `<model>:<task>`)."""
    task = table["model"].astype(str).str.partition(":")[2]
    return {t: rows for t, rows in table.groupby(task, sort=False)}


def _classes(rows: pd.DataFrame) -> list[str]:
    """One task's classes: the probability columns its rows fill."""
    return sorted(c[2:] for c in rows.columns if c.startswith("p_") and rows[c].notna().any())


def check_comparable(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> None:
    """For every task both runs have (a run with secondary tasks compares with one without on
    the primary task), both must predict the same classes for the same test trials in the same
    folds; otherwise a paired comparison means nothing, and this says what differs."""
    tasks_a, tasks_b = _by_task(a), _by_task(b)
    for task in [t for t in tasks_a if t in tasks_b]:
        rows_a, rows_b = tasks_a[task], tasks_b[task]
        which = f" on task {task}" if task else ""
        if _classes(rows_a) != _classes(rows_b):
            raise PipelineError(f"compare: {names[0]} and {names[1]} do not share classes{which} "
                                f"({', '.join(_classes(rows_a))} against {', '.join(_classes(rows_b))})")
        trials_a, trials_b = (set(t[TRIAL_KEYS].itertuples(index=False, name=None)) for t in (rows_a, rows_b))
        if trials_a != trials_b:
            raise PipelineError(
                f"compare: {names[0]} and {names[1]} do not share test trials and folds{which} "
                f"({len(trials_a - trials_b)} (fold, subject, trial, label) only in {names[0]}, "
                f"{len(trials_b - trials_a)} only in {names[1]}): they ran on different data or splits")


def _per_subject(table: pd.DataFrame, model: str, metric: str = "acc") -> dict:
    """One model's accuracy (`metric` "acc") or unweighted accuracy ("balanced_acc") per subject,
    mean over seeds."""
    from pipeline.evaluate import balanced_accuracy

    rows = table[table["model"] == model]
    score = (lambda g: float((g["label"] == g["predicted"]).mean())) if metric == "acc" else \
        (lambda g: balanced_accuracy(g["label"].to_numpy(), g["predicted"].to_numpy()))
    per_seed = pd.Series({key: score(group) for key, group in rows.groupby(["subject", "seed"])}, dtype=float)
    return per_seed.groupby(level=0).mean().to_dict()


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> list[dict]:
    """Per model present in both runs (in A's order): acc A, acc B and `paired_difference` B - A."""
    rows = []
    for model in dict.fromkeys(a["model"]):
        if model not in set(b["model"]):
            continue
        subjects_a, subjects_b = _per_subject(a, model), _per_subject(b, model)
        ua_a, ua_b = _per_subject(a, model, "balanced_acc"), _per_subject(b, model, "balanced_acc")
        diff, ua_diff = paired_difference(subjects_a, subjects_b, seed), paired_difference(ua_a, ua_b, seed)
        rows.append({"model": model, "acc_a": sum(subjects_a.values()) / len(subjects_a),
                     "acc_b": sum(subjects_b.values()) / len(subjects_b), **diff,
                     "ua_a": sum(ua_a.values()) / len(ua_a), "ua_b": sum(ua_b.values()) / len(ua_b),
                     "ua_delta": ua_diff["delta"], "ua_ci": ua_diff["ci"]})
    return rows


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out |= _flatten(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


def params_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, value in A, value in B) for every dotted params key that differs."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    return [(k, flat_a.get(k), flat_b.get(k)) for k in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(k) != flat_b.get(k)]


def render(rows: list[dict], diff: list[tuple], names: tuple[str, str], md: bool) -> str:
    """The comparison as a Markdown table (for a pull request) or aligned plain text."""
    header = ["model", f"acc {names[0]}", f"acc {names[1]}", "delta", "95% CI", "p", "test", "verdict",
              f"UA {names[0]}", f"UA {names[1]}", "UA delta", "UA 95% CI"]
    body = [[r["model"], f"{r['acc_a']:.3f}", f"{r['acc_b']:.3f}", f"{r['delta']:+.3f}",
             signed_interval(r["ci"], digits=3).strip() or "n/a", "n/a" if r["p"] is None else f"{r['p']:.3g}",
             f"{r['test']}, {r['n_subjects']} subjects", verdict(r["p"]), f"{r['ua_a']:.3f}", f"{r['ua_b']:.3f}",
             f"{r['ua_delta']:+.3f}", signed_interval(r["ua_ci"], digits=3).strip() or "n/a"] for r in rows]
    changed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff) or "none"
    note = (f"delta = {names[1]} - {names[0]}: mean over test subjects of the paired per-subject accuracy "
            "difference (each subject's accuracy a mean over seeds); 95% percentile-bootstrap interval over "
            f"subjects; p: Wilcoxon signed-rank over subjects (n/a below {MIN_SUBJECTS_WILCOXON} subjects, "
            "where no test over subjects can reach 0.05: trials of one subject are not independent). "
            "UA: unweighted accuracy (balanced accuracy, each class's recall averaged), paired the same way.")
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ["", f"Params that differ: {changed}.", "", note]) + "\n"
    widths = [max(len(x) for x in column) for column in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *body]]
    return "\n".join(lines + ["", f"params that differ: {changed}", note]) + "\n"


def compare(a: str, b: str, md: bool = False) -> str:
    names = (a, b)
    with Revision(a) as revision_a, Revision(b) as revision_b:
        pred_a, pred_b = load_predictions(revision_a), load_predictions(revision_b)
        params_a, params_b = load_params(revision_a), load_params(revision_b)
    check_comparable(pred_a, pred_b, names)
    rows = compare_runs(pred_a, pred_b, seed=int(params_a.get("split", {}).get("seed", 0)))
    if not rows:
        raise PipelineError(f"compare: {a} and {b} have no model in common")
    return render(rows, params_diff(params_a, params_b), names, md)
