"""What a stage process loads before its work (issue 40): no stage loads torch (1.5 s here); the
training stages hand their runs to workers by name (pipeline.parallel.stream) and only the
workers load it; final, distill and explain, off by default, do not either. The
training stages load none of the other heavy libraries at start either, only where a function
uses them (dvclive: the curves at the end; scipy.stats: the selection tests; scikit-learn, MNE
and scipy.signal: explain's Haufe patterns)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING = ("pretrain", "fuse", "distill", "explain")
WITHOUT_TORCH = ("synthesize", "ingest", "split", "features", "normalize", "baselines", *TRAINING, "evaluate", "final")
PROBE = """
import json, sys
import pipeline.cli
first = {}
for stage in sys.argv[2:]:
    __import__(f"pipeline.stages.{stage}")
    for module in sys.argv[1].split(","):
        if module in sys.modules:
            first.setdefault(module, stage)
print(json.dumps(first))
"""


def _first_stage_loading(modules: tuple[str, ...], stages: tuple[str, ...]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, ",".join(modules), *stages], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_stages_import_no_torch_before_their_work():
    first = _first_stage_loading(("torch", "dvclive"), WITHOUT_TORCH)
    assert first == {}, f"the first stage module that loads it: {first}"


def test_training_stages_import_none_of_the_heavy_libraries_before_their_work():
    first = _first_stage_loading(("torch", "captum", "dvclive", "scipy.stats", "scipy.signal", "sklearn", "mne"), TRAINING)
    assert first == {}, f"the first stage module that loads each: {first}"


def test_a_training_run_named_by_module_is_imported_where_it_runs():
    from pipeline.parallel import task_function
    from pipeline.pretraining import branch_run

    assert task_function("pipeline.pretraining:branch_run") is branch_run
    assert task_function(len) is len


@pytest.mark.parametrize("stage,says,wrote", [
    ("final", "final.enabled is false", ("models/final/meta.json", {"enabled": False})),
    ("distill", "no students", ("models/distill/teachers.json", {})),
    ("explain", "0 run(s) explained", ("reports/explain.json", {"enabled": False})),
])
def test_the_stages_off_by_default_run_without_torch_or_data(tmp_path, stage, says, wrote):
    """final, distill and explain are off in params.yaml (an experiment skips them; `make release`
    turns them on): then each writes what DVC expects in a second, reading no data, without torch."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", stage], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert says in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.params" in imported and "torch" not in imported
    assert json.loads((tmp_path / wrote[0]).read_text()) == wrote[1]
