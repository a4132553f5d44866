"""split: subject-disjoint train/val/test folds -> data/interim/split.json."""
from __future__ import annotations

from pipeline import io
from pipeline.dataset import load_manifest
from pipeline.params import Params
from pipeline.split import make_folds


def run(params: Params) -> None:
    folds = make_folds(load_manifest()["subject"].tolist(), params.split)
    io.write_json(io.SPLIT, {"scheme": params.split.scheme, "folds": folds})
    print(f"split: {params.split.scheme}, {len(folds)} fold(s); fold 0 "
          + ", ".join(f"{k}={len(v)} subjects" for k, v in folds[0].items()))
