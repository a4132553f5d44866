"""Output locations and atomic writes.

Every stage writes to a temporary sibling and renames it into place, so a stage killed mid-run
leaves the previous output intact (or none), never a half-written file DVC would trust.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SYNTHETIC = Path("data/synthetic")
INTERIM = Path("data/interim")
FEATURES = Path("data/features")
MODELS = Path("models")
REPORTS = Path("reports")

TRIALS = INTERIM / "trials.csv"  # every trial ingest checked
MANIFEST = INTERIM / "manifest.csv"  # the trials every view keeps (features_eeg: those autoreject does not drop)
CLASSES = INTERIM / "classes.json"
TASKS = INTERIM / "tasks.json"  # secondary task -> its classes ({}: the primary task alone)
SPLIT = INTERIM / "split.json"
INGEST_REPORT = Path("reports/ingest.json")
MEL_REPORT = Path("reports/mel_clips.json")
ARTIFACTS_REPORT = Path("reports/artifacts.json")  # what ICA + ICLabel and autoreject did (features_eeg)


def feature_path(modality: str) -> Path:
    return FEATURES / f"{modality}.npy"


def normalizer_path(modality: str) -> Path:
    return FEATURES / "normalizers" / f"{modality}.npz"


def branch_dir(modality: str) -> Path:
    return MODELS / modality


EEG_CHANNELS = FEATURES / "eeg_channels.json"  # the EEG view's channel names and positions (features_eeg)
FUSION_DIR = MODELS / "fusion"
DISTILL_DIR = MODELS / "distill"  # a folder per student view
FINAL_DIR = MODELS / "final"  # the model on every subject (a DVC artifact)


def student_dir(view: str) -> Path:
    return DISTILL_DIR / view

BASELINES_DIR = MODELS / "baselines"
FIGURES = REPORTS / "figures"
PREDICTIONS = REPORTS / "predictions.csv"
EXPLAIN = REPORTS / "explain.json"  # the explain stage's numbers; explain.md words them
EXPLAIN_FIGURES = FIGURES / "explain"
COST = REPORTS / "cost.json"  # what the fusion method cost (fuse), for `dvc exp show`; outside dvc.lock
EEG_COST = REPORTS / "eeg_cost.json"  # cleaning's seconds per recording (features_eeg); outside dvc.lock


def live_dir(stage: str) -> Path:
    """dvclive folder of a training stage (curves for `dvc plots`, last values for `dvc exp show`)."""
    return REPORTS / "live" / stage


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds.

    Works for files and directories: whatever the block creates at the temporary path replaces
    `path` whole. Temporary siblings left by an earlier run that was killed are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def save_array(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_npz(path: str | Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


CURVES = ("train_loss", "train_acc", "val_loss", "val_acc")


def log_curves(live_dir, histories: dict[str, list[dict]]) -> None:
    """Per-epoch training curves through dvclive, averaged over the runs (folds x seeds) that
    reached each epoch, so `dvc plots show` draws one curve per metric and `dvc exp show` gets
    the last epoch's means. Per-run curves stay in the stage's history.json."""
    from dvclive import Live  # here: 0.1-0.6 s of start-up, for the end of a training stage

    with atomic_path(live_dir) as tmp:
        with Live(str(tmp), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for epoch in range(max((len(h) for h in histories.values()), default=0)):
                rows = [h[epoch] for h in histories.values() if len(h) > epoch]
                for key in CURVES:
                    live.log_metric(key, float(np.mean([r[key] for r in rows])))
                live.next_step()
        (tmp / "plots" / "metrics").mkdir(parents=True, exist_ok=True)  # DVC's declared output, also with no runs
