"""final: the model to use, trained on every subject -> models/final/ (a DVC artifact, `dvc.yaml`
artifacts): every fused view's branch pretrained and the fusion fine-tuned as pretrain and fuse
do, with `split.val_subjects` subjects (drawn as the splits draw them) held out for early stopping
and no test part, under the first seed of train.seeds. Self-describing: fusion.pt (rebuilds
without params.yaml), each view's normaliser fitted on its train trials and its train mean (what
fills a missing view), and meta.json (views, classes, the params, the EEG preprocessing its
recordings went through, who trained). With
`final.enabled: false` (the default: experiments do not retrain it) it writes only meta.json
saying so, without loading torch.
"""
from __future__ import annotations

import io as bytes_io
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.dataset import NO_AUDIO, Trials, available_modalities, load_features, load_manifest, load_trials
from pipeline.params import Params


def final_run(params: Params, trials: Trials, root: str, run_index: int) -> tuple[bytes, dict, dict, list[dict]]:
    """The final model as one worker task, on the device of the stage's `run_index`-th run (as the
    pretrain and fuse runs resolve theirs: only the worker loads torch): its checkpoint's bytes,
    each view's normaliser and train mean, and the fusion's history."""
    import torch

    from pipeline.folds import FoldData, NormalizedRows, task_labels
    from pipeline.fusion import save_fusion
    from pipeline.fusion_training import train_fusion_afresh
    from pipeline.modalities import MODALITIES
    from pipeline.normalize import fit_normalizer
    from pipeline.split import final_split, fold_indices
    from pipeline.training import run_device

    views, seed = list(params.fusion.modalities), params.train.seeds[0]
    split = final_split(trials.subjects, params.split)
    index = fold_indices(trials.subjects, split)
    inputs = {}
    for m in views:
        x = load_features(m, mmap=True, root=Path(root))
        inputs[m] = NormalizedRows(x, *fit_normalizer(np.asarray(x[index["train"]]), MODALITIES[m].norm_axes))
    data = FoldData(inputs, torch.tensor(task_labels(trials)), index)
    stats = data.view_stats()
    model, history = train_fusion_afresh(data, trials, {m: params.branch(m) for m in views}, params.fusion,
                                         params.train, seed, torch.device(run_device(params.train.device, run_index)))
    checkpoint = bytes_io.BytesIO()
    save_fusion(checkpoint, model.cpu(), params.fusion)
    return checkpoint.getvalue(), stats, split, history


def run(params: Params) -> None:
    with io.atomic_path(io.FINAL_DIR) as out:
        out.mkdir()
        if not params.final.enabled:
            io.write_json(out / "meta.json", {"enabled": False})
            print("final: final.enabled is false: no final model")
            return
        from pipeline.data.readers import eeg_channels_of
        from pipeline.features.eeg import preprocessing_record
        from pipeline.parallel import stream

        params.check_modalities(available_modalities(), NO_AUDIO)
        trials = load_trials()
        (checkpoint, stats, split, history), = stream("pipeline.stages.final:final_run",
                                                      [(params, trials, str(Path.cwd()), 0)], params.compute,
                                                      "final", "model")
        (out / "fusion.pt").write_bytes(checkpoint)
        recordings = load_manifest()["eeg_path"]
        for m, s in stats.items():
            io.save_npz(out / f"{m}.npz", **s)
        io.write_json(out / "meta.json", {
            "enabled": True, "views": list(params.fusion.modalities), "classes": trials.classes,
            # what predict reads from new recordings, in this order
            "eeg_channels": eeg_channels_of(recordings.iloc[0], params.eeg),
            "eeg_preprocessing": preprocessing_record(recordings, params.eeg),
            "tasks": trials.task_classes, "seed": params.train.seeds[0],
            "train_subjects": split["train"], "val_subjects": split["val"], "history": history,
            "params": params.to_yaml_mapping()})
    print(f"final: fused {', '.join(params.fusion.modalities)} on {len(split['train'])} train and "
          f"{len(split['val'])} validation subjects -> {io.FINAL_DIR}")
