"""Command line: one Typer command per DVC stage, then the tools run by hand (`predict`,
`compare`, ...; `python -m pipeline --help`).

Each command validates params.yaml first, so a bad value stops it before any work, with one
line naming the key and what is allowed, and exit code 2. The stage's module
(pipeline/stages/<name>.py) is imported only then, so a stage loads only what it uses.
"""
from __future__ import annotations

import contextlib
import enum
import importlib
import sys
from pathlib import Path

import typer

from pipeline.errors import PipelineError
from pipeline.modalities import NAMES
from pipeline.numerics import PORTABLE_ENV, pin_cpu_dispatch
from pipeline.params import load_params

# the commands that are not stages of dvc.yaml, run by hand (tests/unit/test_cli.py)
TOOLS = ("predict", "export", "portable-env", "speech-study", "docs", "profile", "coverage", "compare")
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multimodal (EEG, speech, topology) fusion pipeline. The commands up to `explain` are "
                       f"the stages of dvc.yaml (`dvc repro` runs them); {', '.join(f'`{t}`' for t in TOOLS)} "
                       "are tools.")

Modality = enum.Enum("Modality", {m: m for m in NAMES}, type=str)
ParamsOption = typer.Option("params.yaml", "--params", help="params file to validate and use")


@contextlib.contextmanager
def one_line_errors():
    """A PipelineError becomes one line on stderr and exit code 2, with no traceback."""
    try:
        yield
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


def run_stage(name: str, params_path: str, *args: str) -> None:
    """Validate params, pin the CPU dispatch (before numpy or torch load), then run
    pipeline.stages.<name>."""
    with one_line_errors():
        params = load_params(params_path)
        if params.compute.portable_numerics:
            pin_cpu_dispatch()
        importlib.import_module(f"pipeline.stages.{name}").run(params, *args)


@app.command()
def synthesize(params: str = ParamsOption):
    """Write the embedded default data (real FIF + WAV recordings and a manifest) -> data/synthetic/."""
    run_stage("synthesize", params)


@app.command()
def ingest(params: str = ParamsOption):
    """Check every trial of the data source -> data/interim/trials.csv (one row per good trial),
    classes.json and reports/ingest.json (what was dropped and why)."""
    run_stage("ingest", params)


@app.command()
def split(params: str = ParamsOption):
    """Subject-disjoint train/val/test folds -> data/interim/split.json."""
    run_stage("split", params)


@app.command()
def features(modality: Modality, params: str = ParamsOption):
    """Feature arrays of one view -> data/features/<modality>.npy (eeg: also data/interim/manifest.csv,
    the trials artifact cleaning keeps, which every other view reads)."""
    run_stage("features", params, modality.value)


@app.command()
def normalize(modality: Modality, params: str = ParamsOption):
    """Train-only standardisation statistics per fold -> data/features/normalizers/."""
    run_stage("normalize", params, modality.value)


@app.command()
def pretrain(modality: Modality, params: str = ParamsOption):
    """Train one branch alone for every fold and seed -> models/<modality>/."""
    run_stage("pretrain", params, modality.value)


@app.command()
def fuse(params: str = ParamsOption):
    """Fine-tune the fusion of pretrained branches for every fold and seed -> models/fusion/."""
    run_stage("fuse", params)


@app.command()
def distill(params: str = ParamsOption):
    """Single-view students of the fused model for every fold and seed -> models/distill/."""
    run_stage("distill", params)


@app.command()
def baselines(params: str = ParamsOption):
    """Logistic regression on handcrafted features of every view, per fold -> models/baselines/."""
    run_stage("baselines", params)


@app.command()
def final(params: str = ParamsOption):
    """Train every branch and the fusion on all subjects -> models/final/ (the model to use)."""
    run_stage("final", params)


@app.command()
def evaluate(params: str = ParamsOption):
    """Test metrics of every branch and the fusion -> reports/metrics.json."""
    run_stage("evaluate", params)


@app.command()
def explain(params: str = ParamsOption):
    """Why the models decide: Haufe patterns, Integrated Gradients, view shares -> reports/explain.json,
    reports/explain.md and reports/figures/explain/."""
    run_stage("explain", params)


@app.command("predict")
def predict_command(data: str = typer.Argument(..., help="a manifest CSV or a BIDS root (labels optional)"),
                    out: str = typer.Option(..., "--out", help="the CSV to write: one row a trial"),
                    model: str = typer.Option("final", "--model", help="final (models/final/) or fold<k>_seed<s> "
                                              "(a model of models/fusion/)"),
                    rev: str = typer.Option(None, "--rev", help="the final model of another git revision or DVC "
                                            "experiment (read through dvc.api)"),
                    params: str = ParamsOption):
    """Label new recordings with a trained fused model of this project (same feature code, the
    model's fold's normalisation) -> a CSV of predictions and class probabilities."""
    with one_line_errors():
        if load_params(params).compute.portable_numerics:
            pin_cpu_dispatch()
        typer.echo(importlib.import_module("pipeline.predict").predict(data, out, model, params, rev))


