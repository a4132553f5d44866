"""Portable numerics end to end: the shared tiny project (tests/dvc_project.py), reproduced on
this machine with whatever instruction set it has, gives the same bits as every stage rerun in
processes that see a second machine: an AVX2 CPU without AVX-512, as each library's run-time
dispatch is told from outside (not through pipeline/numerics.py, whose pins this checks). The
same comparison without portable numerics differs in most stages here (README: Portable numerics)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from dvc_project import ENV, built_project, copy_project, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.shared_project]

# What the libraries find on an AMD Zen 2 (AVX2 + FMA, no AVX-512), set before they load.
SECOND_MACHINE = {
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Zen",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NUMBA_CPU_NAME": "znver2",
}


def _stage_commands(project) -> list[list[str]]:
    """Every stage's command, in dvc.yaml's order (each stage after the ones it reads)."""
    commands = []
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values():
        if "foreach" in stage:
            commands += [stage["do"]["cmd"].replace("${item}", item).split() for item in stage["foreach"]]
        else:
            commands.append(stage["cmd"].split())
    return commands


def test_every_output_is_byte_identical_on_a_second_machine(tmp_path_factory, tmp_path):
    project = built_project(tmp_path_factory)
    second = copy_project(project, tmp_path / "second")
    env = {**ENV, **SECOND_MACHINE}
    probe = subprocess.run([sys.executable, "-c", "from numpy.core._multiarray_umath import __cpu_features__ as f;"
                            "import torch; print(f['AVX512F'], torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["False", "AVX2"]  # the simulated machine has no AVX-512
    commands = _stage_commands(second)
    assert len(commands) == 20 and all(command[:3] == ["python", "-m", "pipeline"] for command in commands)
    # every stage as its command runs it (cli.run_stage: params, pins, the stage), in one process
    # to spare 20 interpreter start-ups; the first stage pins before numpy or torch load
    script = ("import json, sys\nfrom pipeline.cli import run_stage\n"
              "for command in json.loads(sys.argv[1]):\n    run_stage(command[3], 'params.yaml', *command[4:])")
    run([sys.executable, "-c", script, json.dumps(commands)], second, env)
    # DVC hashes every output again and finds each equal to the first machine's dvc.lock
    assert json.loads(run(["dvc", "status", "--json"], second, env)) == {}
    assert (second / "reports" / "metrics.json").read_bytes() == (project / "reports" / "metrics.json").read_bytes()
    # the final model (off in the shared project): trained here, then on the second machine, to the same bytes
    set_params(second, {"final": {"enabled": True}})
    final = "from pipeline.cli import run_stage\nrun_stage('final', 'params.yaml')"
    run([sys.executable, "-c", final], second)
    here = {f.name: f.read_bytes() for f in (second / "models" / "final").iterdir()}
    assert "fusion.pt" in here
    run([sys.executable, "-c", final], second, env)
    assert {f.name: f.read_bytes() for f in (second / "models" / "final").iterdir()} == here
