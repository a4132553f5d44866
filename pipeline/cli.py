"""Command line: one Typer command per DVC stage (`python -m pipeline --help`).

Each command validates params.yaml first, so a bad value stops it before any work, with one
line naming the key and what is allowed, and a non-zero exit.
"""
from __future__ import annotations

import enum
import sys
from functools import wraps

import typer

from pipeline.errors import PipelineError
from pipeline.params import load_params

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multimodal (EEG, speech, topology) fusion pipeline; each command is a DVC stage.")


class Modality(str, enum.Enum):
    eeg = "eeg"
    mel = "mel"
    topo = "topo"


def _stage(fn):
    """Turn PipelineError into one line on stderr and exit code 2, with no traceback."""

    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return run


ParamsOption = typer.Option("params.yaml", "--params", help="params file to validate and use")


@app.command()
@_stage
def synthesize(params: str = ParamsOption):
    """Write the embedded default data (real FIF + WAV recordings and a manifest) -> data/synthetic/."""
    from pipeline import stages

    stages.synthesize(load_params(params))


@app.command()
@_stage
def ingest(params: str = ParamsOption):
    """Check every trial of the data source -> data/interim/manifest.csv (one row per good trial),
    classes.json and reports/ingest.json (what was dropped and why)."""
    from pipeline import stages

    stages.ingest(load_params(params))


@app.command()
@_stage
def split(params: str = ParamsOption):
    """Subject-disjoint train/val/test folds -> data/interim/split.json."""
    from pipeline import stages

    stages.split(load_params(params))


@app.command()
@_stage
def features(modality: Modality, params: str = ParamsOption):
    """Feature arrays of one view -> data/features/<modality>.npy."""
    from pipeline import stages

    stages.features(modality.value, load_params(params))


@app.command()
@_stage
def normalize(modality: Modality, params: str = ParamsOption):
    """Train-only standardisation statistics per fold -> data/features/normalizers/."""
    from pipeline import stages

    stages.normalize(modality.value, load_params(params))


@app.command()
@_stage
def pretrain(modality: Modality, params: str = ParamsOption):
    """Train one branch alone for every fold and seed -> models/<modality>/."""
    from pipeline.pretrain import run_pretrain

    run_pretrain(modality.value, load_params(params))


@app.command()
@_stage
def fuse(params: str = ParamsOption):
    """Fine-tune the fusion of pretrained branches for every fold and seed -> models/fusion/."""
    from pipeline.fuse import run_fuse

    run_fuse(load_params(params))


@app.command()
@_stage
def evaluate(params: str = ParamsOption):
    """Test metrics of every branch and the fusion -> reports/metrics.json."""
    from pipeline.evaluate import run_evaluate

    run_evaluate(load_params(params))
