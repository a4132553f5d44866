"""The null audit on a copy of the shared tiny project: `audit.permute_labels=true` (as `dvc exp run
-S` sets it) permutes every label within subjects at ingest, DVC reruns ingest and every stage
after it, and the fused model lands at chance; the baselines' own permuted-label fits (every run)
pass the audit. The stages DVC would rerun run in one process (tests/dvc_project.run_stages: a
`dvc exp run` costs each stage an interpreter start-up; DVC's own experiments are run in
test_queue.py and test_experiments.py).

The tiny project tests one subject; two folds of kfold test all four, the fewest that give an
interval (stats.MIN_SUBJECTS_INTERVAL)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from dvc_project import built_project, copy_project, downstream, named_stage_commands, ran, run, run_stages

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]


def test_permuted_labels_land_the_fused_model_at_chance(tmp_path_factory, tmp_path):
    from dvc.utils.hydra import apply_overrides

    project = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    # what the check reads and no more: no final model, students or explanations
    apply_overrides(project / "params.yaml", ["audit.permute_labels=true", "split.scheme=kfold", "split.folds=2",
                                              "final.enabled=false", "distill.enabled=false", "explain.enabled=false"])
    assert "ingest" in ran(run(["dvc", "repro", "--dry"], project))  # the audit's params are ingest's
    stale = {"ingest"} | downstream(project, "ingest")
    assert {"baselines", "fuse", "evaluate"} <= stale
    run_stages(project, commands=[c for name, c in named_stage_commands(project).items() if name in stale])
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    audit = metrics["audit"]
    assert audit["permute_labels"] and metrics["n_subjects_test"] == 4
    assert audit["chance"] == pytest.approx(0.2)  # 5 classes, balanced within every subject
    low, high = metrics["fusion"]["test"]["acc_ci"]
    assert low <= audit["chance"] <= high, (low, high)
    assert audit["passed"] and set(audit["permuted"]) == set(metrics["baselines"])
    assert all(entry["test"]["acc_ci"] is not None for entry in audit["permuted"].values())
    summary = (project / "reports" / "summary.md").read_text()
    assert "**Labels permuted within subjects**" in summary and "Null audit (`audit`)" in summary
    assert "Not in this run: single-view students (`distill.enabled`) and explanations (`explain.enabled`)" in summary
    # labels moved within subjects only: each subject keeps its classes, trials their recordings
    permuted, original = (pd.read_csv(p / "data" / "interim" / "trials.csv")
                          for p in (project, built_project(tmp_path_factory)))
    assert (permuted.drop(columns="label") == original.drop(columns="label")).all().all()
    assert (permuted["label"] != original["label"]).any()
    counts = [t.groupby("subject")["label"].value_counts().sort_index() for t in (permuted, original)]
    assert counts[0].equals(counts[1])
