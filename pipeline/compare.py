"""`python -m pipeline compare REF A [B ...]`: runs paired against a reference over the same test
subjects.

REF and the runs are git revisions or DVC experiment names, or `workspace`. Each run's per-trial
test predictions (reports/predictions.csv, a DVC output) and params.yaml are read through
`dvc.api` at that revision, without checking either out. For every model both have, each test
subject's accuracy (mean over seeds) is paired between REF and the run: the mean difference run
- REF, its 95% interval over subjects (`stats.subject_interval`, none below MIN_SUBJECTS_INTERVAL
subjects) and a Wilcoxon signed-rank p-value over subjects (none below MIN_SUBJECTS_WILCOXON), as `pipeline.stats` computes them for evaluate;
unweighted accuracy (UA, balanced accuracy) the same way beside it, with its difference and
interval. The rows' p-values are one family: `p_holm` is Holm-corrected across them, and the
verdict reads it. One run against REF: a row per model; several runs (a sweep): a row per run,
for `fusion` unless other models are asked for.
"""
from __future__ import annotations

import contextlib
import functools
import io as _io
from pathlib import Path

import pandas as pd
import yaml

from pipeline import io
from pipeline.dataset import AS_WRITTEN
from pipeline.errors import PipelineError
from pipeline.stats import MIN_SUBJECTS_INTERVAL, MIN_SUBJECTS_WILCOXON, holm, paired_difference, signed_interval, verdict

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


def _per_subject(table: pd.DataFrame, model: str) -> tuple[dict, dict]:
    """One model's accuracy and unweighted accuracy (UA) per subject, each a mean over seeds."""
    from pipeline.evaluate import balanced_accuracy

    rows = table[table["model"] == model]
    per_seed = pd.DataFrame([{"subject": subject, "acc": float((g["label"] == g["predicted"]).mean()),
                              "ua": balanced_accuracy(g["label"].to_numpy(), g["predicted"].to_numpy())}
                             for (subject, _), g in rows.groupby(["subject", "seed"])])
    means = per_seed.groupby("subject")[["acc", "ua"]].mean()
    return means["acc"].to_dict(), means["ua"].to_dict()


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> list[dict]:
    """Per model present in both runs (in A's order): acc A, acc B and `paired_difference` B - A,
    and UA A, UA B with their paired difference and interval."""
    rows = []
    for model in dict.fromkeys(a["model"]):
        if model not in set(b["model"]):
            continue
        (acc_a, ua_a), (acc_b, ua_b) = _per_subject(a, model), _per_subject(b, model)
        diff, ua_diff = paired_difference(acc_a, acc_b, seed), paired_difference(ua_a, ua_b, seed)
        rows.append({"model": model, "acc_a": sum(acc_a.values()) / len(acc_a),
                     "acc_b": sum(acc_b.values()) / len(acc_b), **diff,
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


def holm_rows(rows: list[dict]) -> list[dict]:
    """The rows with `p_holm`: their p-values Holm-corrected as one family (None where no test)."""
    return [{**row, "p_holm": adjusted} for row, adjusted in zip(rows, holm([r["p"] for r in rows]))]


def render(rows: list[dict], diffs: dict[str, list[tuple]], ref: str, md: bool) -> str:
    """The comparison as a Markdown table (for a pull request) or aligned plain text: a row per
    (run, model) of `rows` against `ref`, and the params each run changes (`diffs`)."""
    several = len({r["run"] for r in rows}) > 1
    run_name = "run" if several else rows[0]["run"]
    header = [*(["run"] if several else []), "model", f"acc {ref}", f"acc {run_name}", "delta", "95% CI", "p",
              "p_holm", "test", "verdict", f"UA {ref}", f"UA {run_name}", "UA delta", "UA 95% CI"]
    body = [[*([r["run"]] if several else []), r["model"], f"{r['acc_a']:.3f}", f"{r['acc_b']:.3f}",
             f"{r['delta']:+.3f}", signed_interval(r["ci"], digits=3).strip() or "n/a",
             "n/a" if r["p"] is None else f"{r['p']:.3g}", "n/a" if r["p_holm"] is None else f"{r['p_holm']:.3g}",
             f"{r['test']}, {r['n_subjects']} subjects", verdict(r["p_holm"]), f"{r['ua_a']:.3f}", f"{r['ua_b']:.3f}",
             f"{r['ua_delta']:+.3f}", signed_interval(r["ua_ci"], digits=3).strip() or "n/a"] for r in rows]
    changed = [(f"{run}: " if several else "") + (", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff) or "none")
               for run, diff in diffs.items()]
    note = (f"delta = run - {ref}: mean over test subjects of the paired per-subject accuracy "
            "difference (each subject's accuracy a mean over seeds); 95% interval over subjects (the wider of "
            f"Student's t and the studentised bootstrap; n/a below {MIN_SUBJECTS_INTERVAL} subjects, where no interval "
            f"covers: docs/statistics.md); p: Wilcoxon signed-rank over subjects (n/a below {MIN_SUBJECTS_WILCOXON} subjects, "
            "where no test over subjects can reach 0.05: trials of one subject are not independent); p_holm: "
            f"Holm-corrected across the {sum(r['p'] is not None for r in rows)} tested rows, which the verdict reads. "
            "UA: unweighted accuracy (balanced accuracy, each class's recall averaged), paired the same way.")
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ["", "Params that differ: " + "; ".join(changed) + ".", "", note]) + "\n"
    widths = [max(len(x) for x in column) for column in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *body]]
    return "\n".join(lines + ["", "params that differ: " + "; ".join(changed), note]) + "\n"


def compare(ref: str, runs: list[str], md: bool = False, plot: str | None = None,
            models: list[str] | None = None) -> str:
    """Every run of `runs` against `ref` (see the module): the table, and with `plot` a forest
    plot of the rows' deltas and intervals written there. `models`: the models to keep (default:
    every model for one run, fusion for several)."""
    if len(set(runs)) < len(runs):
        raise PipelineError(f"compare: a run is named twice ({', '.join(runs)}); name each once")
    with contextlib.ExitStack() as stack:
        revisions = {name: stack.enter_context(Revision(name)) for name in dict.fromkeys((ref, *runs))}
        predictions = {name: load_predictions(r) for name, r in revisions.items()}
        params = {name: load_params(r) for name, r in revisions.items()}
    keep = models if models is not None else (["fusion"] if len(runs) > 1 else None)
    rows = []
    for run in runs:
        check_comparable(predictions[ref], predictions[run], (ref, run))
        found = compare_runs(predictions[ref], predictions[run], seed=int(params[ref].get("split", {}).get("seed", 0)))
        rows += [{"run": run, **r} for r in found if keep is None or r["model"] in keep]
    if not rows:
        wanted = f" among {', '.join(keep)}" if keep else ""
        raise PipelineError(f"compare: {ref} and {', '.join(runs)} have no model in common{wanted}")
    rows = holm_rows(rows)
    if plot is not None:
        from pipeline.plots import plot_forest

        plot_forest(Path(plot), rows, ref)
    return render(rows, {run: params_diff(params[ref], params[run]) for run in runs}, ref, md)
