"""A copy of the project in a temporary git repo with tiny params, and helpers to run DVC in it:
shared by the end-to-end tests (tests/test_integration*.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"synthetic": {"n_subjects": 4, "trials_per_class": 2, "trial_seconds": 2.0, "gap_seconds": 0.5}},
    "split": {"scheme": "holdout", "val_subjects": 1, "test_subjects": 1},
    "eeg": {"epoch_seconds": 2.0},
    "mel": {"clip_seconds": 2.0, "n_mels": 32, "n_frames": 32},
    "topo": {"n_bins": 8},
    "train": {"seeds": [0], "epochs": 2, "batch_size": 8},
    "fusion": {"epochs": 2},
    "compute": {"n_jobs": 1},  # a worker pool costs seconds to start and saves nothing on 40 trials
}


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) else value
    return base


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(args: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-4000:]}"
    return out


def ran(output: str) -> set[str]:
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
    params = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), override)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


def set_params(project: Path, override: dict) -> None:
    params = merge(yaml.safe_load((project / "params.yaml").read_text()), override)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def built_project(tmp_path_factory) -> Path:
    """The project with tiny params on the synthetic data after `dvc repro`, committed: built once
    per test session and shared by the pytest-xdist workers (whoever asks first builds it under a
    file lock in the session's temp folder). Read its files; run DVC in a `copy_project` of it,
    since two DVC commands in one repo at once would wait on each other's lock."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: the session's folder
    dest, done = shared / "built_project", shared / "built_project.done"
    with FileLock(str(shared / "built_project.lock")):
        if not done.exists():
            shutil.rmtree(dest, ignore_errors=True)  # a build that failed half-way
            make_project(dest, {})
            repro = run(["dvc", "repro"], dest)
            assert "evaluate" in ran(repro), repro[-2000:]
            run(["git", "add", "-A"], dest)
            run(["git", "commit", "-qm", "repro"], dest)
            done.touch()
    return dest


def copy_project(project: Path, dest: Path) -> Path:
    """A copy of a built project (git history, DVC cache and outputs) to change and rerun."""
    shutil.copytree(project, dest, symlinks=True)
    return dest
