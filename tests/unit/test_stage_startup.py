"""What a stage process loads before its work (issue 40): the stages that train nothing never
load torch, and the final stage with `final.enabled: false` (the default) not either."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_TORCH = ("synthesize", "ingest", "split", "features", "normalize", "baselines", "evaluate", "final")
PROBE = """
import json, sys
import pipeline.cli
first = {}
for stage in sys.argv[1:]:
    __import__(f"pipeline.stages.{stage}")
    for module in ("torch", "dvclive"):
        if module in sys.modules:
            first.setdefault(module, stage)
print(json.dumps(first))
"""


def test_stages_that_train_nothing_import_no_torch():
    out = subprocess.run([sys.executable, "-c", PROBE, *WITHOUT_TORCH], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == {}, f"the first stage module that loads it: {out.stdout}"


def test_a_disabled_final_stage_runs_without_torch(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", "final"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert "final.enabled is false" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.params" in imported and "torch" not in imported
    assert json.loads((tmp_path / "models" / "final" / "meta.json").read_text()) == {"enabled": False}
