"""A sweep through DVC's queue on a copy of the shared tiny project (tests/dvc_project.py), and
the review of its experiments: `dvc metrics diff` and `python -m pipeline compare`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import built_project, cli, copy_project, ran, run

pytestmark = [pytest.mark.slow, pytest.mark.shared_project(longest=True)]  # the suite's longest: conftest starts it first


def _finished_experiments(project: Path) -> dict[tuple[str, ...], tuple[str, dict]]:
    """distill.students -> (experiment name, its metrics) of every experiment with metrics."""
    done = {}
    for commit in json.loads(run(["dvc", "exp", "show", "--json"], project)):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                students = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("distill", {}).get("students")
                metrics = data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {})
                if "fusion" in metrics:
                    done[tuple(students)] = (rev.get("name") or exp.get("name"), metrics)
    return done


def test_sweep_through_the_dvc_queue_then_compare(tmp_path_factory, tmp_path):
    """`dvc exp run --queue -S 'distill.students=[],[eeg]'` queues one experiment per value (a
    list each), `dvc exp run --run-all -j 2` runs them side by side on the queue's workers, each
    rerunning `distill` and `evaluate` only, and `dvc exp show` then has both with their metrics:
    no students when distillation is off, one when one is asked for. `compare` pairs an
    experiment with HEAD through dvc.api, names the changed key, and says in one line what a
    revision without outputs lacks (a run against itself: tests/integration/test_review.py).
    A sweep of a fusion knob reruns `fuse` and `final` too (tests/integration/test_pipeline.py asks DVC
    which stages it makes stale): the same queue, at twice the cost here."""
    project = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    out = run(["dvc", "exp", "run", "--queue", "-S", "distill.students=[],[eeg]"], project)
    assert out.count("Queued experiment") == 2, out
    # two DVC queue workers run them side by side; this call follows their logs until both end
    # (cheaper than polling `dvc queue status`: about 0.6 s of CPU per call here)
    out = run(["dvc", "exp", "run", "--run-all", "-j", "2"], project, timeout=400)
    assert ran(out) == {"distill", "evaluate"}, out
    status = run(["dvc", "queue", "status"], project)
    assert status.count("Success") == 2, status
    done = _finished_experiments(project)
    assert set(done) == {(), ("eeg",)}, done
    assert "students" not in done[()][1]  # off: distill still wrote every output DVC expects
    assert set(done[("eeg",)][1]["students"]) == {"eeg"}

    experiment = done[("eeg",)][0]
    diff = run(["dvc", "metrics", "diff", "HEAD", experiment, "--all"], project)
    assert "students.eeg.test.acc" in diff
    table = cli(["compare", "HEAD", experiment, "--md"], project).stdout
    assert table.startswith(f"| model | acc HEAD | acc {experiment} | delta |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # the experiment's own predictions: its one student, and HEAD's acoustic student nowhere
    assert {"eeg", "mel", "topo", "fusion", "fusion_trained", "student_eeg"} <= set(rows)
    assert "student_acoustic" not in rows
    assert all(" | +0.000 | " in rows[m] for m in ("eeg", "fusion", "student_eeg"))  # reran no training of theirs
    assert "distill.students: None -> ['eeg']" in table  # HEAD's default (null: eeg, acoustic)
    # both experiments against HEAD in one table (a sweep's review): a row each for the fused model,
    # their p-values one Holm family, and a forest plot
    other, forest = done[()][0], tmp_path / "forest.png"
    table = cli(["compare", "HEAD", experiment, other, "--md", "--plot", str(forest)], project).stdout
    assert table.startswith("| run | model | acc HEAD | acc run | delta | 95% CI | p | p_holm |")
    swept = [line for line in table.splitlines() if line.startswith(("| " + experiment + " |", "| " + other + " |"))]
    assert len(swept) == 2 and all(" | fusion | " in line and " | +0.000 | " in line for line in swept), table
    assert f"{other}: distill.students: None -> []" in table
    assert forest.read_bytes().startswith(b"\x89PNG")
    proc = cli(["compare", "HEAD~1", "HEAD"], project, code=2)
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: compare: cannot read reports/predictions.csv at HEAD~1") and \
        proc.stderr.count("\n") == 1, proc.stderr
