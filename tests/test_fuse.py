"""pipeline/fuse.py: modality ablation and the per-epoch fusion diagnostics."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pipeline.fuse import modality_ablation
from pipeline.fusion import build_fusion
from pipeline.nets import BranchClassifier

SHAPES = {"eeg": (4, 64), "topo": (2, 8, 8)}


def _model(params):
    torch.manual_seed(0)
    fp = dataclasses.replace(params.fusion, type="concat", modalities=("eeg", "topo"), hidden=8, dropout=0.0)
    branches = {m: BranchClassifier(m, SHAPES[m], 3, 6, 0.0) for m in SHAPES}
    return build_fusion(branches, 3, fp)


def test_ablating_an_ignored_modality_costs_nothing(params):
    model = _model(params)
    first = model.head.mlp[1]  # Linear over [eeg embedding (6), topo embedding (6)]
    with torch.no_grad():
        first.weight[:, 6:] = 0.0  # the head ignores topo entirely
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(40, *s, generator=g) for m, s in SHAPES.items()}
    model.eval()
    with torch.no_grad():
        labels = model(x).argmax(1).numpy()  # labels the model gets 100 % right
    fill = {m: v.mean(dim=0, keepdim=True) for m, v in x.items()}
    drops = modality_ablation(model, x, labels, fill, torch.device("cpu"), 1.0)
    assert drops["topo"] == 0.0
    assert drops["eeg"] > 0.2  # the modality it relies on does cost accuracy
    assert set(drops) == {"eeg", "topo"}
    assert np.isfinite(list(drops.values())).all()
