"""A copy of the project in a temporary git repo with tiny params, and helpers to run DVC in it:
shared by the end-to-end tests (tests/integration/)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"synthetic": {"n_subjects": 4, "trials_per_class": 2, "trial_seconds": 2.0, "gap_seconds": 0.5}},
    "split": {"scheme": "holdout", "val_subjects": 1, "test_subjects": 1},
    "eeg": {"epoch_seconds": 2.0},
    "mel": {"clip_seconds": 2.0, "n_mels": 32, "n_frames": 32},
    "topo": {"n_bins": 8},
    "acoustic": {"feature_sets": ["eGeMAPSv02"]},  # ComParE's 6,373 columns: the real-speech test has them
    "train": {"seeds": [0], "epochs": 2, "batch_size": 8},
    "fusion": {"epochs": 2},
    "final": {"enabled": True},  # a release (`make release`): predict, export and the artifact tests read the final
    "distill": {"enabled": True},  # model, and the end-to-end tests check the students and explanations through DVC
    "explain": {"enabled": True},
    "compute": {"n_jobs": 1},  # a worker pool costs seconds to start and saves nothing on 40 trials
}


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) else value
    return base


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-4000:]}"
    return out


@contextlib.contextmanager
def in_folder(folder: Path):
    """`folder` as the current one, and torch's thread count kept, for a command run in this
    process (a training run and predict set torch's threads from params)."""
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)


