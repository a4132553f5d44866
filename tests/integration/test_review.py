"""Review without the author's cache: a reviewer's clone has the revision's dvc.lock but none of
its outputs until `dvc pull` from the project's DVC remote (README: Review)."""
from __future__ import annotations

import pytest

from dvc_project import built_project, cli, copy_project, run

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]


def test_compare_in_a_clone_after_dvc_pull_from_a_shared_remote(tmp_path_factory, tmp_path):
    author = copy_project(built_project(tmp_path_factory), tmp_path / "author")
    reviewer = tmp_path / "reviewer"
    run(["git", "clone", "-q", str(author), str(reviewer)], tmp_path)
    proc = cli(["compare", "HEAD", "HEAD"], reviewer, code=2)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "reports/predictions.csv at HEAD is a DVC output that is not in this clone's cache" in proc.stderr
    assert "`dvc pull`" in proc.stderr and "`dvc repro` at HEAD" in proc.stderr

    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], author)  # a local-directory remote
    run(["git", "commit", "-qam", "shared DVC remote"], author)
    run(["dvc", "push"], author)
    run(["git", "pull", "-q"], reviewer)
    run(["dvc", "pull"], reviewer)
    table = cli(["compare", "HEAD", "HEAD"], reviewer).stdout
    assert "params that differ: none" in table
    assert all(" +0.000 " in line for line in table.splitlines()[1:6])
    assert (reviewer / "models" / "fusion" / "probabilities.npy").read_bytes() == \
        (author / "models" / "fusion" / "probabilities.npy").read_bytes()
