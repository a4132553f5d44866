"""`python -m pipeline predict DATA --out FILE --model fold<k>_seed<s>`: a trained fused model of this
project labels recordings it has not seen.

DATA (a manifest CSV or a BIDS root) goes through the very code of the stages: ingest and the
feature stages run on it in a temporary folder with this project's params.yaml, the features are
standardised with the model's fold's train-only statistics, and the fused model's probabilities
come out as the fuse stage computes them. A view DATA lacks (no audio) is filled with the fold's
train mean, as the robustness check fills a missing view, and the row says so.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.params import Params, load_params

MODEL = re.compile(r"fold(\d+)_seed(\d+)")


@contextlib.contextmanager
def _inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def data_params(params: Params, data: Path, classes: list[str]) -> Params:
    """This project's params with DATA as the source: a BIDS root (dataset_description.json) or a
    manifest CSV; the model's classes; the primary task alone."""
    if (data / "dataset_description.json").is_file():
        source = {"source": "bids", "root": str(data.resolve())}
    elif data.suffix.lower() == ".csv" and data.is_file():
        source = {"source": "manifest", "root": str(data.resolve().parent), "manifest": data.name}
    else:
        raise PipelineError(f"predict: {data}: neither a manifest CSV nor a BIDS root (no dataset_description.json)")
    return params.model_copy(update={"data": params.data.model_copy(update={
        **source, "classes": tuple(classes), "tasks": ("label",), "task_classes": {}})})


def data_features(p: Params, views: list[str], work: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """DATA's kept trials and the features of each of `views` it has, computed by the ingest and
    feature stages' own bodies inside `work`."""
    from pipeline.dataset import available_modalities
    from pipeline.stages import features, ingest

    with _inside(work):
        ingest.run(p)
        have = available_modalities()
        x = {}
        for view in ["eeg", *(m for m in views if m != "eeg")]:  # topo reads the EEG features
            if view in have:
                features.run(p, view)
                x[view] = np.load(io.feature_path(view))
        return pd.read_csv(io.MANIFEST, dtype={"subject": str, "label": str}), x


def predict(data: str, out: str, model: str, params_path: str = "params.yaml") -> str:
    """Label DATA's trials with `model` (fold<k>_seed<s> of models/fusion/); writes `out` (one row a
    trial: subject, trial, label, predicted, p_<class>, filled) and returns what to print."""
    import torch

    from pipeline.dataset import load_features, load_trials
    from pipeline.folds import NormalizedRows, fold_data
    from pipeline.fusion import load_fusion
    from pipeline.fusion_training import output_temperature
    from pipeline.split import fold_indices
    from pipeline.stats import bootstrap_ci
    from pipeline.training import predict_proba

    match = MODEL.fullmatch(model)
    if not match:
        raise PipelineError(f"predict: --model {model!r} is not allowed; allowed: fold<k>_seed<s>, a model of "
                            "models/fusion/ (a final model on every subject is not built yet)")
    checkpoint = io.FUSION_DIR / f"{model}.pt"
    if not checkpoint.is_file():
        raise PipelineError(f"predict: {checkpoint}: no such model; run `dvc repro` (models/fusion/ holds "
                            f"{', '.join(sorted(f.stem for f in io.FUSION_DIR.glob('*.pt'))) or 'none'})")
    fold = int(match.group(1))
    fused = load_fusion(checkpoint)
    views = list(fused.branches)
    trials = load_trials()
    p = data_params(load_params(params_path), Path(data), trials.classes)
    torch.set_num_threads(p.compute.torch_threads)  # as the fuse stage's runs: the same last bits
    with tempfile.TemporaryDirectory() as tmp:
        table, x = data_features(p, views, Path(tmp).resolve())
    train = fold_indices(trials.subjects, trials.folds[fold])["train"]
    inputs, filled = {}, [m for m in views if m not in x]
    for m in views:
        stats = np.load(io.normalizer_path(m))
        if m in x:
            inputs[m] = NormalizedRows(x[m], stats["mean"][fold], stats["std"][fold])[:]
        else:  # the view DATA lacks: the fold's train mean, as the robustness check fills it
            mean = fold_data({m: load_features(m, mmap=True)}, trials, fold).inputs[m].subset(train).mean_row()
            inputs[m] = mean.expand(len(table), *mean.shape[1:])
    probs = predict_proba(fused, inputs, torch.device("cpu"), output_temperature(fused, fused.params))
    probs = probs[:, :len(trials.classes)]
    rows = pd.DataFrame({"subject": table["subject"], "trial": np.arange(len(table)), "label": table["label"],
                         "predicted": np.asarray(trials.classes)[probs.argmax(1)]})
    rows = rows.join(pd.DataFrame(probs, columns=[f"p_{c}" for c in trials.classes]))
    rows["filled"] = ";".join(filled)
    io.save_csv(out, rows)
    right = (rows["label"] == rows["predicted"]).groupby(rows["subject"]).mean()
    ci = bootstrap_ci(right.to_list(), p.split.seed)
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return (f"predict: {len(rows)} trials of {rows['subject'].nunique()} subject(s) -> {out}; accuracy "
            f"{right.mean():.3f}{interval} (mean over subjects, 95% bootstrap interval)"
            + (f"; views filled with the fold's train mean: {', '.join(filled)}" if filled else ""))
