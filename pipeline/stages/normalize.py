"""normalize <modality>: train-only statistics per fold -> data/features/normalizers/<m>.npz,
and what the normalised inputs look like in each part (.json)."""
from __future__ import annotations

from pipeline import io
from pipeline.dataset import NO_AUDIO, load_features, load_manifest, skip_note
from pipeline.modalities import MODALITIES
from pipeline.normalize import fold_normalizers
from pipeline.params import Params


def run(params: Params, modality: str) -> None:
    path = io.normalizer_path(modality)
    if skip_note("normalize", modality):
        io.save_npz(path)
        io.write_json(path.with_suffix(".json"), {"skipped": NO_AUDIO})
        return
    subjects, folds = load_manifest()["subject"].to_numpy(), io.read_json(io.SPLIT)["folds"]  # no labels needed
    means, stds, summary = fold_normalizers(load_features(modality), subjects, folds, MODALITIES[modality].norm_axes)
    io.save_npz(path, mean=means, std=stds)
    io.write_json(path.with_suffix(".json"), summary)
