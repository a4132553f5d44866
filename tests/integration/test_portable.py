"""Portable numerics end to end: the shared tiny project (tests/dvc_project.py), built on this
machine with whatever instruction set it has, gives the same bits as every stage rerun in
processes that see a second machine: an AVX2 CPU without AVX-512, as each library's run-time
dispatch is told from outside (not through pipeline/numerics.py, whose pins this checks). The
same comparison without portable numerics differs in most stages here (README: Portable numerics)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dvc_project import ENV, built_project, copy_project, run, run_stages, stage_commands

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


def test_every_output_is_byte_identical_on_a_second_machine(tmp_path_factory, tmp_path):
    project = built_project(tmp_path_factory)
    second = copy_project(project, tmp_path / "second")
    env = {**ENV, **SECOND_MACHINE}
    probe = subprocess.run([sys.executable, "-c", "from numpy.core._multiarray_umath import __cpu_features__ as f;"
                            "import torch; print(f['AVX512F'], torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["False", "AVX2"]  # the simulated machine has no AVX-512
    commands = stage_commands(second)
    assert len(commands) == 21
    run_stages(second, env, commands)  # every stage, in one process that sees the second machine
    assert (second / "models" / "final" / "fusion.pt").is_file()  # the final model trained too
    # DVC hashes every output again and finds each equal to the first machine's dvc.lock
    assert json.loads(run(["dvc", "status", "--json"], second, env)) == {}
    assert (second / "reports" / "metrics.json").read_bytes() == (project / "reports" / "metrics.json").read_bytes()


def test_artifact_cleaning_is_byte_identical_on_a_second_machine(tmp_path_factory, tmp_path):
    """eeg.artifacts.ica and autoreject on the shared tiny project's recordings: the EEG features,
    the manifest of the trials kept and the report (ICLabel's labels, autoreject's verdicts) of
    this machine and of the simulated second one are the same bytes."""
    from dvc_project import set_params

    outputs = {}
    for name, env in (("here", None), ("second", {**ENV, **SECOND_MACHINE})):  # here: in this process
        project = copy_project(built_project(tmp_path_factory), tmp_path / name)
        set_params(project, {"eeg": {"artifacts": {"ica": True, "autoreject": True}}})
        run_stages(project, env, [["python", "-m", "pipeline", "features", "eeg"]])
        outputs[name] = [(project / path).read_bytes() for path in
                         ("data/features/eeg.npy", "data/interim/manifest.csv", "reports/artifacts.json")]
        report = json.loads(outputs[name][2])
        assert report["ica"] is True and sum(report["trials_by_status"].values()) == 40
    assert outputs["here"] == outputs["second"]
