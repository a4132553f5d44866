"""End to end: the real `dvc repro` and `dvc exp run` on a copy of the project in a temp git repo,
with a tiny params override (few subjects, short trials, 1-2 epochs) so it runs in about a minute.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "data": {"synthetic": {"n_subjects": 4, "trials_per_class": 2, "trial_seconds": 2.0, "gap_seconds": 0.5}},
    "split": {"val_subjects": 1, "test_subjects": 1},
    "eeg": {"epoch_seconds": 2.0},
    "mel": {"clip_seconds": 2.0, "n_mels": 32, "n_frames": 32},
    "topo": {"n_bins": 8},
    "train": {"seeds": [0], "epochs": 2, "batch_size": 8},
    "fusion": {"epochs": 2},
    "compute": {"n_jobs": 1},  # a worker pool costs seconds to start and saves nothing on 40 trials
}


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-4000:]}"
    return out


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def make_project(dest: Path, override: dict) -> Path:
    """A fresh git repo at `dest` holding the project's tracked files and params.yaml with
    TINY and then `override` on top (committed, nothing reproduced yet)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in tracked + ["pipeline"]:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file() and rel not in ("dvc.lock", "reports/metrics.json"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = _merge(_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), override)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project with tiny params on the synthetic data, after `dvc repro` (committed)."""
    dest = make_project(tmp_path_factory.mktemp("project"), {})
    repro = _run(["dvc", "repro"], dest)
    assert "evaluate" in _ran(repro)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "repro"], dest)
    return dest


def test_repro_writes_design_metrics(project):
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["type"] == "concat"
    assert metrics["n_seeds"] == 1
    fusion = metrics["fusion"]["test"]
    for key in ("acc", "f1_macro", "auc"):
        assert 0.0 <= fusion[key] <= 1.0
    assert -1.0 <= fusion["kappa"] <= 1.0
    assert all(f"{key}_std" in fusion for key in ("acc", "f1_macro", "kappa", "auc"))
    for modality in ("eeg", "mel", "topo"):
        branch = metrics["branches"][modality]["test"]
        assert 0.0 <= branch["acc"] <= 1.0 and 0.0 <= branch["f1_macro"] <= 1.0
        assert "acc_std" in branch
    gain = metrics["fusion"]["gain_over_best_branch"]
    best = metrics["fusion"]["best_branch_on_val"]
    assert gain == pytest.approx(metrics["fusion"]["test"]["acc"] - metrics["branches"][best]["test"]["acc"])
    assert "| **fusion (concat)** |" in (project / "reports" / "summary.md").read_text()
    diagnostics = json.loads((project / "reports" / "diagnostics.json").read_text())
    assert set(diagnostics["inputs"]) == {"eeg", "mel", "topo"}
    assert set(diagnostics["ablation_drop"]) == {"eeg", "mel", "topo"}
    for figure in ("confusion_matrices", "training_curves", "modality_contributions", "fusion_dynamics",
                   "persistence_images"):
        assert (project / "reports" / "figures" / f"{figure}.png").stat().st_size > 1000
    for stage in ("pretrain_eeg", "pretrain_mel", "pretrain_topo", "fuse"):
        live = json.loads((project / "reports" / "live" / stage / "metrics.json").read_text())
        assert {"train_loss", "val_acc"} <= set(live)
    # Generated recordings are real files that MNE and soundfile read.
    assert sorted(p.suffix for p in (project / "data" / "synthetic").glob("sub-01_*")) == [".fif", ".wav"]
    assert json.loads((project / "reports" / "ingest.json").read_text())["trials_kept"] == 4 * 5 * 2
    assert json.loads((project / "reports" / "mel_clips.json").read_text())["exact"] == 4 * 5 * 2
    assert metrics["data"] == {"trials_kept": 40, "trials_dropped": 0, "problems": 0, "subjects_kept": 4, "subjects_dropped": 0}


def test_no_change_repro_runs_nothing(project):
    out = _run(["dvc", "repro"], project)
    assert _ran(out) == set()


def test_fusion_type_experiment_reruns_only_fuse_and_evaluate(project):
    out = _run(["dvc", "exp", "run", "-S", "fusion.type=gated"], project)
    assert _ran(out) == {"fuse", "evaluate"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["type"] == "gated"
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0
    diff = _run(["dvc", "metrics", "diff", "--all"], project)
    assert "fusion.test.acc" in diff


def test_same_seed_gives_identical_metrics(project):
    """Forcing fuse and evaluate to run again with the same params reproduces every metric."""
    probabilities = project / "models" / "fusion" / "probabilities.npy"
    before = probabilities.read_bytes(), (project / "reports" / "metrics.json").read_text()
    out = _run(["dvc", "repro", "--force", "--single-item", "fuse"], project)
    assert _ran(out) == {"fuse"}
    _run(["dvc", "repro", "evaluate"], project)
    assert (probabilities.read_bytes(), (project / "reports" / "metrics.json").read_text()) == before


def test_mel_key_reruns_no_eeg_or_topo_stage(project):
    out = _run(["dvc", "exp", "run", "-S", "mel.fmin=60.0"], project)
    ran = _ran(out)
    assert {"features_mel", "normalize@mel", "pretrain@mel"} <= ran
    assert not {s for s in ran if "eeg" in s or "topo" in s}


def _set_params(project: Path, override: dict) -> None:
    params = _merge(yaml.safe_load((project / "params.yaml").read_text()), override)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


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


def test_stage_killed_mid_run_leaves_previous_outputs(project):
    """A stage killed while it writes leaves the previous outputs whole and no temporary files
    once it runs again, and DVC reports it as not done until it has run to the end."""
    models = project / "models"
    before = _tree_digest(models / "eeg")
    _set_params(project, {"train": {"seeds": [0, 1, 2, 3, 4, 5]},
                          "branches": {"eeg": {"epochs": 30, "patience": 30}}})
    try:
        # Run directly: killed after its first checkpoint landed in the temporary folder.
        _kill_when([sys.executable, "-m", "pipeline", "pretrain", "eeg"], project,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in _run(["dvc", "status"], project)
        # Through DVC: the same kill; DVC may move the old outputs to its cache first, but never
        # leaves a half-written folder it would trust.
        _kill_when(["dvc", "repro", "pretrain@eeg"], project,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert not (models / "eeg").exists() or _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in _run(["dvc", "status"], project)
        _run(["rm", "-rf", str(project / ".dvc" / "tmp" / "rwlock")], project)  # the killed dvc's lock
    finally:
        _run(["git", "checkout", "params.yaml"], project)
        _run(["dvc", "checkout", "--force"], project)
    assert _tree_digest(models / "eeg") == before
    assert not list(models.glob(".eeg.*")) or _run([sys.executable, "-m", "pipeline", "pretrain", "eeg"], project)
    assert not list(models.glob(".eeg.*"))  # the killed runs' temporary folders are gone
    assert "pretrain@eeg" not in _run(["dvc", "status"], project)


def _manifest_over_real_recording(eeg_file: Path, out: Path, window: float) -> None:
    """Trials cut by onset from one real EEGLAB recording: a window at each event, labelled by
    the event ('rt' or 'square'), the recording's quarters standing in for 4 subjects."""
    import mne

    raw = mne.io.read_raw(eeg_file, preload=False, verbose="error")
    length = raw.n_times / raw.info["sfreq"]
    rows = [{"subject": f"part{int(onset // (length / 4)) + 1}", "label": label, "eeg_path": str(eeg_file),
             "eeg_onset": round(float(onset), 4), "eeg_duration": window}
            for onset, label in zip(raw.annotations.onset, raw.annotations.description)
            if onset + window <= length]
    out.mkdir(parents=True)
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_eeg_only_manifest_over_real_recording(tmp_path_factory, realdata):
    """A manifest with no audio over a real EEGLAB file runs end to end with fusion.modalities
    [eeg, topo]; the speech stages are skipped with a note, and fusing mel is a params error."""
    dest = make_project(tmp_path_factory.mktemp("eeg_only"), {
        "data": {"source": "manifest", "root": "data/real"},
        "eeg": {"epoch_seconds": 2.0},
        "fusion": {"modalities": ["eeg", "topo"]},
    })
    _manifest_over_real_recording(realdata / "eeg" / "test_raw.set", dest / "data" / "real", 2.0)
    out = _run(["dvc", "repro", "evaluate"], dest)
    assert "synthesize" not in _ran(out) and "evaluate" in _ran(out)
    assert "features mel: skipped: the data has no audio" in out
    assert "pretrain mel: skipped" in out
    report = json.loads((dest / "reports" / "ingest.json").read_text())
    assert report["modalities"] == ["eeg", "topo"] and report["classes"] == ["rt", "square"]
    assert report["subjects_kept"] == 4 and report["trials_dropped"] == 0
    metrics = json.loads((dest / "reports" / "metrics.json").read_text())
    assert set(metrics["branches"]) == {"eeg", "topo"}
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0
    assert _ran(_run(["dvc", "repro", "evaluate"], dest)) == set()

    _set_params(dest, {"fusion": {"modalities": ["eeg", "mel", "topo"]}})
    proc = subprocess.run([sys.executable, "-m", "pipeline", "fuse"], cwd=dest, env=ENV, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "fusion.modalities" in proc.stderr and "no audio" in proc.stderr


def test_eav_layout_through_the_feature_stages(tmp_path_factory, write_eav):
    """The EAV source on a generated EAV-shaped folder (4 subjects, 2 s trials cut into 1 s
    segments) runs through `dvc repro` up to the three views' features (what comes after reads
    features and the manifest only, the same for every source, and runs end to end above)."""
    dest = make_project(tmp_path_factory.mktemp("eav"), {
        "data": {"source": "eav", "root": "data/eav", "eav": {"task": "speaking", "segment_seconds": 1.0}},
        "eeg": {"epoch_seconds": 1.0},
        "mel": {"clip_seconds": 1.0},
    })
    write_eav(dest / "data" / "eav", n_subjects=4, n_samples=1000, trials_per_class=2)
    out = _run(["dvc", "repro", "features_eeg", "features_mel", "features_topo"], dest)
    assert _ran(out) == {"ingest", "features_eeg", "features_mel", "features_topo"}
    report = json.loads((dest / "reports" / "ingest.json").read_text())
    assert report["trials_kept"] == 4 * 5 * 2 * 2  # subjects x emotions x speaking trials x segments
    assert len(report["eav_pairing"]) == 4 * 5 * 2
    assert json.loads((dest / "reports" / "mel_clips.json").read_text())["exact"] == 80
    for modality in ("eeg", "mel", "topo"):
        features = np.load(dest / "data" / "features" / f"{modality}.npy", mmap_mode="r")
        assert features.shape[0] == 80 and np.isfinite(features).all()


def test_one_informative_view_study_warns_and_safe_selection_falls_back(tmp_path_factory, realdata):
    """Speech carries the class, EEG none (real EEG windows drawn independently of the labels).
    A fusion that leans on EEG (an ensemble weighted on it alone) is flagged below its best
    branch, with a warning; `select: safe` with an unreachable margin reports the branches'
    choice on every fold, rerunning only fuse and evaluate."""
    from pipeline.data.studies import write_one_view_study

    dest = make_project(tmp_path_factory.mktemp("study"), {
        "data": {"source": "manifest", "root": "data/study"},
        "split": {"scheme": "loso", "val_subjects": 1},
        "train": {"epochs": 8, "patience": 8},
        "fusion": {"type": "ensemble", "ensemble_weighting": "fixed", "ensemble_weights": [1.0, 0.0, 0.0],
                   "select": "fusion"},
    })
    write_one_view_study(dest / "data" / "study", realdata / "eeg" / "test_raw.set", n_subjects=4,
                         trials_per_class=4, trial_seconds=2.0, voice_spread=1.5)
    out = _run(["dvc", "repro", "evaluate"], dest)
    metrics = json.loads((dest / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["below_best_branch"] is True, metrics["fusion"]
    assert "warning: fusion (ensemble) is below its best branch" in out
    assert (dest / "reports" / "summary.md").read_text().split("\n")[2].startswith("> **Warning:**")
    assert metrics["fusion"]["selected"] == {"fusion": 4}
    robust = json.loads((dest / "reports" / "robustness.json").read_text())
    assert set(robust["missing"]) == {"eeg", "mel", "topo"}

    out = _run(["dvc", "exp", "run", "evaluate", "-S", "fusion.select=safe", "-S", "fusion.select_margin=1.0"], dest)
    assert _ran(out) == {"fuse", "evaluate"}
    assert "select safe reports" in out
    metrics = json.loads((dest / "reports" / "metrics.json").read_text())
    assert "fusion" not in metrics["fusion"]["selected"] and sum(metrics["fusion"]["selected"].values()) == 4
    per_fold = (dest / "reports" / "per_fold.csv").read_text()
    assert "selected" in per_fold.splitlines()[0]
