"""A knob of one view on a copy of the shared tiny project (tests/dvc_project.py) reruns that
view's stages and what reads them, never another view's. Asked of DVC itself: `dvc status`
names the stage whose params changed and `dvc dag` what reads its outputs, which is what
`dvc exp run -S` then reruns (tests/integration/test_queue.py runs queued experiments)."""
from __future__ import annotations

import json

import pytest

from dvc_project import built_project, copy_project, downstream, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]


def test_mel_key_reruns_no_eeg_or_topo_stage(tmp_path_factory, tmp_path):
    workspace = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    set_params(workspace, {"mel": {"fmin": 60.0}})
    assert set(json.loads(run(["dvc", "status", "--json"], workspace))) == {"features_mel"}
    rerun = {"features_mel"} | downstream(workspace, "features_mel")
    assert {"normalize@mel", "pretrain@mel", "fuse", "evaluate"} <= rerun
    assert not {s for s in rerun if "eeg" in s or "topo" in s or "acoustic" in s}, rerun


def test_distill_key_makes_only_distill_and_evaluate_stale(tmp_path_factory, tmp_path):
    """A distill.* key: DVC finds distill and evaluate stale (evaluate reports the students'
    settings), and nothing reads distill's output but evaluate (the queued sweep of
    distill.students in tests/integration/test_queue.py then reruns them, students off included)."""
    workspace = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    set_params(workspace, {"distill": {"alpha": 0.9}})
    assert set(json.loads(run(["dvc", "status", "--json"], workspace))) == {"distill", "evaluate"}
    assert downstream(workspace, "distill") == {"evaluate"}


def test_an_eeg_key_reruns_no_other_view_while_the_manifest_holds(tmp_path_factory, tmp_path):
    """features_eeg writes the manifest every later stage reads. An EEG knob that drops no trial
    (a low-pass, autoreject off) changes the EEG array, not the manifest: once features_eeg has
    rerun, DVC finds the EEG views' stages stale and neither split nor a speech view's."""
    workspace = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    manifest = (workspace / "data" / "interim" / "manifest.csv").read_bytes()
    set_params(workspace, {"eeg": {"h_freq": 30.0}})
    run(["dvc", "repro", "--single-item", "features_eeg"], workspace)
    assert (workspace / "data" / "interim" / "manifest.csv").read_bytes() == manifest
    stale = set(json.loads(run(["dvc", "status", "--json"], workspace)))
    assert {"features_topo", "normalize@eeg", "pretrain@eeg", "baselines", "fuse"} <= stale, stale
    assert not {s for s in stale if s == "split" or "mel" in s or "acoustic" in s}, stale
