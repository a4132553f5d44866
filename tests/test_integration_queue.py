"""A sweep through DVC's queue on a copy of the shared tiny project (tests/dvc_project.py), and
the review of its experiments: `dvc metrics diff` and `python -m pipeline compare`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import built_project, cli, copy_project, run

pytestmark = [pytest.mark.slow, pytest.mark.shared_project(longest=True)]  # the suite's longest: conftest starts it first


def _finished_experiments(project: Path) -> dict[str, tuple[str, float]]:
    """fusion.type -> (experiment name, fusion test acc) of every experiment with metrics."""
    done = {}
    for commit in json.loads(run(["dvc", "exp", "show", "--json"], project)):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                fusion_type = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("fusion", {}).get("type")
                metrics = data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {})
                if "fusion" in metrics:
                    done[fusion_type] = (rev.get("name") or exp.get("name"), metrics["fusion"]["test"]["acc"])
    return done


def test_sweep_through_the_dvc_queue_then_compare(tmp_path_factory, tmp_path):
    """`dvc exp run --queue -S 'fusion.type=late,ensemble'` queues one experiment per value,
    `dvc exp run --run-all -j 2` runs them side by side on the queue's workers, and `dvc exp show` then
    has both with metrics; `compare` pairs one with HEAD through dvc.api, names the changed key,
    and says in one line what a revision without outputs lacks (a run against itself:
    tests/test_integration_review.py)."""
    project = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    out = run(["dvc", "exp", "run", "--queue", "-S", "fusion.type=late,ensemble"], project)
    assert out.count("Queued experiment") == 2, out
    # two DVC queue workers run them side by side; this call follows their logs until both end
    # (cheaper than polling `dvc queue status`: about 0.6 s of CPU per call here)
    run(["dvc", "exp", "run", "--run-all", "-j", "2"], project, timeout=400)
    status = run(["dvc", "queue", "status"], project)
    assert status.count("Success") == 2, status
    done = _finished_experiments(project)
    assert {"late", "ensemble"} <= set(done) and all(0.0 <= acc <= 1.0 for _, acc in done.values()), done

    experiment = done["late"][0]
    diff = run(["dvc", "metrics", "diff", "HEAD", experiment, "--all"], project)
    assert "fusion.test.acc" in diff
    table = cli(["compare", "HEAD", experiment, "--md"], project).stdout
    assert table.startswith(f"| model | acc HEAD | acc {experiment} | delta |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert {"eeg", "mel", "topo", "fusion", "fusion_trained", "student_eeg", "student_acoustic"} <= set(rows)
    assert " | +0.000 | " in rows["eeg"]  # the branches did not rerun: same predictions
    assert "fusion.type: 'concat' -> 'late'" in table
    proc = cli(["compare", "HEAD~1", "HEAD"], project, code=2)
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: compare: cannot read reports/predictions.csv at HEAD~1") and \
        proc.stderr.count("\n") == 1, proc.stderr
