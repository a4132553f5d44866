"""Portable numerics: the same bits from the same params on any x86-64 machine.

numpy, torch (ATen's vector kernels, oneDNN's convolutions) and OpenBLAS pick their kernels by
the instruction set they find at run time. AVX-512 kernels round differently from AVX2 ones
(numpy's exp and log, oneDNN's convolutions, OpenBLAS's GEMM), and training turns those last
bits into other accuracies. `pin_cpu_dispatch` caps every library at AVX2 with FMA (Intel
Haswell, 2013, and every AMD Zen have it) through the environment variables each reads when it
loads, so it runs before any of them is imported: the CLI calls it before a stage's module is
imported, and worker processes (loky, a Dask LocalCluster) inherit the environment.
`check_cpu_dispatch` reads the libraries' live state in a worker, so a process that loaded them
first (a remote Dask worker started without these variables) stops with a clear error instead
of computing other bits.

Which variable changes what was measured with the pinned builds (README: Portable numerics):
numpy's AVX-512 loops change the mel features, OpenBLAS's SkylakeX/Cooperlake kernels the mel
features and the baselines, oneDNN's AVX-512 convolutions every branch; torch's AVX-512 kernels
give other sigmoid, log_softmax and pow bits than its AVX2 ones. MKL (`MKL_CBWR`) and numba
(`NUMBA_CPU_NAME`) are left alone: no stage's output changed with them.
"""
from __future__ import annotations

import os
import platform
import sys

from pipeline.errors import PipelineError

# numpy 1.26's dispatched AVX-512 targets (naming one it does not dispatch is an ImportWarning);
# commas, not spaces, so that `env $(python -m pipeline portable-env) CMD` works
_NUMPY_AVX512 = "AVX512F,AVX512CD,AVX512_KNL,AVX512_KNM,AVX512_SKX,AVX512_CLX,AVX512_CNL,AVX512_ICL"

PORTABLE_ENV = {
    "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512,  # numpy's universal intrinsics and SVML loops
    "ATEN_CPU_CAPABILITY": "avx2",              # torch's vectorised CPU kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",               # torch's oneDNN (convolutions, linear layers)
    "OPENBLAS_CORETYPE": "Haswell",             # OpenBLAS of numpy and of scipy (AVX2 + FMA kernels)
}

_LIBRARIES = ("numpy", "torch", "scipy")
# The pins name x86-64 instruction sets; elsewhere (ARM: Apple silicon, Graviton) nothing is pinned
# and results are the same from run to run on one machine, not across machines.
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


class DispatchError(PipelineError):
    """A process would compute with other kernels than portable numerics promise."""


def _unset() -> list[str]:
    """The PORTABLE_ENV variables this process's environment does not hold as pinned."""
    return [key for key, value in PORTABLE_ENV.items() if os.environ.get(key) != value]


def pin_cpu_dispatch() -> None:
    """Set PORTABLE_ENV in this process (and so in every process it starts). Must run before
    numpy, scipy or torch load: they read these variables once, when they load. A no-op off x86-64."""
    if not X86_64:
        return
    loaded = [name for name in _LIBRARIES if name in sys.modules]
    if loaded and _unset():
        raise DispatchError(f"portable numerics: {', '.join(loaded)} already loaded in this process; "
                            "pin_cpu_dispatch() must run before them")
    os.environ.update(PORTABLE_ENV)


def unpinned() -> list[str]:
    """What in this process computes beyond AVX2 (empty when portable): the environment
    variables not set as PORTABLE_ENV, and the live state of numpy and torch if loaded."""
    if not X86_64:
        return []
    problems = [f"{key} is not {PORTABLE_ENV[key]}" for key in _unset()]
    if "numpy" in sys.modules:
        from numpy.core._multiarray_umath import __cpu_features__

        if __cpu_features__.get("AVX512F"):
            problems.append("numpy dispatches AVX-512")
    if "torch" in sys.modules:
        capability = sys.modules["torch"].backends.cpu.get_cpu_capability()
        if capability.startswith("AVX512"):
            problems.append(f"torch dispatches {capability}")
    return problems


def check_cpu_dispatch(where: str) -> None:
    """Raise DispatchError naming what is not pinned in this process (a worker, say)."""
    problems = unpinned()
    if problems:
        raise DispatchError(
            f"portable numerics are not in force in {where} ({'; '.join(problems)}): start it with "
            "the environment of `python -m pipeline portable-env`, or set compute.portable_numerics: false")
