"""Portable numerics (pipeline/numerics.py): the pins reach the libraries, a process that loaded
them unpinned is caught, and the suite itself computes pinned."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.numerics import PORTABLE_ENV, X86_64, unpinned

pytestmark = pytest.mark.skipif(not X86_64, reason="the pins name x86-64 instruction sets")
UNPINNED_ENV = {key: value for key, value in os.environ.items() if key not in PORTABLE_ENV}


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_the_test_process_computes_pinned():
    assert unpinned() == []


def test_pinning_before_import_caps_numpy_and_torch():
    proc = _python("from pipeline.numerics import pin_cpu_dispatch, unpinned\n"
                   "pin_cpu_dispatch()\n"
                   "import numpy, torch\n"
                   "from numpy.core._multiarray_umath import __cpu_features__ as f\n"
                   "print(unpinned(), f['AVX512F'], f['AVX2'], torch.backends.cpu.get_cpu_capability())",
                   UNPINNED_ENV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False", "True", "AVX2"]


def test_pinning_after_numpy_loaded_is_refused():
    proc = _python("import numpy\nfrom pipeline.numerics import pin_cpu_dispatch\npin_cpu_dispatch()", UNPINNED_ENV)
    assert proc.returncode != 0 and "numpy already loaded" in proc.stderr


def test_a_worker_without_the_pins_stops_the_stage_with_one_line():
    """A process started without the environment (a remote Dask worker, say) is caught by the
    task wrapper of parallel.stream before it computes anything."""
    code = ("from pipeline.parallel import stream\n"
            "from pipeline.params import ComputeParams\n"
            "list(stream(abs, [(-1,)], ComputeParams(n_jobs=1), 'check', 'task'))")
    proc = _python(code, UNPINNED_ENV)
    assert proc.returncode != 0
    assert "portable numerics are not in force in worker process" in proc.stderr
    assert "ATEN_CPU_CAPABILITY" in proc.stderr and "python -m pipeline portable-env" in proc.stderr
    off = code.replace("ComputeParams(n_jobs=1)", "ComputeParams(n_jobs=1, portable_numerics=False)")
    assert _python(off + "\nprint('ran')", UNPINNED_ENV).stdout.strip() == "ran"


def test_portable_env_command_prints_what_workers_need(root):
    out = subprocess.run([sys.executable, "-m", "pipeline", "portable-env"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    assert dict(line.split("=", 1) for line in out.splitlines()) == PORTABLE_ENV
    assert " " not in out  # usable as `env $(python -m pipeline portable-env) dask worker ...`


@pytest.mark.parametrize("value", ["yes", 1])
def test_portable_numerics_must_be_a_boolean(root, tmp_path, value):
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["compute"]["portable_numerics"] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "split", "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "compute.portable_numerics" in proc.stderr