@app.command("export")
def export_command(fmt: str = typer.Option("onnx", "--format", help="onnx"), params: str = ParamsOption):
    """The final fused network (models/final/) as ONNX -> models/final.onnx, checked with onnxruntime."""
    with one_line_errors():
        if load_params(params).compute.portable_numerics:
            pin_cpu_dispatch()
        typer.echo(importlib.import_module("pipeline.export").export(fmt))


@app.command("portable-env")
def portable_env():
    """The environment portable numerics set (KEY=VALUE lines): what remote Dask workers need,
    e.g. `env $(python -m pipeline portable-env) dask worker tcp://...`."""
    typer.echo("".join(f"{key}={value}\n" for key, value in PORTABLE_ENV.items()), nl=False)


@app.command("speech-study")
def speech_study(out: str = typer.Argument(..., help="folder for the clips, clips.csv and manifest.csv"),
                 eeg: str = typer.Option("../shared/realdata/eeg/test_raw.set", help="the real EEG recording to pair with"),
                 voices: int = typer.Option(8, help="espeak-ng voices, one subject each"),
                 first_voice: int = typer.Option(0, help="start at this voice of the generator's list "
                                                 "(disjoint ranges: studies with no speaker in common)"),
                 clips_per_class: int = typer.Option(12, help="clips per class and voice"),
                 seed: int = typer.Option(0, help="prosody jitter, sentences and EEG windows")):
    """Write a real-speech study (espeak-ng voices as subjects, five prosody-acted classes, each
    clip paired with a class-free window of a real EEG recording) for `data.source: manifest`."""
    studies = importlib.import_module("pipeline.data.studies")  # by name, as compare: no stage depends on it
    clips = studies.write_speech_clips(Path(out), voices, clips_per_class, seed=seed, first_voice=first_voice)
    typer.echo(studies.write_speech_study(clips, Path(eeg), Path(out), seed=seed))


@app.command()
def docs():
    """Regenerate docs/params.md and docs/metrics.md from the code (params.py, params.yaml,
    dvc.yaml and pipeline/metrics_shape.py); tests/unit/test_reference.py fails when they are stale."""
    with one_line_errors():  # params.yaml validated first: the reference documents a valid file
        if load_params().compute.portable_numerics:
            pin_cpu_dispatch()
        # imported by name, as compare: no DVC stage runs or depends on it
        for path in importlib.import_module("pipeline.reference").write_docs():
            typer.echo(f"wrote {path}")


@app.command("profile")
def profile_command(out: str = typer.Option("", help="also write the rows as JSON to this file"),
                    project: str = typer.Option(".", help="the project to profile (e.g. a checkout of an older revision)")):
    """Force a default run stage by stage, each as DVC runs it, and print per stage its wall and
    CPU time, start-up before work (imports), whether torch loads at start, and peak RSS."""
    with one_line_errors():
        profiler = importlib.import_module("pipeline.profile")
        rows = profiler.profile(Path(project))
        if out:
            profiler.write(rows, Path(out))
        typer.echo(profiler.table(rows))


@app.command()
def coverage(studies: int = typer.Option(4000, help="simulated studies per cell"),
             resamples: int = typer.Option(2000, help="bootstrap resamples per study")):
    """Print the coverage table of docs/statistics.md: how often the 95% interval of every metric
    (stats.subject_interval) holds the true mean, per population and number of test subjects."""
    typer.echo(importlib.import_module("pipeline.coverage").coverage_table(studies, resamples))


@app.command()
def compare(ref: str = typer.Argument("HEAD", help="the reference: a git revision, DVC experiment name or 'workspace'"),
            runs: list[str] = typer.Argument(None, help="runs to pair against it (default: workspace)"),
            md: bool = typer.Option(False, "--md", help="a Markdown table, for a pull request"),
            plot: str = typer.Option(None, "--plot", help="also draw a forest plot of the rows to this PNG"),
            model: list[str] = typer.Option(None, "--model", help="models to keep (default: every model for one "
                                                                   "run, fusion for several); repeatable")):
    """Runs paired against a reference over the same test subjects, model by model: acc, delta,
    its 95% interval over subjects, p-value and Holm-corrected p across the rows, UA beside it, and
    the params that differ (read through dvc.api, no checkout)."""
    with one_line_errors():  # imported by name, as the stages are: no DVC stage runs or depends on it
        typer.echo(importlib.import_module("pipeline.compare").compare(ref, runs or ["workspace"], md, plot,
                                                                       model or None), nl=False)
