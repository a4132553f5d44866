"""End to end on the default synthetic data: the real `dvc repro` and `dvc exp run` on a copy of
the project in a temp git repo with tiny params (tests/dvc_project.py), built once and shared."""
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

from dvc_project import ENV, make_project, ran, run, set_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project with tiny params on the synthetic data, after `dvc repro` (committed)."""
    dest = make_project(tmp_path_factory.mktemp("project"), {})
    repro = run(["dvc", "repro"], dest)
    assert "evaluate" in ran(repro)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "repro"], dest)
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
    out = run(["dvc", "repro"], project)
    assert ran(out) == set()


def test_fusion_type_experiment_and_compare(project):
    """`dvc exp run -S fusion.type=gated` reruns fuse and evaluate only; `compare` pairs it with
    HEAD through dvc.api, names the changed key, and gives delta 0, p 1 for a run against itself."""
    out = run(["dvc", "exp", "run", "-S", "fusion.type=gated"], project)
    assert ran(out) == {"fuse", "evaluate"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["type"] == "gated"
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0
    diff = run(["dvc", "metrics", "diff", "--all"], project)
    assert "fusion.test.acc" in diff
    (experiment,) = re.findall(r"Ran experiment\(s\): (\S+)", out)
    table = run([sys.executable, "-m", "pipeline", "compare", "HEAD", experiment, "--md"], project)
    assert table.startswith(f"| model | acc HEAD | acc {experiment} | delta |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert {"eeg", "mel", "topo", "fusion", "fusion_trained"} <= set(rows)
    assert " | +0.000 | " in rows["eeg"]  # the branches did not rerun: same predictions
    assert "fusion.type: 'concat' -> 'gated'" in table
    itself = run([sys.executable, "-m", "pipeline", "compare", "HEAD", "HEAD"], project)
    assert all(" +0.000 " in line for line in itself.splitlines()[1:6])
    assert "params that differ: none" in itself
    proc = subprocess.run([sys.executable, "-m", "pipeline", "compare", "HEAD~1", "HEAD"], cwd=project, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: compare: cannot read reports/predictions.csv at HEAD~1") and \
        proc.stderr.count("\n") == 1, proc.stderr


def test_same_seed_gives_identical_metrics(project):
    """Forcing fuse and evaluate to run again with the same params reproduces every metric."""
    probabilities = project / "models" / "fusion" / "probabilities.npy"
    before = probabilities.read_bytes(), (project / "reports" / "metrics.json").read_text()
    out = run(["dvc", "repro", "--force", "--single-item", "fuse"], project)
    assert ran(out) == {"fuse"}
    run(["dvc", "repro", "evaluate"], project)
    assert (probabilities.read_bytes(), (project / "reports" / "metrics.json").read_text()) == before


def test_mel_key_reruns_no_eeg_or_topo_stage(project):
    out = run(["dvc", "exp", "run", "-S", "mel.fmin=60.0"], project)
    stages = ran(out)
    assert {"features_mel", "normalize@mel", "pretrain@mel"} <= stages
    assert not {s for s in stages if "eeg" in s or "topo" in s}


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
    set_params(project, {"train": {"seeds": [0, 1, 2, 3, 4, 5]},
                          "branches": {"eeg": {"epochs": 30, "patience": 30}}})
    try:
        # Run directly: killed after its first checkpoint landed in the temporary folder.
        _kill_when([sys.executable, "-m", "pipeline", "pretrain", "eeg"], project,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in run(["dvc", "status"], project)
        # Through DVC: the same kill; DVC may move the old outputs to its cache first, but never
        # leaves a half-written folder it would trust.
        _kill_when(["dvc", "repro", "pretrain@eeg"], project,
                   lambda: any(models.glob(".eeg.*/eeg/fold0_seed0.pt")))
        assert not (models / "eeg").exists() or _tree_digest(models / "eeg") == before
        assert "pretrain@eeg" in run(["dvc", "status"], project)
        run(["rm", "-rf", str(project / ".dvc" / "tmp" / "rwlock")], project)  # the killed dvc's lock
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "checkout", "--force"], project)
    assert _tree_digest(models / "eeg") == before
    assert not list(models.glob(".eeg.*")) or run([sys.executable, "-m", "pipeline", "pretrain", "eeg"], project)
    assert not list(models.glob(".eeg.*"))  # the killed runs' temporary folders are gone
    assert "pretrain@eeg" not in run(["dvc", "status"], project)


def test_sweep_through_the_dvc_queue(project):
    """`dvc exp run --queue -S 'fusion.type=late,ensemble'` queues one experiment per value,
    `dvc queue start -j 2` runs them side by side in the background, and `dvc exp show` then
    has both with metrics."""
    out = run(["dvc", "exp", "run", "--queue", "-S", "fusion.type=late,ensemble"], project)
    assert out.count("Queued experiment") == 2, out
    run(["dvc", "queue", "start", "-j", "2"], project)  # two DVC workers, each running one experiment
    deadline = time.monotonic() + 400
    while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"], project)):
        assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
        time.sleep(10)  # each `dvc queue status` costs ~2 s of CPU the queued runs need
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project))
    done = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                fusion_type = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("fusion", {}).get("type")
                metrics = data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {})
                if fusion_type in ("late", "ensemble") and "fusion" in metrics:
                    done[fusion_type] = metrics["fusion"]["test"]["acc"]
    assert set(done) == {"late", "ensemble"} and all(0.0 <= acc <= 1.0 for acc in done.values()), done