def cli(args: list[str], cwd: Path, code: int = 0):
    """`python -m pipeline <args>` run in this process in `cwd` (typer's CliRunner; the result has
    stdout, stderr and exit_code): the libraries a command loads (torch, MNE, librosa, openSMILE)
    and their first-call compilation are paid once per test worker instead of once per call. The
    stage commands, which pin CPU dispatch before numpy loads, still run as DVC runs them."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    with in_folder(cwd), warnings.catch_warnings(record=True) as caught:  # a subprocess would print them to stderr
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == code, f"pipeline {' '.join(args)}: exit code {result.exit_code}:\n{result.output[-4000:]}"
    assert code == 0 or not caught, f"pipeline {' '.join(args)} warned besides its error: {caught[0].message}"
    return result


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


_DAGS: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (dvc.yaml's text, data.root) -> dvc dag's edges


def dag_edges(project: Path) -> list[tuple[str, str]]:
    """`dvc dag`'s (before, after) stage edges of a project, asked once per dvc.yaml text and
    `data.root` (which dvc.yaml interpolates): copies of a project share the answer (a DVC call
    is seconds of a test)."""
    key = ((project / "dvc.yaml").read_text(),
           str(yaml.safe_load((project / "params.yaml").read_text())["data"]["root"]))
    if key not in _DAGS:
        _DAGS[key] = re.findall(r'"([^"]+)" -> "([^"]+)"', run(["dvc", "dag", "--dot"], project))
    return _DAGS[key]


def downstream(project: Path, *stages: str) -> set[str]:
    """Every stage that reads, directly or not, what any of `stages` writes (dvc dag's edges)."""
    edges = dag_edges(project)
    found, frontier = set(), set(stages)
    while frontier:
        frontier = {after for before, after in edges if before in frontier} - found
        found |= frontier
    return found


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


SHARED = "shared_project"  # the marker of the tests that use `built_project`


def _shared_dir(tmp_path_factory) -> Path:
    """The session's temp folder, one for every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def start_build(tmp_path_factory) -> None:
    """Build the shared project in a background process, once per test session (the first worker
    to collect a test marked shared_project starts it: tests/conftest.py), so that it builds while
    the workers run the unit tests."""
    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory)
    with FileLock(str(shared / "built_project.lock")):
        if (shared / "built_project.started").exists():
            return
        (shared / "built_project.started").touch()
        with open(shared / "built_project.log", "w") as log:
            subprocess.Popen([sys.executable, __file__, str(shared)], stdout=log, stderr=subprocess.STDOUT, env=ENV,
                             start_new_session=True)


def dvc_stages(project: Path) -> dict[str, dict]:
    """dvc.yaml's stages by their DVC names, a foreach stage expanded (`normalize@eeg`), in
    dvc.yaml's order (each stage after the ones it reads)."""
    out = {}
    for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                out[f"{name}@{item}"] = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", item))
        else:
            out[name] = stage
    return out


def named_stage_commands(project: Path) -> dict[str, list[str]]:
    """Every stage's command by its DVC name, in dvc.yaml's order."""
    return {name: stage["cmd"].split() for name, stage in dvc_stages(project).items()}


def stage_commands(project: Path) -> list[list[str]]:
    """Every stage's command, in dvc.yaml's order."""
    return list(named_stage_commands(project).values())


def run_stages(project: Path, env: dict | None = None, commands: list[list[str]] | None = None) -> None:
    """Run stage commands (default: every stage's) as their command runs them (cli.run_stage:
    params, pins, the stage), one after another in this process, in `project`: it spares an
    interpreter start-up, with torch and friends, per call (the test processes pin CPU dispatch
    before numpy or torch load, as `python -m pipeline <stage>` does: tests/conftest.py). With
    `env` (another machine's environment) they run in a process of their own."""
    commands = stage_commands(project) if commands is None else commands
    assert all(command[:3] == ["python", "-m", "pipeline"] for command in commands), commands
    if env is not None:
        script = ("import json, sys\nfrom pipeline.cli import run_stage\n"
                  "for command in json.loads(sys.argv[1]):\n    run_stage(command[3], 'params.yaml', *command[4:])")
        run([sys.executable, "-c", script, json.dumps(commands)], project, env)
        return
    from pipeline.cli import run_stage

    with in_folder(project):
        for command in commands:
            try:
                run_stage(command[3], "params.yaml", *command[4:])
            except SystemExit as stopped:  # a PipelineError: its one line is in the captured stderr
                raise AssertionError(f"{' '.join(command)} stopped with exit code {stopped.code}") from None


def _build(shared: Path) -> None:
    """The background build: every stage of the tiny project run in one process (`run_stages`),
    then `dvc commit -f` records the outputs in dvc.lock and the cache, committed; then a marker
    file. That dvc.lock is byte for byte the one `dvc repro` writes (20 stage processes, 4x the
    time): DVC hashes the same outputs of the same deps and params. Each behaviour of DVC itself
    gets its own real `dvc repro` or `dvc exp run` in the tests that read this project."""
    try:
        dest = make_project(shared / "built_project", {})
        run_stages(dest)
        run(["dvc", "commit", "-f", "-q"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "repro"], dest)
    except BaseException as error:
        (shared / "built_project.failed").write_text(str(error))
        raise
    (shared / "built_project.done").touch()


def built_project(tmp_path_factory) -> Path:
    """The project with tiny params on the synthetic data after `dvc repro`, committed: built once
    per test session (`start_build`) and shared by the pytest-xdist workers. Read its files; run
    DVC in a `copy_project` of it, since two DVC commands in one repo would wait on each other."""
    start_build(tmp_path_factory)  # already started, unless collection skipped it
    shared = _shared_dir(tmp_path_factory)
    deadline = time.monotonic() + 900
    while not (shared / "built_project.done").exists():
        failed = shared / "built_project.failed"
        assert not failed.exists(), f"building the shared project failed:\n{failed.read_text()[-4000:]}"
        assert time.monotonic() < deadline, "the shared project took more than 15 minutes to build"
        time.sleep(0.5)
    return shared / "built_project"


def copy_project(project: Path, dest: Path) -> Path:
    """A copy of a built project (git history, DVC cache and outputs) to change and rerun."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


if __name__ == "__main__":  # start_build's background process
    _build(Path(sys.argv[1]))
