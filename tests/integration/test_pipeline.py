"""End to end on the default synthetic data: the real `dvc repro` and `dvc exp run` on a copy of
the project in a temp git repo with tiny params (tests/dvc_project.py), built once per session and
shared with tests/integration/test_review.py and tests/integration/test_portable.py (which also
shows that a forced rerun of every stage reproduces every output to the last bit)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvc_project import ENV, built_project, cli, copy_project, ran, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project with tiny params on the synthetic data, after `dvc repro` (committed), shared
    with the other end-to-end files: read it, run DVC in a copy (`workspace`)."""
    return built_project(tmp_path_factory)


@pytest.fixture
def workspace(project, tmp_path) -> Path:
    return copy_project(project, tmp_path / "project")


def test_repro_writes_design_metrics(project):
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["type"] == "concat"
    assert metrics["n_seeds"] == 1
    fusion = metrics["fusion"]["test"]
    for key in ("acc", "f1_macro", "auc"):
        assert 0.0 <= fusion[key] <= 1.0
    assert -1.0 <= fusion["kappa"] <= 1.0
    assert all(f"{key}_std" in fusion for key in ("acc", "f1_macro", "kappa", "auc"))
    assert 0.0 <= fusion["balanced_acc"] <= 1.0  # UA beside accuracy
    harm = metrics["fusion"]["no_harm"]  # the one test subject, against the best branch on validation
    assert harm["n_subjects"] == 1 and harm["harmed"] == len(harm["subjects"]) in (0, 1)
    assert "served worse than" in (project / "reports" / "summary.md").read_text()
    for modality in ("eeg", "mel", "topo", "acoustic"):
        branch = metrics["branches"][modality]["test"]
        assert 0.0 <= branch["acc"] <= 1.0 and 0.0 <= branch["f1_macro"] <= 1.0
        assert "acc_std" in branch
    gain = metrics["fusion"]["gain_over_best_branch"]
    best = metrics["fusion"]["best_branch_on_val"]
    assert gain == pytest.approx(metrics["fusion"]["test"]["acc"] - metrics["branches"][best]["test"]["acc"])
    assert "| **fusion (concat)** |" in (project / "reports" / "summary.md").read_text()
    diagnostics = json.loads((project / "reports" / "diagnostics.json").read_text())
    assert set(diagnostics["inputs"]) == {"eeg", "mel", "topo", "acoustic"}
    assert set(diagnostics["ablation_drop"]) == {"eeg", "mel", "topo", "acoustic"}
    for figure in ("confusion_matrices", "training_curves", "modality_contributions", "fusion_dynamics",
                   "persistence_images"):
        assert (project / "reports" / "figures" / f"{figure}.png").stat().st_size > 1000
    assert set(metrics["students"]) == {"eeg", "acoustic"}  # the default students, through DVC
    assert "Not in this run" not in (project / "reports" / "summary.md").read_text()  # TINY is a release
    for stage in ("pretrain_eeg", "pretrain_mel", "pretrain_topo", "pretrain_acoustic", "fuse", "distill"):
        live = json.loads((project / "reports" / "live" / stage / "metrics.json").read_text())
        assert {"train_loss", "val_acc"} <= set(live)
    # Generated recordings are real files that MNE and soundfile read.
    assert sorted(p.suffix for p in (project / "data" / "synthetic").glob("sub-01_*")) == [".fif", ".wav"]
    assert json.loads((project / "reports" / "ingest.json").read_text())["trials_kept"] == 4 * 5 * 2
    assert json.loads((project / "reports" / "mel_clips.json").read_text())["exact"] == 4 * 5 * 2
    assert metrics["data"] == {"trials_kept": 40, "trials_dropped": 0, "problems": 0, "subjects_kept": 4, "subjects_dropped": 0}


def test_no_change_repro_runs_nothing(workspace):
    out = run(["dvc", "repro"], workspace)
    assert ran(out) == set()


def test_fusion_knob_makes_only_fuse_final_and_evaluate_stale(workspace):
    """A fusion knob invalidates fuse, the final model and evaluate, and nothing upstream (DVC's
    own status; the queued sweep in tests/integration/test_queue.py then reruns them)."""
    set_params(workspace, {"fusion": {"type": "gated"}})
    stale = json.loads(run(["dvc", "status", "--json"], workspace))
    assert set(stale) == {"fuse", "final", "evaluate"}, stale


