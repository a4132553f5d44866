"""`dvc exp run` on a copy of the shared tiny project (tests/dvc_project.py): a knob of one view
reruns that view's stages and what reads them, never another view's."""
from __future__ import annotations

from pathlib import Path

import pytest

from dvc_project import built_project, copy_project, ran, run

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]


@pytest.fixture
def workspace(tmp_path_factory, tmp_path) -> Path:
    return copy_project(built_project(tmp_path_factory), tmp_path / "project")


def test_mel_key_reruns_no_eeg_or_topo_stage(workspace):
    out = run(["dvc", "exp", "run", "-S", "mel.fmin=60.0"], workspace)
    stages = ran(out)
    assert {"features_mel", "normalize@mel", "pretrain@mel"} <= stages
    assert not {s for s in stages if "eeg" in s or "topo" in s}
