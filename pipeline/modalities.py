"""The views of a trial: one registry (name -> what every stage needs to know about it).

It drives the CLI's modality choices, the feature dispatch, the normalisation axes and the
branch encoders, so adding a view is one entry here (plus its feature module and encoder).
It imports nothing of the package and no heavy library: params validation and light stages
read it without pulling in torch, MNE or librosa.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str
    section: str                 # the params.yaml section of its feature knobs
    features: str                # module with `features(trials, params, eeg)`, the pure feature function
                                 # (predict's; EEG: `eeg_features`), and `compute(params)`, the stage's body
    norm_axes: tuple[int, ...]   # axes the train statistics pool over (0: trials)
    encoders: tuple[str, ...]    # branch encoders it accepts (names in pipeline.nets.ENCODERS); first: default
    needs_audio: bool            # only data with audio has this view: a speech view
    student: bool = False        # distilled by default (distill.students: null) when fused: its signal's plain view


# (n, channels, times) encoders: the package's own two and braindecode's models
EEG_ENCODERS = ("log_power", "filterbank", "shallow_fbcsp", "eegnet")

MODALITIES: dict[str, Modality] = {
    # EEG: statistics per channel; (n, channels, times)
    "eeg": Modality("eeg", "eeg", "pipeline.features.eeg", (0, 2), EEG_ENCODERS, False, student=True),
    # log-mel: per frequency bin; (n, 1, mels, frames)
    "mel": Modality("mel", "mel", "pipeline.features.mel", (0, 1, 3), ("image_cnn",), True),
    # persistence images: per image channel (band x homology dimension); (n, c, bins, bins)
    "topo": Modality("topo", "topo", "pipeline.features.topo", (0, 2, 3), ("image_cnn",), False),
    # openSMILE functionals (eGeMAPS, ComParE): per feature; (n, features)
    "acoustic": Modality("acoustic", "acoustic", "pipeline.features.acoustic", (0,), ("mlp", "linear"), True, student=True),
}
NAMES: tuple[str, ...] = tuple(MODALITIES)