def test_the_default_skips_what_ships_or_analyses_a_model_and_says_so(workspace):
    """params.yaml's final, distill and explain off (the tiny project is a release): `dvc repro`
    reruns those three and evaluate only, the three write every output DVC expects without
    training, and summary.md says what the run left out."""
    set_params(workspace, {"final": {"enabled": False}, "distill": {"enabled": False}, "explain": {"enabled": False}})
    assert ran(run(["dvc", "repro"], workspace)) == {"final", "distill", "explain", "evaluate"}
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert "students" not in metrics and 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0
    assert json.loads((workspace / "reports" / "explain.json").read_text()) == {"enabled": False}
    assert not list((workspace / "models" / "distill").glob("*/*.pt"))
    assert "Not in this run: single-view students" in (workspace / "reports" / "summary.md").read_text()


def test_user_recordings_come_from_data_root_not_synthesize(workspace):
    """With the default data evaluate depends on synthesize; with a manifest source the DAG takes
    the recordings from data.root instead (dvc.yaml's ${data.root}), so synthesize never runs."""
    assert "synthesize" in run(["dvc", "dag", "evaluate"], workspace)
    set_params(workspace, {"data": {"source": "manifest", "root": "data/real"}})
    dag = run(["dvc", "dag", "evaluate"], workspace)
    assert "synthesize" not in dag and "ingest" in dag and "features_eeg" in dag


