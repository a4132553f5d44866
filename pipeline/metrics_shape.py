"""What the DVC metrics files hold, key by key: the one declaration of their shape.

docs/metrics.md is generated from it (pipeline/reference.py), and tests/unit/test_reference.py
checks the committed files against it both ways (`shape_problems`): a key a stage writes that
is not declared here, or a declared key that is always written but missing, fails. Keys whose
names vary (a view, a class, a baseline) are declared once under a placeholder such as `<view>`
(`PLACEHOLDERS`), which matches any name. No stage imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from pipeline.modalities import NAMES

WITH_STUDENTS = "with students (`distill.enabled`, `distill.students` not empty)"


@dataclass(frozen=True)
class Key:
    """One key of a metrics file: what its value means, the keys under it (a `Shape` when the
    same keys recur elsewhere; empty: a value with no keys of its own) and, for a key that only
    some runs write, when it is written ("": always)."""

    means: str
    keys: dict[str, Key] | Shape = field(default_factory=dict)
    only: str = ""


@dataclass(frozen=True)
class Shape:
    """Keys that several places of a file share, documented once under `title`."""

    title: str
    keys: dict[str, Key]


@dataclass(frozen=True)
class MetricsFile:
    """A metrics file as dvc.yaml names it (`<view>` for a foreach stage's `${item}`): which
    stage writes it, what it is, and its keys."""

    paths: tuple[str, ...]
    written_by: str
    means: str
    keys: dict[str, Key]


PLACEHOLDERS = {
    "<view>": f"a view: {', '.join(NAMES)} (those the data has; under students, a student's view)",
    "<baseline>": "a baseline the baselines stage fitted (pipeline/baselines.py's BASELINES that this run's "
                  "params and data offer)",
    "<class>": "a class of the task scored (the primary task's `data.classes`, or a secondary task's)",
    "<task>": "a secondary task: a `data.tasks` entry after `label`",
    "<source>": "what a fold reported: fusion, a view (its branch) or ensemble",
    "<fold>": "a fold's index, from 0",
    "<subject>": "a test subject's id, as the manifest writes it",
}

NO_HARM = Key("Test subjects this model serves worse than the best branch on validation (`best_branch_on_val`): "
              "its accuracy on the subject below the branch's by more than one of the subject's trials "
              "(accuracies are means over seeds).", {
                  "harmed": Key("How many such subjects."),
                  "share": Key("`harmed` over `n_subjects`; null without subjects."),
                  "n_subjects": Key("Test subjects both scored."),
                  "subjects": Key("Each such subject's accuracy difference, this model minus the branch.",
                                  {"<subject>": Key("The difference (negative).")}),
              })


def _scored(name: str, what: str) -> dict[str, Key]:
    """A metric's three keys in a test summary: the subject mean, its interval and its spread."""
    return {
        name: Key(f"{what}: the mean over test subjects of each subject's score (itself the mean over the "
                  "seeds, and folds, that tested the subject); null where no subject has one."),
        f"{name}_ci": Key(f"95% interval [low, high] of `{name}` over test subjects (`stats.subject_interval`, "
                          "seeded by `split.seed`); null below 4 subjects, where no interval covers."),
        f"{name}_std": Key(f"Sample standard deviation (ddof=1) of `{name}` over test subjects; null below 2 "
                           "subjects."),
    }


TEST_SUMMARY = Shape("Test summary", {
    **_scored("acc", "Accuracy"),
    **_scored("balanced_acc", "Unweighted accuracy (UA, balanced accuracy): each class's recall, averaged over the "
                              "classes present in the trials scored"),
    **_scored("f1_macro", "Macro F1 over the classes present in the trials scored"),
    **_scored("kappa", "Cohen's kappa"),
    **_scored("auc", "One-vs-rest macro ROC AUC over the classes present"),
    "acc_seed_std": Key("Standard deviation over seeds of the subject-mean accuracy (how much the seed alone "
                        "moves it); null with one seed."),
    "pred_entropy": Key("Entropy of the predicted-class histogram over log(number of classes), mean over test "
                        "runs: 1 when every class is predicted equally often, 0 when only one is."),
    "collapsed": Key("True when in some fold and seed one class takes at least 80% of the test predictions "
                     "(evaluate warns)."),
    "recall": Key("Recall of each class, mean over the folds whose test part has the class.", {
        "<class>": Key("That class's recall; null where no test part has it."),
    }),
})

TASKS = Key("The secondary tasks' test metrics, on each task's labelled trials.", {
    "<task>": Key("One secondary task.", {"test": Key("Its test metrics.", TEST_SUMMARY)}),
}, only="with secondary tasks (`data.tasks` longer than `[label]`)")

BASELINE_FLAGS = {
    "best_baseline": Key("The baseline of its rival views (its own view; every speech view for a speech branch; "
                         "early fusion for the fusion) with the highest validation accuracy.",
                         only="when a baseline of its rival views ran"),
    "best_baseline_acc": Key("That baseline's test accuracy (`baselines.<baseline>.test.acc`).",
                             only="when a baseline of its rival views ran"),
    "below_baseline": Key("True when the model's test accuracy is below that baseline's (evaluate warns).",
                          only="when a baseline of its rival views ran"),
}

PAIRED_GAIN = {
    "gain_ci": Key("95% interval of the gain over test subjects (`stats.subject_interval`); null below 4 subjects."),
    "gain_p": Key("Wilcoxon signed-rank p-value of the per-subject differences; null with too few test subjects "
                  "for any test to reach 0.05 (`uncertainty.gain_p`)."),
    "gain_test": Key("The test behind `gain_p`: wilcoxon, or none with too few test subjects."),
    "gain_n_subjects": Key("Test subjects both models scored: the pairs the gain is over."),
}

METRICS_SHAPE = {
    "fusion": Key("The fusion: what each fold reported under `fusion.select`.", {
        "type": Key("`fusion.type` of the run."),
        "test": Key("Test metrics of what the folds reported (the fused model, or safe selection's fallback).",
                    TEST_SUMMARY),
        "gain_over_best_branch": Key("Fusion test accuracy minus that of the fused branch best on validation "
                                     "(`best_branch_on_val`), mean over test subjects of the paired difference."),
        **PAIRED_GAIN,
        "best_branch_on_val": Key("The fused view whose branch has the highest mean validation accuracy."),
        "below_best_branch": Key("True when `gain_over_best_branch` < 0 (evaluate warns)."),
        "no_harm": NO_HARM,
        **BASELINE_FLAGS,
        "selected": Key("Folds that reported each source under `fusion.select`.", {
            "<source>": Key("How many folds reported that source; a source no fold reported is absent."),
        }),
        "trained": Key("The trained fused model alone, over the folds that trained one.", {
            "test": Key("Its `acc`, `acc_ci` and `acc_std`, as in a test summary; null when no fold trained one.",
                        {name: TEST_SUMMARY.keys[name] for name in ("acc", "acc_ci", "acc_std")}),
            "folds": Key("Folds that trained a fused model."),
            "no_harm": Key(NO_HARM.means + " Over the folds that trained one; null when none did.", NO_HARM.keys),
            "stand_in": Key("Fold -> the branch reported where one informative view was left and nothing was "
                            "trained.", {"<fold>": Key("The source that fold reported.")},
                            only="when some fold trained no fused model"),
        }),
        "robust": Key("Test accuracy of the trained fused model, mean over the runs that fused every view "
                      "(reports/robustness.json has more).", {
            "runs": Key("The runs averaged: those that fused every view."),
            "clean": Key("Test accuracy with every view."),
            "missing": Key("Test accuracy with one view missing (its input set to the train mean).", {
                "<view>": Key("With that view missing."),
            }),
        }, only="when some fusion run fused every view"),
        "tasks": TASKS,
    }),
    "branches": Key("Each branch alone (pretrain), one entry per view the data has.", {
        "<view>": Key("One view's branch.", {
            "test": Key("Its test metrics.", TEST_SUMMARY),
            "informative": Key("True when the branch beat chance on validation (one-sided binomial test, "
                               "p < 0.05) in at least half of the folds.",
                               only="for the views fusion.modalities fuses"),
            "informative_folds": Key("Folds where it beat chance on validation.",
                                     only="for the views fusion.modalities fuses"),
            **BASELINE_FLAGS,
            "tasks": TASKS,
        }),
    }),
    "baselines": Key("Each classical baseline (the baselines stage), fitted once per fold and scored under the "
                     "first seed.", {
        "<baseline>": Key("One baseline.", {
            "view": Key("The view it stands for; null for early fusion (several views)."),
            "val_acc": Key("Validation accuracy, mean over folds: what picks a model's `best_baseline`."),
            "test": Key("Its test metrics.", TEST_SUMMARY),
            "tasks": TASKS,
        }),
    }),
    "audit": Key("The null audit (pipeline/audit.py): models trained on labels that carry no information must "
                  "land at chance.", {
        "permute_labels": Key("`audit.permute_labels`: true when ingest permuted every label within subjects, so "
                              "that every number of the run should be near `chance`."),
        "chance": Key("Accuracy of guessing from the training class shares: mean over test subjects of the better of "
                      "guessing in those shares and always guessing the most common training class (1 / classes when "
                      "balanced)."),
        "passed": Key("False when a baseline trained on permuted labels has a test accuracy interval wholly above "
                      "`chance` (evaluate warns, summary.md opens with it)."),
        "above_chance": Key("Those baselines."),
        "permuted": Key("Each classical baseline fitted on the primary task's labels permuted within each training "
                        "subject of a fold (seeded by `audit.seed`; validation and test labels as they are).", {
            "<baseline>": Key("One baseline.", {
                "test": Key("Its `acc`, `acc_ci` and `acc_std`, as in a test summary.",
                            {name: TEST_SUMMARY.keys[name] for name in ("acc", "acc_ci", "acc_std")}),
            }),
        }),
    }),
    "students": Key("Single-view students of the fused model (the distill stage).", {
        "<view>": Key("The student of one view.", {
            "test": Key("Its test metrics.", TEST_SUMMARY),
            "gain_over_branch": Key("Student test accuracy minus that view's branch's, mean over test subjects of "
                                    "the paired difference."),
            **PAIRED_GAIN,
            "gap_to_teacher": Key("Student test accuracy minus the trained fused model's (its teacher), paired "
                                  "over the subjects both tested; null when no fold trained a fused model."),
            "tasks": TASKS,
        }),
    }, only=WITH_STUDENTS),
    "bit_reproducible": Key("False when training ran a kernel without a deterministic implementation (CUDA only): "
                            "the same params and seed may then give other last bits."),
    "nondeterministic_kernels": Key("Those kernels, sorted.", only="when `bit_reproducible` is false"),
    "n_subjects_test": Key("Subjects tested, over all folds."),
    "n_seeds": Key("Training seeds (`train.seeds`)."),
    "n_folds": Key("Folds of the split."),
    "uncertainty": Key("What the intervals, standard deviations and p-values are over, in words.", {
        "unit": Key("The unit every metric is averaged over first."),
        "ci": Key("How the `_ci` intervals are computed."),
        "std": Key("What the `_std` values are over."),
        "gain_p": Key("The test behind `gain_p`, and when there is none."),
    }),
    "data": Key("What ingest kept (reports/ingest.json).", {
        "trials_kept": Key("Trials that passed ingest's checks."),
        "trials_dropped": Key("Trials of the source dropped as bad input (`data.on_error: skip`)."),
        "problems": Key("Bad input found (a dropped trial, or a problem the source found before any trial)."),
        "subjects_kept": Key("Subjects with trials left."),
        "subjects_dropped": Key("Subjects left without any good trial, and so dropped."),
    }),
}

LIVE_CURVES = {
    "train_loss": Key("Training loss of the last epoch, mean over the runs (folds x seeds) that reached it."),
    "train_acc": Key("Training accuracy of the last epoch, mean over the runs that reached it."),
    "val_loss": Key("Validation loss of the last epoch, mean over the runs that reached it."),
    "val_acc": Key("Validation accuracy of the last epoch, mean over the runs that reached it."),
    "step": Key("That epoch's index, from 0 (the per-epoch curves are in the plots/ folder beside the file)."),
}

WHEN_TRAINED = "when a fusion run trained (`runs` > 0)"

METRICS_FILES = (
    MetricsFile(("reports/metrics.json",), "evaluate",
                "Test metrics of every branch, the fusion, the baselines and the students across folds and seeds.",
                METRICS_SHAPE),
    MetricsFile(("reports/cost.json",), "fuse",
                "What the fusion cost, mean over its runs. Wall times vary between machines, so it is a top-level "
                "metric of dvc.yaml, no stage's output, and stays out of dvc.lock.", {
                    "type": Key("`fusion.type` of the run."),
                    "runs": Key("Fusion runs (folds x seeds) that trained; 0 where one informative view was left "
                                "in every fold."),
                    "params": Key("Parameters of the fused model, branches included.", only=WHEN_TRAINED),
                    "head_params": Key("Parameters of the fusion head: what fusion adds to the branches.",
                                       only=WHEN_TRAINED),
                    "train_s_per_epoch": Key("Wall seconds per training epoch (every restart's epochs counted); "
                                             "null when the head is not trained (ensemble).", only=WHEN_TRAINED),
                    "infer_ms_per_trial": Key("Wall milliseconds per trial at inference.", only=WHEN_TRAINED),
                    "device": Key("Where it ran: cpu or cuda.", only=WHEN_TRAINED),
                    "torch_threads": Key("`compute.torch_threads` of the run.", only=WHEN_TRAINED),
                    "workers": Key("`compute.n_jobs` of the run.", only=WHEN_TRAINED),
                    "backend": Key("`compute.backend` of the run.", only=WHEN_TRAINED),
                }),
    MetricsFile(("reports/eeg_cost.json",), "features_eeg",
                "What EEG artifact cleaning cost; a top-level metric of dvc.yaml, outside dvc.lock, as cost.json.", {
                    "ica_s_per_recording": Key("Wall seconds of ICA and ICLabel per recording; null without "
                                               "`eeg.artifacts.ica`."),
                    "autoreject_s_per_recording": Key("Wall seconds of autoreject per recording; null without "
                                                      "`eeg.artifacts.autoreject`."),
                }),
    MetricsFile(("reports/mel_clips.json",), "features_mel",
                "How the audio clips were fitted to `mel.clip_seconds`.", {
                    "exact": Key("Clips already that long (within a sample).", only="when the data has audio"),
                    "padded": Key("Shorter clips, zero-padded.", only="when the data has audio"),
                    "cropped": Key("Longer clips, cropped as `mel.crop` says.", only="when the data has audio"),
                    "skipped": Key("Why no clip was made.", only="when the data has no audio"),
                }),
    MetricsFile(("reports/live/pretrain_<view>/metrics.json", "reports/live/fuse/metrics.json"), "pretrain, fuse",
                "dvclive's last values of the training curves of a training stage.", LIVE_CURVES),
    MetricsFile(("reports/live/distill/metrics.json",), "distill",
                "dvclive's last values of the students' training curves; empty without students.",
                {name: replace(key, only=WITH_STUDENTS) for name, key in LIVE_CURVES.items()}),
)


def is_placeholder(name: str) -> bool:
    return name.startswith("<") and name.endswith(">")


def declared(keys: dict[str, Key], name: str) -> Key | None:
    """The declaration of key `name` among `keys`: its own, else the placeholder's, else None."""
    if name in keys:
        return keys[name]
    return next((key for placeholder, key in keys.items() if is_placeholder(placeholder)), None)


def shape_problems(keys: dict[str, Key] | Shape, data: dict, prefix: str = "") -> list[str]:
    """Where `data` (a parsed metrics file) and its declaration `keys` disagree, one line each:
    keys the file has but the declaration lacks, and keys declared as always written that the
    file lacks. A declared mapping whose value is null (no fold trained one) has no keys to check."""
    keys = keys.keys if isinstance(keys, Shape) else keys
    problems = [f"{prefix}{name}: declared, always written, missing" for name, key in keys.items()
                if not is_placeholder(name) and not key.only and name not in data]
    for name, value in data.items():
        key = declared(keys, name)
        if key is None:
            problems.append(f"{prefix}{name}: in the file, not declared")
        elif isinstance(value, dict):
            problems += shape_problems(key.keys, value, f"{prefix}{name}.")
    return problems
