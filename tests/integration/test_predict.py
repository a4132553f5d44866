"""pipeline/predict.py's feature path: each view's features of new recordings come from the very
function its stage calls, in memory (no folder changed, no file written), and unlabelled trials
stay unlabelled (no stand-in class). The models' side of predict runs end to end in
tests/integration/test_pipeline.py."""
from __future__ import annotations

import os

import numpy as np

from pipeline import io
from pipeline.predict import data_features
from pipeline.stages import features, ingest

from dvc_project import ROOT
from factories import run_params, write_manifest

VIEWS = ["eeg", "mel", "topo", "acoustic"]


def test_predict_computes_every_view_as_its_stage_does_in_memory(dataset, params):
    root, df = dataset  # the current folder is root
    p = run_params(params, root, classes=("a", "b"))
    p = p.model_copy(update={"acoustic": p.acoustic.model_copy(update={"feature_sets": ("eGeMAPSv02",)})})
    write_manifest(root, df)
    ingest.run(p)
    for view in VIEWS:  # eeg first: it writes the manifest the others read
        features.run(p, view)
    staged = {view: np.load(io.feature_path(view)) for view in VIEWS}

    unlabelled = df.copy()
    unlabelled.loc[::2, "label"] = ""
    write_manifest(root, unlabelled, "new.csv")
    before = sorted(root.rglob("*"))
    new = p.model_copy(update={"data": p.data.model_copy(update={"manifest": "new.csv"})})
    trials, labelled, x, cleaned = data_features(new, VIEWS, seen=None)

    assert os.getcwd() == str(root) and sorted(root.rglob("*")) == before  # no folder changed, no file written
    assert list(labelled) == [k % 2 == 1 for k in range(len(df))]
    assert trials["label"].tolist() == unlabelled["label"].tolist()  # blank stays blank
    assert cleaned == {}
    for view in VIEWS:
        values, present = x[view]
        assert present.all() and np.array_equal(values, staged[view]), view


def test_no_module_of_the_package_changes_folder():
    """Stages run where DVC starts them and predict computes in memory: no os.chdir anywhere."""
    sources = sorted((ROOT / "pipeline").rglob("*.py"))
    assert len(sources) > 30
    assert [str(s) for s in sources if "chdir" in s.read_text()] == []