def _kill_when(cmd: list[str], cwd: Path, ready) -> None:
    """Start `cmd`, SIGKILL it (and its children) as soon as `ready()` is true, mid-run."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"{' '.join(cmd)} ended before it could be killed mid-run"
        assert time.monotonic() < deadline, "timed out waiting for the stage to start writing"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_stage_killed_mid_run_leaves_previous_outputs(workspace):
    """A stage killed while it writes leaves the previous outputs whole and no temporary files
    once it runs again, and DVC reports it as not done until it has run to the end."""
    models = workspace / "models"
    before = _tree_digest(models / "eeg")
    set_params(workspace, {"train": {"seeds": [0, 1, 2, 3, 4, 5]},
                          "branches": {"eeg": {"epochs": 30, "patience": 30}}})
    try:
        # Run directly: killed after its first checkpoint landed in the temporary folder.
        _kill_when([sys.executable, "-m", "pipeline", "pretrain", "eeg"], workspace,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in run(["dvc", "status"], workspace)
        # Through DVC: the same kill; DVC may move the old outputs to its cache first, but never
        # leaves a half-written folder it would trust.
        _kill_when(["dvc", "repro", "pretrain@eeg"], workspace,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert not (models / "eeg").exists() or _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in run(["dvc", "status"], workspace)
        run(["rm", "-rf", str(workspace / ".dvc" / "tmp" / "rwlock")], workspace)  # the killed dvc's lock
    finally:
        run(["git", "checkout", "params.yaml"], workspace)
        run(["dvc", "checkout", "--force"], workspace)
    assert _tree_digest(models / "eeg") == before
    assert not list(models.glob(".eeg.*")) or run([sys.executable, "-m", "pipeline", "pretrain", "eeg"], workspace)
    assert not list(models.glob(".eeg.*"))  # the killed runs' temporary folders are gone
    assert "pretrain@eeg" not in run(["dvc", "status"], workspace)


def test_predict_reproduces_the_fuse_stage_and_fills_a_missing_view(project, tmp_path):
    """`predict` on the project's own recordings with fold 0's model gives, to the last bit, the
    probabilities the fuse stage computed for every trial with that model (the same feature
    code, normalisation and network); trials without audio get mel and acoustic filled with the
    fold's train mean, and their rows say so; trials without labels get predictions and no accuracy; a model
    that does not exist is one line and exit code 2."""
    import numpy as np
    import pandas as pd

    out = tmp_path / "predictions.csv"
    said = cli(["predict", "data/synthetic/manifest.csv", "--out", str(out), "--model", "fold0_seed0"], project).output
    assert "predict: 40 trials of 4 subject(s)" in said and "accuracy " in said
    rows = pd.read_csv(out, keep_default_na=False)
    fused = np.load(project / "models" / "fusion" / "trained_probabilities.npy")[0, 0]
    assert np.array_equal(rows[[c for c in rows.columns if c.startswith("p_")]].to_numpy(np.float32), fused)
    assert (rows["filled"] == "").all()
    from pipeline.evaluate import balanced_accuracy

    ua = np.mean([balanced_accuracy(g["label"].to_numpy(), g["predicted"].to_numpy()) for _, g in rows.groupby("subject")])
    assert f"unweighted accuracy (UA) {ua:.3f}" in said  # UA beside accuracy, mean over subjects

    manifest = pd.read_csv(project / "data" / "synthetic" / "manifest.csv", dtype=str, keep_default_na=False)
    mixed = manifest.copy()  # only sub-01's trials keep their audio
    for column in ("eeg_path", "audio_path"):
        mixed[column] = [str(project / "data" / "synthetic" / f) for f in mixed[column]]
    mixed.loc[mixed["subject"] != "sub-01", ["audio_path", "audio_onset", "audio_duration"]] = ""
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    said = cli(["predict", str(tmp_path / "mixed.csv"), "--out", str(out), "--model", "fold0_seed0"], project).output
    assert "views filled with the model's train mean: mel (30 trials), acoustic (30 trials)" in said
    rows = pd.read_csv(out, keep_default_na=False)
    with_audio = (rows["subject"] == "sub-01").to_numpy()
    assert (rows["filled"][with_audio] == "").all() and (rows["filled"][~with_audio] == "mel;acoustic").all()
    probs = rows[[c for c in rows.columns if c.startswith("p_")]].to_numpy(np.float32)
    assert np.allclose(probs[with_audio], fused[with_audio], atol=1e-6)  # their features are all there
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and not np.allclose(probs[~with_audio], fused[~with_audio])

    import mne  # a recording with its channels in reverse order is read in the model's order

    reversed_fif = tmp_path / "sub-03_reversed_eeg.fif"
    recording = mne.io.read_raw(project / "data" / "synthetic" / "sub-03_eeg.fif", preload=True, verbose="error")
    recording.reorder_channels(recording.ch_names[::-1]).save(reversed_fif, verbose="error")
    reordered = mixed.assign(eeg_path=mixed["eeg_path"].where(mixed["subject"] != "sub-03", str(reversed_fif)))
    reordered.to_csv(tmp_path / "reordered.csv", index=False)
    cli(["predict", str(tmp_path / "reordered.csv"), "--out", str(out), "--model", "fold0_seed0"], project)
    again = pd.read_csv(out, keep_default_na=False)
    assert np.allclose(again[[c for c in again.columns if c.startswith("p_")]].to_numpy(np.float32), probs, atol=1e-6)

    unlabelled = mixed.drop(columns="label")[mixed["subject"] == "sub-02"]  # one subject, no audio, no labels
    unlabelled.to_csv(tmp_path / "unlabelled.csv", index=False)
    said = cli(["predict", str(tmp_path / "unlabelled.csv"), "--out", str(out), "--model", "fold0_seed0"], project).output
    assert "predict: 10 trials of 1 subject(s)" in said and "accuracy" not in said
    rows = pd.read_csv(out, keep_default_na=False)
    assert (rows["label"] == "").all() and set(rows["predicted"]) <= set(manifest["label"])

    failed = cli(["predict", "data/synthetic/manifest.csv", "--out", str(out), "--model", "fold7_seed0"], project, code=2)
    assert failed.stderr.count("\n") == 1 and "fold7_seed0" in failed.stderr, failed.stderr


def test_predict_fills_with_the_fold_s_train_mean_and_flags_a_recording_in_other_units(project, tmp_path):
    """Fold 0's model keeps, per view, the mean of its fold's train trials' normalised features
    (computed here from the files: features, normalizer, split), not of its test trials; the
    project's own recordings are all in range, while sub-03's recording written in volts but read
    as microvolts (1e-6 of its EEG) is flagged out of range in the EEG view, with one warning."""
    import mne
    import numpy as np
    import pandas as pd

    from pipeline.predict import fold_model
    from pipeline.split import fold_indices

    before = Path.cwd()
    os.chdir(project)
    try:
        model = fold_model("fold0_seed0", "params.yaml")
    finally:
        os.chdir(before)
    manifest = pd.read_csv(project / "data" / "interim" / "manifest.csv", dtype=str, keep_default_na=False)
    split = json.loads((project / "data" / "interim" / "split.json").read_text())["folds"][0]
    parts = fold_indices(manifest["subject"].to_numpy(), split)
    for m in ("eeg", "acoustic"):
        stats = np.load(project / "data" / "features" / "normalizers" / f"{m}.npz")
        x = (np.load(project / "data" / "features" / f"{m}.npy") - stats["mean"][0]) / stats["std"][0]
        np.testing.assert_allclose(model.stats[m]["fill"][0], x[parts["train"]].mean(axis=0), atol=1e-5)
        assert not np.allclose(model.stats[m]["fill"][0], x[parts["test"]].mean(axis=0), atol=1e-3)

    volts = tmp_path / "sub-03_volts_eeg.fif"
    recording = mne.io.read_raw(project / "data" / "synthetic" / "sub-03_eeg.fif", preload=True, verbose="error")
    recording.apply_function(lambda x: x * 1e-6).save(volts, verbose="error")
    table = pd.read_csv(project / "data" / "synthetic" / "manifest.csv", dtype=str, keep_default_na=False)
    for column in ("eeg_path", "audio_path"):
        table[column] = [str(project / "data" / "synthetic" / f) for f in table[column]]
    table.loc[table["subject"] == "sub-03", "eeg_path"] = str(volts)
    table.to_csv(tmp_path / "volts.csv", index=False)
    out = tmp_path / "predictions.csv"
    result = cli(["predict", str(tmp_path / "volts.csv"), "--out", str(out), "--model", "fold0_seed0"], project)
    rows = pd.read_csv(out, keep_default_na=False)
    flagged = rows["subject"] == "sub-03"
    assert (rows.loc[flagged, "out_of_range"] == "eeg").all() and (rows.loc[~flagged, "out_of_range"] == "").all()
    assert "warning: predict: 10 of 40 trials lie far outside the model's training range in eeg (10)" in result.stderr


def test_final_model_predicts_at_any_revision_and_exports_to_onnx(workspace, tmp_path):
    """The final stage's model (every subject; a DVC artifact) is self-describing: `predict` with
    it labels new trials, reads it at a revision through dvc.api to the same bits, and `export`
    writes it as ONNX that onnxruntime runs within 1e-5 of torch on real trials."""
    import numpy as np
    import pandas as pd
    import yaml

    meta = json.loads((workspace / "models" / "final" / "meta.json").read_text())
    assert meta["enabled"] and meta["views"] == ["eeg", "mel", "topo", "acoustic"]
    assert sorted(meta["train_subjects"] + meta["val_subjects"]) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    artifacts = yaml.safe_load((workspace / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["final-model"] == {**artifacts["final-model"], "path": "models/final", "type": "model"}
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    said = cli(["predict", "data/synthetic/manifest.csv", "--out", str(here)], workspace).output
    assert "(model final)" in said

    # a model trained on a Dask cluster: predict runs where this project's params.yaml says (local), never there
    meta_file = workspace / "models" / "final" / "meta.json"
    saved = meta_file.read_text()
    meta["params"]["compute"].update(backend="dask", scheduler="tcp://127.0.0.1:9")  # nothing listens there
    # saved before two keys existed: one predict reads (named, this project's value stands in), one it never reads
    del meta["params"]["mel"]["crop"], meta["params"]["distill"]["enabled"]
    meta_file.write_text(json.dumps(meta))
    result = cli(["predict", "data/synthetic/manifest.csv", "--out", str(there)], workspace)
    assert "(model final)" in result.output
    assert "was saved before params key(s) mel.crop existed;" in result.stderr, result.stderr
    assert there.read_bytes() == here.read_bytes()
    meta_file.write_text(saved)
    said = cli(["predict", "data/synthetic/manifest.csv", "--out", str(there), "--rev", "HEAD"], workspace).output
    assert "(model final at HEAD)" in said and here.read_bytes() == there.read_bytes()
    rows = pd.read_csv(here)
    assert len(rows) == 40 and np.allclose(rows[[c for c in rows.columns if c.startswith("p_")]].sum(axis=1), 1, atol=1e-5)

    run(["git", "tag", "-a", "final-model@v0.1.0", "-m", "a version of the artifact"], workspace)  # as GTO registers
    run(["dvc", "artifacts", "get", str(workspace), "final-model", "-o", str(tmp_path / "got")], tmp_path)
    assert sorted(f.name for f in (tmp_path / "got").iterdir()) == sorted(
        f.name for f in (workspace / "models" / "final").iterdir())

    said = cli(["export", "--format", "onnx"], workspace).output
    assert re.search(r"onnxruntime agrees with torch within \S+ on 40 real trials", said), said
    assert (workspace / "models" / "final.onnx").stat().st_size > 10_000
