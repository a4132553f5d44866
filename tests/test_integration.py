"""End to end: the real `dvc repro` and `dvc exp run` on a copy of the project in a temp git repo,
with a tiny params override (few subjects, short trials, 1-2 epochs) so it runs in about a minute.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
}


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-4000:]}"
    return out


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git repo holding the project's tracked files, tiny params, after `dvc repro`."""
    dest = tmp_path_factory.mktemp("project")
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
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "init"], dest)
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
    assert sorted(p.suffix for p in (project / "data" / "raw").glob("sub-01_*")) == [".fif", ".wav"]


def test_no_change_repro_runs_nothing(project):
    out = _run(["dvc", "repro"], project)
    assert _ran(out) == set()


def test_fusion_key_reruns_only_fuse_and_evaluate(project):
    out = _run(["dvc", "exp", "run", "-S", "fusion.dropout=0.5"], project)
    assert _ran(out) == {"fuse", "evaluate"}
    diff = _run(["dvc", "metrics", "diff", "--all"], project)
    assert "fusion.test.acc" in diff


@pytest.mark.parametrize("fusion_type", ["gated", "ensemble"])
def test_fusion_type_experiment(project, fusion_type):
    out = _run(["dvc", "exp", "run", "-S", f"fusion.type={fusion_type}"], project)
    assert _ran(out) == {"fuse", "evaluate"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["type"] == fusion_type
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0


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
