"""Shared fixtures of the unit suite."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # The unit tests train models of a few hundred parameters: torch's intra-op thread pool
    # costs far more than it gains on them (about 20x slower with 2 threads on 2 cores).
    import torch

    torch.set_num_threads(1)
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def root() -> Path:
    """The project root (where params.yaml lives)."""
    return ROOT


@pytest.fixture(scope="session")
def params() -> Params:
    """The project's real params.yaml, typed and validated."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shared folder of real EEG recordings (read in place, never copied)."""
    if not (REALDATA / "eeg").is_dir():
        pytest.skip(f"real EEG recordings not found at {REALDATA / 'eeg'} "
                    "(the shared realdata folder is not checked out next to the project)")
    return REALDATA
