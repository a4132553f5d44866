"""Several label sets (`data.tasks`): the secondary tasks' columns come through ingest with their
classes, a blank value leaves a trial out of that task only, and bad task input stops ingest
with one line naming the key or the column, exit code 2 and nothing written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import io
from pipeline.data.ingest import ingest
from pipeline.data.studies import write_one_view_study
from pipeline.data.synthetic import circumplex_columns
from pipeline.dataset import load_trials
from pipeline.errors import PipelineError
from pipeline.params import ParamsError, parse_params
from pipeline.stages import features
from pipeline.stages import ingest as ingest_stage
from pipeline.stages import split

from factories import make_dataset, one_line, run_params, write_manifest


def task_params(params, root, tasks, task_classes=None, on_error="fail"):
    p = run_params(params, root, on_error)
    return p.model_copy(update={"data": p.data.model_copy(update={"tasks": tuple(tasks),
                                                                   "task_classes": task_classes or {}})})


@pytest.fixture
def rated(tmp_path, monkeypatch):
    """The ingest test dataset with an `arousal` column (one blank) and a `speaker_sex` column."""
    monkeypatch.chdir(tmp_path)
    df = make_dataset(tmp_path)
    df["arousal"] = ["high", "low", "mid", ""] * 3
    df["speaker_sex"] = "f"
    return tmp_path, df


def test_secondary_task_columns_and_classes_come_through_ingest(params, rated):
    root, df = rated
    write_manifest(root, df)
    manifest, classes, tasks, report = ingest(task_params(params, root, ["label", "arousal"]))
    assert classes == ["a", "b"]
    assert tasks == {"arousal": ["high", "low", "mid"]}  # sorted: no data.task_classes
    assert list(manifest.columns[-1:]) == ["arousal"] and "speaker_sex" not in manifest
    assert len(manifest) == 12  # the blank arousal trials are kept
    assert report["task_classes"] == tasks
    _, _, tasks, _ = ingest(task_params(params, root, ["label", "arousal"], {"arousal": ("low", "mid", "high")}))
    assert tasks == {"arousal": ["low", "mid", "high"]}  # the order data.task_classes gives


def test_the_default_single_task_writes_no_task_column(params, rated):
    root, df = rated
    write_manifest(root, df)
    manifest, _, tasks, report = ingest(run_params(params, root))
    assert tasks == {} and "arousal" not in manifest and "task_classes" not in report


def test_trials_carry_each_task_with_minus_one_where_blank(params, rated):
    root, df = rated
    write_manifest(root, df)
    p = task_params(params, root, ["label", "arousal"], {"arousal": ("low", "mid", "high")})
    ingest_stage.run(p)
    features.run(p, "eeg")  # writes the manifest the later stages read
    split.run(p.model_copy(update={"split": p.split.model_copy(update={"scheme": "kfold", "folds": 3, "val_subjects": 1})}))
    trials = load_trials()
    assert list(trials.tasks) == ["arousal"] and trials.tasks["arousal"].classes == ["low", "mid", "high"]
    assert list(trials.tasks["arousal"].labels) == [2, 0, 1, -1] * 3
    assert list(trials.labels) == [0, 1] * 6


def test_only_a_blank_is_a_missing_label(params, rated):
    """"NA" or "none" are classes, as ingest reads them; a blank alone is missing."""
    root, df = rated
    df["arousal"] = ["NA", "none", "", "none"] * 3
    write_manifest(root, df)
    p = task_params(params, root, ["label", "arousal"])
    ingest_stage.run(p)
    features.run(p, "eeg")  # writes the manifest the later stages read
    split.run(p.model_copy(update={"split": p.split.model_copy(update={"scheme": "kfold", "folds": 3, "val_subjects": 1})}))
    trials = load_trials()
    assert trials.tasks["arousal"].classes == ["NA", "none"]
    assert list(trials.tasks["arousal"].labels) == [0, 1, -1, 1] * 3


def test_a_value_outside_task_classes_is_bad_input(params, rated):
    root, df = rated
    write_manifest(root, df)
    p = task_params(params, root, ["label", "arousal"], {"arousal": ("low", "high")})
    with pytest.raises(PipelineError) as info:
        ingest(p)
    assert "row 4" in one_line(info) and "arousal 'mid' is not in data.task_classes.arousal (low, high)" in str(info.value)
    manifest, _, _, report = ingest(task_params(params, root, ["label", "arousal"], {"arousal": ("low", "high")}, "skip"))
    assert len(manifest) == 9 and report["dropped_by_kind"] == {"label_not_in_classes": 3}


@pytest.mark.parametrize("tasks,task_classes,expected", [
    (["label", "valence"], None, "no column 'valence' named in data.tasks"),
    (["label", "speaker_sex"], None, "task 'speaker_sex' of data.tasks has 1 class(es)"),
    (["label", "subject"], None, "'subject' is a manifest column of its own"),
])
def test_bad_task_columns_stop_ingest_with_one_line(params, rated, tasks, task_classes, expected):
    root, df = rated
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(task_params(params, root, tasks, task_classes))
    assert expected in one_line(info)


@pytest.mark.parametrize("data,expected", [
    ({"tasks": []}, "params: data.tasks = [] is not allowed; allowed: distinct manifest columns, the primary task 'label' first"),
    ({"tasks": ["arousal", "label"]}, "data.tasks = ['arousal', 'label'] is not allowed"),
    ({"tasks": ["label", "arousal", "arousal"]}, "distinct manifest columns"),
    ({"tasks": ["label"], "task_classes": {"arousal": ["low", "high"]}},
     "data.task_classes.arousal = ['low', 'high'] is not allowed; allowed: a key among data.tasks after the first (none)"),
    ({"tasks": ["label", "arousal"], "task_classes": {"arousal": ["low"]}}, "a list of 2 or more distinct values"),
])
def test_bad_tasks_params_name_the_key(params, data, expected):
    raw = params.model_dump(mode="json")
    raw["data"].update(data)
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert expected in one_line(info)


def test_cli_missing_task_column_exits_2_and_writes_nothing(root, rated):
    data_root, df = rated
    write_manifest(data_root, df)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["data"].update(source="manifest", root=str(data_root), tasks=["label", "valence"])
    (data_root / "params.yaml").write_text(yaml.safe_dump(raw))
    root = data_root
    proc = subprocess.run([sys.executable, "-m", "pipeline", "ingest"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "manifest.csv: no column 'valence' named in data.tasks" in proc.stderr
    assert not io.TRIALS.exists() and not io.TASKS.exists() and not io.CLASSES.exists()


def test_generated_manifests_carry_each_class_place_on_the_circumplex(tmp_path, realdata):
    """The synthetic source and the one-view study write `arousal` and `valence` from the class
    (README: Several tasks)."""
    assert circumplex_columns("anger") == {"arousal": "high", "valence": "negative"}
    assert circumplex_columns("calmness") == {"arousal": "low", "valence": "positive"}
    assert circumplex_columns("neutral") == {"arousal": "mid", "valence": "neutral"}
    manifest = pd.read_csv(write_one_view_study(tmp_path, realdata / "eeg" / "test_raw.set", n_subjects=3,
                                                trials_per_class=1, trial_seconds=1.0), dtype=str)
    assert [circumplex_columns(label) for label in manifest["label"]] == \
        manifest[["arousal", "valence"]].to_dict("records")


def test_a_task_a_fold_cannot_fit_is_one_line_and_an_unlabelled_part_is_not_scored():
    from pipeline.dataset import Trials
    from pipeline.evaluate import score_model
    from pipeline.stages.baselines import labelled

    labels = np.array([0, 0, -1, 1, -1, -1])
    index = {"train": np.array([0, 1, 2]), "val": np.array([3]), "test": np.array([4, 5])}
    with pytest.raises(PipelineError) as info:
        labelled(index, labels, "arousal", 2)
    assert "task 'arousal' of data.tasks has fewer than 2 classes among fold 2's train trials" in one_line(info)
    assert {k: list(v) for k, v in labelled({**index, "train": np.array([0, 3])}, labels, "arousal", 2).items()} == \
        {"train": [0, 3], "val": [3], "test": []}
    trials = Trials(labels=labels, subjects=np.array(["a", "a", "b", "b", "c", "c"]), classes=["lo", "hi"],
                    folds=[{"train": ["a"], "val": ["b"], "test": ["c"]}])
    scored = score_model("m:arousal", np.full((1, 1, 6, 2), 0.5), trials, [0])
    assert scored["test"] == [] and len(scored["val"]) == 1  # subject c has no arousal label
