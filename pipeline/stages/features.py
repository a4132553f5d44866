"""features <modality>: the feature array of one view -> data/features/<modality>.npy.

The modality registry names the module that computes it (only that module is imported).
"""
from __future__ import annotations

import importlib

from pipeline import io
from pipeline.modalities import MODALITIES
from pipeline.params import Params


def run(params: Params, modality: str) -> None:
    x = importlib.import_module(MODALITIES[modality].features).compute(params)
    io.save_array(io.feature_path(modality), x)
    print(f"features {modality}: {x.shape}")
