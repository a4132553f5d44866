"""The one place where params.yaml is declared and validated.

Each section is a frozen pydantic model: every field carries its type, allowed values
(`Literal`) and range (`allowed(<what is allowed, in words>, ge=...)`) beside it, and under it
an attribute docstring saying what it is (docs/params.md is generated from them:
pipeline/reference.py); only rules that tie several fields together are code (model
validators). Every stage calls :func:`load_params` before any work, so a wrong value stops the
stage with one line naming the key, the value and what is allowed, and nothing is written.

Imports nothing heavy: the registries (fusion heads, data sources, encoders) register their
classes under the names declared here, and tests/unit/test_registries.py checks that both agree.
"""
from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      ValidationError, field_validator, model_validator)

from pipeline.errors import PipelineError
from pipeline.modalities import MODALITIES as MODALITY_SPECS
from pipeline.modalities import NAMES as MODALITIES

FUSION_TYPES = ("concat", "gated", "cross_attention", "film", "transformer", "weighted", "late", "ensemble")
MODALITY_SCORING_TYPES = ("concat",)  # heads with their own per-modality logits (OGM-GE scores with them)
BRANCH_FREEZING_TYPES = ("late", "ensemble")  # heads that never train the branches
DATA_SOURCES = ("synthetic", "manifest", "eav", "bids")
SYNTHETIC_ROOT = "data/synthetic"  # where the synthesize stage writes (a dvc.yaml out)
PRIMARY_TASK = "label"  # the manifest's label column: data.classes, selection and early stopping use it

Modality = Literal[MODALITIES]
FusionType = Literal[FUSION_TYPES]
DataSource = Literal[DATA_SOURCES]


class ParamsError(PipelineError, ValueError):
    """A params value that is missing, of the wrong type or outside what is allowed."""


def not_allowed(key: str, value, allowed: str) -> ParamsError:
    return ParamsError(f"params: {key} = {value!r} is not allowed; allowed: {allowed}")


class Rule(ValueError):
    """A rule in code broken: `field` (relative to the model; "" inside a field validator), its
    value and what is allowed."""

    def __init__(self, field: str, value, allowed: str):
        super().__init__(allowed)
        self.field, self.value, self.allowed = field, value, allowed


ALLOWED = "allowed"  # the json_schema_extra key that holds `allowed`'s words


def allowed(text: str, **constraints) -> Any:
    """A field's range, with `text` (what is allowed, in words) for the error message and the
    params reference (docs/params.md). Kept out of the field's description, which is its
    attribute docstring (what the key is)."""
    return Field(json_schema_extra={ALLOWED: text}, **constraints)


def allowed_text(info) -> str | None:
    """The words `allowed` gave a field or an `Annotated` item (a pydantic FieldInfo), or None."""
    extra = getattr(info, "json_schema_extra", None)
    return extra.get(ALLOWED) if isinstance(extra, dict) else None


Dropout = Annotated[StrictFloat, allowed("0 <= dropout < 1", ge=0.0, lt=1.0)]
TaskWeighting = Literal["equal", "uncertainty", "fixed"]  # uncertainty: learned log-variances (Kendall et al. 2018)
TaskWeights = tuple[Annotated[StrictFloat, allowed("numbers >= 0", ge=0.0)], ...] | None
Band = Annotated[tuple[StrictFloat, StrictFloat], allowed("a list of 2 numbers")]  # [low, high] in Hz
HomologyDimension = Annotated[StrictInt, allowed("0 or 1", ge=0, le=1)]  # a Literal would take true for 1


class Section(BaseModel):
    """A params section. Each field's attribute docstring (the string under it) is its
    description: what the key is, its unit and what it does (docs/params.md is generated from them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class SyntheticParams(Section):
    seed: StrictInt
    """Seed of the generator: the same seed writes the same recordings."""
    n_subjects: StrictInt = allowed("an integer >= 3", ge=3)
    """Subjects to write, one EEG recording (FIF) and one audio recording (WAV) each."""
    trials_per_class: StrictInt = allowed("an integer >= 1", ge=1)
    """Trials of each of the 5 classes per subject (8: 40 trials a subject)."""
    trial_seconds: StrictFloat = allowed(">= 1.0", ge=1.0)
    """Length of each trial, in seconds."""
    gap_seconds: StrictFloat = allowed(">= 0.0", ge=0.0)
    """Seconds between consecutive trials of a recording (trials follow in random class order)."""
    eeg_sfreq: StrictFloat = allowed(">= 128", ge=128)
    """Sampling rate of the written EEG, in Hz."""
    audio_sr: StrictInt = allowed(">= 8000", ge=8000)
    """Sampling rate of the written speech-like audio, in Hz."""
    arousal_strength: StrictFloat = allowed(">= 0.0", ge=0.0)
    """How clearly the speech (pitch, energy, syllable rate) carries arousal; 0: not at all."""
    valence_strength: StrictFloat = allowed(">= 0.0", ge=0.0)
    """How clearly EEG frontal alpha asymmetry carries valence; 0: not at all."""
    coupling_strength: StrictFloat = allowed(">= 0.0", ge=0.0)
    """How clearly inter-channel coupling (what the topology view sees) carries the class; 0: not at all."""
    artifact_class_coupling: StrictFloat = allowed(">= 0.0", ge=0.0)
    """Extra blinks inside trials by class (1: one a second in sadness trials, fewer in others), a
    confound for the EEG views; 0: blinks are class-free."""


class EAVParams(Section):
    task: Literal["speaking", "listening", "both"]
    """Which EAV trials: speaking (EEG + audio, each audio file paired with its speaking trial),
    listening or both (EEG only)."""
    segment_seconds: StrictFloat | None = allowed("null or > 0", gt=0)
    """Cut each 20 s trial into segments of this many seconds that keep their subject (EAV's
    own code uses 5); null: whole trials."""


class BIDSParams(Section):
    """data.source bids (pipeline/data/bids.py): which recordings of a BIDS dataset, and which of
    their events are trials."""

    task: StrictStr | None
    """The BIDS task entity of the recordings to read; null: every task."""
    sessions: tuple[StrictStr, ...] | None
    """BIDS sessions to read; null: every session."""
    runs: tuple[StrictStr, ...] | None
    """BIDS runs to read; null: every run."""
    datatype: Literal["eeg"]
    """The BIDS datatype of the recordings."""
    label_column: StrictStr
    """The events.tsv column holding the class (trial_type falls back to value where a file has
    no trial_type, as mne-bids reads events)."""
    labels: tuple[StrictStr, ...] | None
    """The values that are classes, matched by their '/'-separated tags as MNE matches event_id;
    null: every value but a next:<value> end marker."""
    trial_end: StrictStr
    """Where a trial's window ends: duration (the event's onset + duration), fixed
    (data.bids.trial_seconds after the onset) or next:<value> (at the next event with that value)."""
    trial_seconds: StrictFloat | None = allowed("null or > 0", gt=0)
    """Length of each trial window in seconds with trial_end fixed; null otherwise."""

    @model_validator(mode="after")
    def _rules(self):
        end = self.trial_end
        if end not in ("duration", "fixed") and not (end.startswith("next:") and end[5:]):
            raise Rule("trial_end", end, "duration, fixed or next:<value> (the window ends at the next event "
                                         "with that value)")
        if end == "fixed" and self.trial_seconds is None:
            raise Rule("trial_seconds", None, "a number > 0 with data.bids.trial_end fixed")
        return self

    @property
    def end_marker(self) -> str | None:
        """The value that ends a trial with trial_end next:<value>, else None."""
        return self.trial_end[5:] if self.trial_end.startswith("next:") else None


class DataParams(Section):
    source: DataSource
    """Where trials come from: synthetic (the embedded default data, no download), manifest (a
    CSV of trials), eav (the EAV dataset's layout) or bids (a BIDS dataset)."""
    root: StrictStr
    """Folder of the recordings, tracked by DVC (synthetic: data/synthetic, where the synthesize
    stage writes)."""
    manifest: StrictStr
    """File name of the manifest CSV inside data.root (source manifest)."""
    classes: tuple[StrictStr, ...] | None
    """The primary task's classes, in this order; null: the sorted set of labels."""
    tasks: tuple[StrictStr, ...]
    """Manifest label columns learned together; the first, label, is the primary task."""
    task_classes: dict[StrictStr, tuple[StrictStr, ...]]
    """Secondary task -> its classes in order (e.g. {arousal: [low, mid, high]}); a task not
    listed: the sorted set of its values."""
    on_error: Literal["fail", "skip"]
    """What a bad trial does at ingest: fail stops at the first; skip drops it and lists it in
    reports/ingest.json."""
    synthetic: SyntheticParams
    """The synthetic source's generator (the synthesize stage)."""
    eav: EAVParams
    """The eav source: which EAV trials, and how they are cut."""
    bids: BIDSParams
    """The bids source: which recordings of a BIDS dataset, and which of their events are trials."""

    @model_validator(mode="after")
    def _rules(self):
        if self.source == "synthetic" and Path(self.root) != Path(SYNTHETIC_ROOT):
            raise Rule("root", self.root, f"{SYNTHETIC_ROOT} with data.source synthetic (where the synthesize stage writes)")
        if self.classes is not None and (len(self.classes) < 2 or len(set(self.classes)) < len(self.classes)):
            raise Rule("classes", list(self.classes), "null or a list of 2 or more distinct labels")
        if not self.tasks or self.tasks[0] != PRIMARY_TASK or len(set(self.tasks)) < len(self.tasks):
            raise Rule("tasks", list(self.tasks), f"distinct manifest columns, the primary task {PRIMARY_TASK!r} first")
        for task, classes in self.task_classes.items():
            if task not in self.secondary_tasks:
                raise Rule(f"task_classes.{task}", list(classes), f"a key among data.tasks after the first "
                           f"({', '.join(self.secondary_tasks) or 'none'})")
            if len(classes) < 2 or len(set(classes)) < len(classes):
                raise Rule(f"task_classes.{task}", list(classes), "a list of 2 or more distinct values")
        return self

    @property
    def secondary_tasks(self) -> tuple[str, ...]:
        return self.tasks[1:]


class SplitParams(Section):
    scheme: Literal["holdout", "kfold", "loso"]
    """How subjects are split, never one subject in two parts of a fold: holdout (one fold),
    kfold (split.folds folds, every subject tested once) or loso (leave one subject out)."""
    seed: StrictInt
    """Seed of the subject draws (and of the intervals' bootstrap resamples)."""
    val_subjects: StrictInt = allowed("an integer >= 1", ge=1)
    """Validation subjects of each fold (early stopping, selection), drawn from its non-test subjects."""
    test_subjects: StrictInt = allowed("an integer >= 1", ge=1)
    """Test subjects of the one fold (scheme holdout only)."""
    folds: StrictInt = allowed("an integer >= 2", ge=2)
    """Number of folds, each testing its own group of subjects (scheme kfold only)."""


# ICLabel's classes (mne-icalabel); brain and other are never removed
ICLABEL_REMOVABLE = ("eye blink", "muscle artifact", "heart beat", "line noise", "channel noise")
ICA_METHODS = ("infomax", "picard", "fastica")  # infomax: extended infomax, as ICLabel was trained


class ArtifactParams(Section):
    """eeg.artifacts: ICA per recording with ICLabel's component labels, and autoreject (local) over
    each recording's trials (pipeline/features/artifacts.py)."""

    ica: StrictBool
    """ICA per recording, removing ICLabel's confident non-brain components; needs channel positions."""
    ica_method: Literal[ICA_METHODS]
    """ICA algorithm: infomax (extended, as ICLabel was trained), picard or fastica."""
    ica_components: StrictFloat = allowed("a count >= 2, or a share of variance between 0 and 1", gt=0)
    """ICA components: a whole count (capped at the data's rank), or a share of variance below 1."""
    seed: StrictInt
    """random_state of ICA and of autoreject."""
    iclabel_reject: dict[StrictStr, Annotated[StrictFloat, allowed("a probability in [0, 1)", ge=0.0, lt=1.0)]]
    """ICLabel class -> the probability above which a component of that class is removed (brain
    and other are never removed)."""
    autoreject: StrictBool
    """autoreject (local) over each recording's trials: a trial's bad channels are interpolated, or
    the trial is dropped (it leaves the manifest and every view); needs channel positions."""

    @property
    def enabled(self) -> bool:
        """Whether any cleaning runs."""
        return self.ica or self.autoreject

    @model_validator(mode="after")
    def _rules(self):
        n = self.ica_components
        if not (0 < n < 1 or (n >= 2 and float(n).is_integer())):
            raise Rule("ica_components", n, "a whole count >= 2, or a share of variance between 0 and 1")
        unknown = [c for c in self.iclabel_reject if c not in ICLABEL_REMOVABLE]
        if unknown:
            raise Rule(f"iclabel_reject.{unknown[0]}", self.iclabel_reject[unknown[0]],
                       f"ICLabel classes {', '.join(ICLABEL_REMOVABLE)} (brain and other are never removed)")
        return self

    @property
    def n_components(self) -> int | float:
        """ica_components as MNE's ICA takes it: an int count or a float share."""
        return int(self.ica_components) if self.ica_components >= 1 else self.ica_components


class EEGParams(Section):
    l_freq: StrictFloat = allowed("0 < l_freq < h_freq", gt=0)
    """High-pass cut-off of the EEG band-pass filter, in Hz."""
    h_freq: StrictFloat
    """Low-pass cut-off, in Hz (dropped, with a warning, for a recording whose Nyquist frequency it reaches)."""
    notch: StrictFloat | None = allowed("null or > 0", gt=0)
    """Line-noise notch frequency, in Hz; null: no notch."""
    sfreq: StrictFloat
    """Rate every recording is resampled to, in Hz (above 2 x eeg.h_freq)."""
    reference: Literal["average", "none"]
    """EEG reference: average (common average) or none (the recording's own)."""
    epoch_seconds: StrictFloat = allowed("> 0", gt=0)
    """Length of the EEG epoch, in seconds: the centre of each trial window, which must be at least this long."""
    channels: tuple[StrictStr, ...] | None
    """EEG channels to use, by name, in this order (a subset every recording has); null: every EEG channel."""
    read_kwargs: dict[StrictStr, Any]
    """Options passed to MNE's reader, e.g. {data_format: int16} for Neuroscan .cnt."""
    drop_channels: tuple[StrictStr, ...]
    """Channels removed from every recording (e.g. bad channels without positions); none of eeg.channels."""
    montage: StrictStr | None
    """Channel positions by name (to interpolate bad channels, for ICA): an MNE standard montage
    (standard_1020, ...) or a montage file; null: the file's or electrodes.tsv's."""
    artifacts: ArtifactParams
    """EEG artifact cleaning: ICA with ICLabel, and autoreject (features_eeg)."""

    @model_validator(mode="after")
    def _rules(self):
        if self.channels is not None and (len(self.channels) < 2 or len(set(self.channels)) < len(self.channels)):
            raise Rule("channels", self.channels, "null or a list of 2 or more distinct channel names")
        both = [c for c in self.drop_channels if c in (self.channels or ())]
        if both:
            raise Rule("drop_channels", list(self.drop_channels), f"channels outside eeg.channels ({both[0]} is in both)")
        if not self.l_freq < self.h_freq:
            raise Rule("l_freq", self.l_freq, f"0 < l_freq < h_freq ({self.h_freq})")
        if not self.sfreq > 2 * self.h_freq:
            raise Rule("sfreq", self.sfreq, f"> 2 * h_freq ({2 * self.h_freq})")
        return self


class MelParams(Section):
    sr: StrictInt = allowed(">= 8000", ge=8000)
    """Rate the audio is resampled to before the log-mel, in Hz."""
    clip_seconds: StrictFloat
    """Length of each audio clip, in seconds: longer clips are cropped (mel.crop), shorter ones
    zero-padded (counted in reports/mel_clips.json)."""
    n_mels: StrictInt = allowed("an integer >= 8", ge=8)
    """Mel bands: the image's height."""
    n_frames: StrictInt = allowed("an integer >= 8", ge=8)
    """Time frames: the image's width (the hop is the clip's samples / n_frames)."""
    n_fft: StrictInt
    """FFT window length of the mel spectrogram, in samples."""
    fmin: StrictFloat
    """Lowest frequency of the mel filterbank, in Hz."""
    fmax: StrictFloat
    """Highest frequency of the mel filterbank, in Hz (at most mel.sr / 2)."""
    crop: Literal["center", "start", "end"]
    """Which part of a clip longer than clip_seconds is kept."""

    @model_validator(mode="after")
    def _rules(self):
        if not self.clip_seconds * self.sr >= self.n_frames:
            raise Rule("clip_seconds", self.clip_seconds, f">= n_frames / sr ({self.n_frames / self.sr:.4f})")
        if not 0 <= self.fmin < self.fmax <= self.sr / 2:
            raise Rule("fmax", self.fmax, f"fmin < fmax <= sr / 2 ({self.sr / 2})")
        return self


def check_bands(bands: dict[str, tuple[float, float]]) -> None:
    for name, (low, high) in bands.items():
        if not 0 < low < high:
            raise Rule(f"bands.{name}", [low, high], "[low, high] with 0 < low < high")


# openSMILE feature sets of the acoustic view: functionals per clip (its column count).
ACOUSTIC_FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}
AcousticFeatureSet = Literal[tuple(ACOUSTIC_FEATURE_SETS)]


class AcousticParams(Section):
    """The acoustic view: openSMILE functionals of each trial's whole audio window, the sets
    side by side in this order (eGeMAPSv02: the minimal set recommended for affective computing,
    Eyben et al. 2016; ComParE_2016: the INTERSPEECH challenge baselines' set)."""

    sr: StrictInt = allowed(">= 8000", ge=8000)
    """Rate the audio is resampled to before openSMILE, in Hz."""
    feature_sets: tuple[AcousticFeatureSet, ...] = allowed("a non-empty list of distinct openSMILE sets",
                                                            min_length=1)
    """openSMILE functional sets, side by side in this order (eGeMAPSv02: 88 features,
    ComParE_2016: 6,373)."""

    @field_validator("feature_sets")
    @classmethod
    def _distinct(cls, sets):
        if len(set(sets)) < len(sets):
            raise Rule("", list(sets), f"distinct names of {', '.join(ACOUSTIC_FEATURE_SETS)}")
        return sets

    def columns(self) -> dict[str, slice]:
        """Each set's columns in the view's feature array."""
        out, start = {}, 0
        for name in self.feature_sets:
            out[name] = slice(start, start + ACOUSTIC_FEATURE_SETS[name])
            start += ACOUSTIC_FEATURE_SETS[name]
        return out


class TopoParams(Section):
    source: Literal["connectivity"]
    """What the topology is computed on: connectivity, per band 1 - |correlation| between EEG channels."""
    bands: dict[StrictStr, Band] = allowed("at least one band", min_length=1)
    """Band name -> [low, high] in Hz: one connectivity graph, and persistence images, per band."""
    homology_dimensions: tuple[HomologyDimension, ...] = allowed("a non-empty subset of [0, 1]", min_length=1)
    """Persistent homology dimensions imaged: 0 (how clusters of channels merge), 1 (loops of coupling)."""
    n_bins: StrictInt = allowed("an integer >= 4", ge=4)
    """Pixels per side of each persistence image."""
    sigma: StrictFloat = allowed("> 0", gt=0)
    """Standard deviation of the Gaussian each persistence pair is spread with, in filtration
    units (distances in [0, 1])."""

    @model_validator(mode="after")
    def _rules(self):
        check_bands(self.bands)
        if len(set(self.homology_dimensions)) < len(self.homology_dimensions):
            raise Rule("homology_dimensions", list(self.homology_dimensions), "a non-empty subset of [0, 1]")
        return self


class TrainParams(Section):
    """Training knobs shared by every branch (`branches.<m>` overrides any but `seeds`)."""

    seeds: tuple[StrictInt, ...] = allowed("a non-empty list of integers", min_length=1)
    """Training seeds (initialisation, batch order, dropout): every branch, the fusion and the
    students train once per fold and seed."""
    epochs: StrictInt = allowed("an integer >= 1", ge=1)
    """Most training epochs of a branch."""
    patience: StrictInt = allowed("an integer >= 1", ge=1)
    """Epochs without validation improvement before training stops (the best epoch is kept)."""
    batch_size: StrictInt = allowed("an integer >= 2", ge=2)
    """Trials per training batch."""
    lr: StrictFloat = allowed("> 0", gt=0)
    """Learning rate of the AdamW optimiser."""
    weight_decay: StrictFloat = allowed(">= 0", ge=0)
    """AdamW weight decay."""
    dropout: Dropout
    """Dropout probability in the branch."""
    embed_dim: StrictInt = allowed("an integer >= 2", ge=2)
    """Size of the branch's embedding (what the fusion fuses)."""
    loss: Literal["ce", "focal"]
    """Training loss: ce (cross-entropy) or focal (with inverse-frequency class weights from the train labels)."""
    focal_gamma: StrictFloat = allowed(">= 0", ge=0)
    """Focusing exponent of the focal loss (loss focal only)."""
    loss_temperature: StrictFloat = allowed("> 0", gt=0)
    """The logits are divided by this before the loss (e.g. 2000 for an audio branch)."""
    device: Literal["auto", "cpu", "cuda"]
    """Where training runs: auto (CUDA when present), cpu or cuda (an error without a GPU)."""
    task_weighting: TaskWeighting
    """How the losses of data.tasks add up: equal (weights 1), uncertainty (learned log-variances,
    Kendall et al. 2018) or fixed (task_weights)."""
    task_weights: TaskWeights
    """With task_weighting fixed: one weight per task of data.tasks, the first above 0; null otherwise."""
    encoder: StrictStr | None = None
    """The branch's encoder, per view only (branches.<view>.encoder); null: the view's first
    encoder (pipeline.modalities)."""

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        if len(set(seeds)) < len(seeds):
            raise Rule("", list(seeds), "distinct integers")
        return seeds


class FusionParams(Section):
    type: FusionType
    """The fusion method (README: Fusion methods): concat, gated, cross_attention, film,
    transformer, weighted, late (a trained combination of the branches' log-probabilities) or
    ensemble (their weighted average, no training)."""
    modalities: tuple[Modality, ...]
    """The views fused, 2 or more distinct."""
    epochs: StrictInt = allowed("an integer >= 1", ge=1)
    """Most epochs of fusion training."""
    patience: StrictInt = allowed("an integer >= 1", ge=1)
    """Epochs without validation improvement before fusion training stops."""
    restarts: StrictInt = allowed("an integer >= 1", ge=1)
    """Heads trained per fusion run (restart j under seed + 1000 j); the one with the lowest
    validation log-loss is kept."""
    branch_lr: StrictFloat = allowed(">= 0", ge=0)
    """Learning rate of the pretrained branches once they are unfrozen (fine-tuning)."""
    head_lr: StrictFloat = allowed("> 0", gt=0)
    """Learning rate of the fusion head."""
    freeze_epochs: StrictInt = allowed("an integer >= 0", ge=0)
    """Epochs the branches stay frozen (and in eval mode) first; from fusion.epochs on: throughout,
    only the head trains."""
    hidden: StrictInt = allowed("an integer >= 2", ge=2)
    """Hidden size of the fusion head."""
    heads: StrictInt = allowed("an integer >= 1 that divides fusion.hidden", ge=1)
    """Attention heads (type cross_attention and transformer)."""
    layers: StrictInt = allowed("an integer >= 1", ge=1)
    """Encoder layers (type transformer)."""
    film_condition: StrictStr
    """With type film: the view whose embedding scales and shifts the others' (one of fusion.modalities)."""
    channel_scale: StrictBool
    """A learnable per-channel scale (initialised to 1) on each embedding."""
    embed_norm: Literal["none", "batchnorm", "layernorm"]
    """Normalisation of each embedding before fusion."""
    dropout: Dropout
    """Dropout probability in the fusion head."""
    curriculum_epochs: StrictInt = allowed("an integer >= 0", ge=0)
    """First epochs trained easy to hard by the pretrained branches' confidence in the true class; 0: off."""
    post_curriculum_dropout: Dropout
    """The head's dropout once the curriculum is over (with curriculum_epochs > 0)."""
    modality_dropout: StrictFloat = allowed("0 <= p < 1", ge=0.0, lt=1.0)
    """Probability that a training sample loses a view (input set to its train mean); never all views."""
    aux_loss_weight: StrictFloat = allowed(">= 0", ge=0.0)
    """Weight of the mean of the branches' own losses added to the fused loss (trains only branches not frozen)."""
    grad_modulation: Literal["none", "ogm_ge"]
    """Gradient modulation: none, or ogm_ge (OGM-GE, Peng et al. CVPR 2022; use with optimizer sgd)."""
    ogm_alpha: StrictFloat = allowed(">= 0", ge=0)
    """OGM-GE's alpha: a dominant modality's gradients are scaled by 1 - tanh(alpha x its score ratio)."""
    task_weighting: TaskWeighting
    """As train.task_weighting, for the fusion's task heads."""
    task_weights: TaskWeights
    """As train.task_weights, for the fusion's task heads."""
    optimizer: Literal["adamw", "sgd"]
    """Optimiser of fusion training: adamw, or sgd with fusion.momentum."""
    momentum: StrictFloat = allowed("0 <= momentum < 1", ge=0.0, lt=1.0)
    """SGD momentum (optimizer sgd)."""
    select: Literal["fusion", "safe"]
    """What each fold reports: fusion (the fused model), or safe (per fold, the best on validation
    of the fused model, the best branch and the ensemble of the fused branches)."""
    select_margin: StrictFloat = allowed(">= 0", ge=0.0)
    """With select safe and select_alpha null: the fused model must beat the other two on validation
    accuracy by more than this."""
    select_alpha: StrictFloat | None = allowed("null or 0 < alpha <= 1", gt=0.0, le=1.0)
    """With select safe: fall back from the fused model only where McNemar's test on validation
    trials says so at this level; null: whenever the fallback scores higher."""
    drop_uninformative: StrictBool
    """Leave views at chance on validation (binomial test) out of that fold's fusion."""
    ensemble_weighting: Literal["equal", "val", "fixed"]
    """With type ensemble: equal weights, val (validation accuracy) or fixed (ensemble_weights)."""
    ensemble_weights: tuple[StrictFloat, ...]
    """With ensemble_weighting fixed: one non-negative weight per view of fusion.modalities."""
    loss: Literal["ce", "focal"]
    """As train.loss, for fusion training."""
    focal_gamma: StrictFloat = allowed(">= 0", ge=0)
    """As train.focal_gamma, for fusion training."""
    loss_temperature: StrictFloat = allowed("> 0", gt=0)
    """As train.loss_temperature, for fusion training."""

    @model_validator(mode="after")
    def _rules(self):
        mods = self.modalities
        if len(mods) < 2 or len(set(mods)) < len(mods):
            raise Rule("modalities", list(mods), f"2 or more distinct of {', '.join(MODALITIES)}")
        if self.hidden % self.heads:
            raise Rule("heads", self.heads, f"an integer >= 1 that divides fusion.hidden ({self.hidden})")
        if self.type == "film" and self.film_condition not in mods:
            raise Rule("film_condition", self.film_condition, f"one of fusion.modalities ({', '.join(mods)})")
        if self.grad_modulation == "ogm_ge" and self.type in BRANCH_FREEZING_TYPES:
            raise Rule("grad_modulation", self.grad_modulation,
                       "none with fusion.type late or ensemble (their branches are not trained)")
        if self.grad_modulation == "ogm_ge" and self.type not in MODALITY_SCORING_TYPES and self.aux_loss_weight == 0:
            raise Rule("aux_loss_weight", self.aux_loss_weight,
                       f"> 0 with ogm_ge and fusion.type {self.type}: OGM-GE then scores each modality with its "
                       f"branch head, which only the auxiliary loss keeps current ({', '.join(MODALITY_SCORING_TYPES)} "
                       "score with the fusion head itself)")
        w = self.ensemble_weights
        if self.type == "ensemble" and self.ensemble_weighting == "fixed" and \
                not (len(w) == len(mods) and min(w) >= 0 and sum(w) > 0):
            raise Rule("ensemble_weights", list(w),
                       f"{len(mods)} non-negative numbers (one per fusion.modalities), not all 0")
        return self

    @property
    def frozen_throughout(self) -> bool:
        """freeze_epochs from epochs on: the branches never train, only the fusion head does."""
        return self.freeze_epochs >= self.epochs

    def warnings(self) -> list[str]:
        """Valid but doubtful combinations, printed by the fuse stage."""
        doubts = []
        if self.aux_loss_weight > 0 and self.frozen_throughout and self.type not in BRANCH_FREEZING_TYPES:
            doubts.append("fusion.aux_loss_weight > 0 with fusion.freeze_epochs >= fusion.epochs: the branches and "
                          "their heads are frozen throughout, so their own losses train nothing")
        if self.grad_modulation == "ogm_ge" and self.frozen_throughout:
            doubts.append("fusion.grad_modulation = ogm_ge with fusion.freeze_epochs >= fusion.epochs: the branches "
                          "are frozen throughout, so there are no branch gradients to modulate")
        elif self.grad_modulation == "ogm_ge" and self.optimizer == "adamw":
            doubts.append("fusion.grad_modulation = ogm_ge with fusion.optimizer = adamw: Adam-type optimisers undo "
                          "gradient scaling, so the modulation barely acts; the paper trains with sgd")
        return doubts


class DistillParams(Section):
    """The distill stage: single-view students trained on the fused model's soft labels
    (pipeline/distillation.py)."""

    enabled: StrictBool
    """Whether the distill stage trains students. Off by default, as final and explain are: they
    analyse or ship a fused model, and an experiment, which compares fusions, should not pay for
    them (a fusion key then reruns fuse and evaluate alone); on for a release: `make release`."""
    students: tuple[Modality, ...] | None
    """Views to distil the fused model into, each of fusion.modalities; []: none; null: the fused
    views that are their signal's plain view (eeg, acoustic). Read only with `enabled`."""
    init: Literal["pretrained", "scratch"]
    """Where a student starts: pretrained (the fold's pretrained branch) or scratch."""
    alpha: StrictFloat = allowed("0 <= alpha <= 1", ge=0.0, le=1.0)
    """Weight of the distillation term: (1 - alpha) x CE(labels) + alpha x T^2 x KL(teacher_T || student_T)."""
    temperature: StrictFloat = allowed("> 0", gt=0)
    """Softmax temperature T of teacher and student in the distillation term."""
    feature_weight: StrictFloat = allowed(">= 0", ge=0.0)
    """Weight of the MSE between the projected student embedding and the teacher's fused
    representation; 0: off (0 with late, ensemble or cross_fitted)."""
    teacher_targets: Literal["in_fold", "cross_fitted"]
    """Soft labels of the train trials: in_fold (the fold's fused model) or cross_fitted (teachers
    that never saw the trial's subject)."""
    inner_folds: StrictInt = allowed("an integer >= 2", ge=2)
    """With teacher_targets cross_fitted: groups of train subjects per fold, a teacher each."""

    @field_validator("students")
    @classmethod
    def _distinct(cls, students):
        if students is not None and len(set(students)) < len(students):
            raise Rule("", list(students), "distinct views, or null")
        return students


class FinalParams(Section):
    """The final stage: one model on every subject, the DVC artifact to use (pipeline/stages/final.py)."""

    enabled: StrictBool
    """Whether the final stage trains the model on every subject (models/final/). Off by default,
    so that an experiment costs what it changes; on for a model to use (predict, export):
    `make release`, or `dvc exp run -S final.enabled=true` for this model alone."""


class ExplainParams(Section):
    """The explain stage: why each fold's models decide as they do, on its validation and test
    trials (pipeline/explain.py)."""

    enabled: StrictBool
    """Whether the explain stage computes explanations (reports/explain.json, reports/explain.md,
    reports/figures/explain/); false: explain.json and explain.md say so, and no figures. Off by default, as
    final and distill are (an experiment should not pay for them); on for a release: `make release`."""
    trials: StrictInt = allowed("an integer >= 1", ge=1)
    """Validation and test trials explained per fold and seed, at most (drawn by `seed` where a fold
    has more): Integrated Gradients costs `steps` forward and backward passes a trial."""
    steps: StrictInt = allowed("an integer >= 2", ge=2)
    """Integrated Gradients' points along the path from the zero baseline to a trial (Gauss-Legendre, captum's default)."""
    seed: StrictInt = allowed("an integer >= 0", ge=0)
    """Which trials are explained where a fold has more than `trials`."""


class BaselinesParams(Section):
    """The baselines stage: scikit-learn logistic regression on handcrafted features of each view,
    its inverse regularisation C chosen per fold on validation from `c_grid`."""

    c_grid: tuple[Annotated[StrictFloat, allowed("> 0", gt=0)], ...] = allowed("a non-empty list of numbers > 0",
                                                                                   min_length=1)
    """Candidate inverse regularisation strengths C of the logistic regression, chosen per fold on validation."""
    bands: dict[StrictStr, Band] = allowed("at least one band", min_length=1)
    """Band name -> [low, high] in Hz of the EEG log band power baseline (per channel)."""
    tangent_space: StrictBool
    """Also run the EEG covariance tangent-space baseline (pyriemann)."""

    @model_validator(mode="after")
    def _rules(self):
        check_bands(self.bands)
        return self


class AuditParams(Section):
    """The null audit (pipeline/audit.py): models trained on labels that carry no information
    must land at chance."""

    permute_labels: StrictBool
    """Permute every label column within each subject at ingest: the whole run should then land at
    chance (`audit.chance`); a check of the pipeline, never a result."""
    seed: StrictInt = allowed("an integer >= 0", ge=0)
    """Seed of the permutations: of `permute_labels`, and of the baselines' permuted-label fits
    that every run makes (`audit.permuted`)."""


class ComputeParams(Section):
    """Where and how the work runs (pipeline/parallel.py). Results do not depend on backend,
    scheduler or n_jobs (no DVC dependency); they do on torch_threads (a dependency of pretrain
    and fuse) and on portable_numerics (pipeline/numerics.py; a dependency of every stage that
    computes with floats)."""

    n_jobs: StrictInt
    """Workers of ingest, the feature stages and the training runs (an integer >= 1, or -1: one per core)."""
    backend: Literal["local", "dask"] = "local"
    """Where the tasks run: local (joblib's loky process pool) or dask (a distributed cluster)."""
    scheduler: StrictStr | None = None
    """With backend dask: a running scheduler's address (e.g. tcp://10.0.0.5:8786); null: a
    LocalCluster of n_jobs workers."""
    torch_threads: StrictInt = allowed("an integer >= 1", ge=1, default=1)
    """torch threads per training run (it changes the last bits of pretrain and fuse)."""
    portable_numerics: StrictBool = True
    """Cap numpy, torch and OpenBLAS at AVX2, for the same bits on any x86-64 CPU."""

    @field_validator("n_jobs")
    @classmethod
    def _workers(cls, n_jobs):
        if n_jobs < 1 and n_jobs != -1:
            raise Rule("", n_jobs, "an integer >= 1, or -1")
        return n_jobs

    @model_validator(mode="after")
    def _scheduler_needs_dask(self):
        if self.scheduler is not None and self.backend != "dask":
            raise Rule("scheduler", self.scheduler, "null unless backend is dask")
        return self


class Params(Section):
    data: DataParams
    """Where the trials come from and what their classes and tasks are."""
    split: SplitParams
    """Subject-disjoint train / validation / test folds."""
    eeg: EEGParams
    """EEG preprocessing of every recording, and artifact cleaning."""
    mel: MelParams
    """The mel view: a log-mel image of each trial's audio clip."""
    topo: TopoParams
    """The topology view: persistence images of per-band EEG connectivity."""
    acoustic: AcousticParams
    """The acoustic view: openSMILE functionals of each trial's audio window."""
    train: TrainParams
    """Training knobs shared by every branch (and by the distill students)."""
    branches: dict[str, TrainParams]
    """Per-view overrides of any train key but seeds (branches.<view>.<key>), plus the view's
    encoder; parsed, every view's train with its overrides on top."""
    fusion: FusionParams
    """The fusion of the pretrained branches, and what each fold reports."""
    baselines: BaselinesParams
    """Classical baselines every branch must beat: logistic regression on handcrafted features."""
    distill: DistillParams
    """Single-view students of the fused model, for use where a view is missing."""
    final: FinalParams
    """The final model on every subject (models/final/, a DVC artifact)."""
    explain: ExplainParams
    """Explanations of each fold's models: Haufe patterns, Integrated Gradients, view shares."""
    audit: AuditParams
    """The null audit: baselines on labels permuted within subjects, and a whole run on them."""
    compute: ComputeParams = ComputeParams(n_jobs=1)
    """Where and how the work runs; results depend on torch_threads and portable_numerics only."""

    def check_modalities(self, available: list[str], missing_reason: str) -> None:
        """Fusing a modality the data does not have is a params error naming fusion.modalities."""
        lacking = [m for m in self.fusion.modalities if m not in available]
        if lacking:
            raise not_allowed("fusion.modalities", list(self.fusion.modalities),
                              f"modalities the data has ({', '.join(available)}); {', '.join(lacking)}: {missing_reason}")

    def check_students(self, available: list[str], missing_reason: str) -> None:
        """A student view must be one the data has and the fusion fuses."""
        for view in self.distill.students:
            if view not in available:
                raise not_allowed("distill.students", list(self.distill.students),
                                  f"views the data has ({', '.join(available)}); {view}: {missing_reason}")

    def to_yaml_mapping(self) -> dict:
        """Plain values that `parse_params` reads back to these params (each branch's train keys but
        the seeds, which only train.seeds may set): what a self-describing model stores."""
        dumped = self.model_dump(mode="json")
        dumped["branches"] = {m: {k: v for k, v in b.items() if k != "seeds"} for m, b in dumped["branches"].items()}
        return dumped

    def branch(self, modality: str) -> TrainParams:
        """Training params of one branch: `train` with `branches.<modality>` on top."""
        return self.branches[modality]


SECTIONS = ("data", "split", "eeg", "mel", "topo", "acoustic", "train", "fusion", "baselines", "distill", "final", "explain",
            "audit", "compute")
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
              "tuple": "a list", "dict": "a mapping", "model": "a mapping"}
FIRST = {"extra_forbidden": 0, "missing": 1}  # of several errors: unknown keys, then missing ones, then values


def _dotted(loc: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _is_model(annotation) -> bool:
    return get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unwrap(annotation, text: str | None):
    """`X | None` -> X, and `Annotated[X, allowed(text)]` -> X with that text."""
    if get_origin(annotation) in (Union, UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        text = next((words for m in metadata if (words := allowed_text(m))), text)
    return annotation, text


def _declared(model: type[BaseModel], loc: tuple):
    """What is declared at `loc` (a pydantic error location inside `model`): the annotation and
    what is allowed there in words (None if nothing is declared at that level)."""
    annotation, text = model, None
    for part in loc:
        if _is_model(annotation):
            info = annotation.model_fields[part]
            annotation, text = _unwrap(info.annotation, allowed_text(info))
        else:  # dict[K, V] (part: a key) or tuple (part: a position)
            args = get_args(annotation)
            item = args[1] if get_origin(annotation) is dict else args[0] if args[-1] is Ellipsis else args[part]
            annotation, text = _unwrap(item, None)
    return annotation, text


def _translate(exc: ValidationError, model: type[BaseModel], key: str) -> ParamsError:
    """ParamsError (one line) from the first error pydantic found, unknown and missing keys first."""
    err = min(exc.errors(), key=lambda e: FIRST.get(e["type"], len(FIRST)))
    loc, value = tuple(err["loc"]), err["input"]
    dotted = _dotted((key, *loc))
    rule = (err.get("ctx") or {}).get("error")
    if isinstance(rule, Rule):
        return not_allowed(_dotted((key, *loc, *filter(None, rule.field.split(".")))), rule.value, rule.allowed)
    if loc[-1:] == ("[key]",):  # a mapping key that is not a string, e.g. `1:` in YAML
        return not_allowed(f"{_dotted((key, *loc[:-2]))}.{loc[-2]}", value, "a string key (quote it in YAML)")
    parent, parent_text = _declared(model, loc[:-1])
    if err["type"] == "extra_forbidden":
        return not_allowed(dotted, "(unknown key)", ", ".join(parent.model_fields))
    if err["type"] == "missing" and get_origin(parent) is tuple:  # too short a list for a fixed-length tuple
        return not_allowed(_dotted((key, *loc[:-1])), value, parent_text or "a longer list")
    if err["type"] == "missing":
        return ParamsError(f"params: {dotted} is missing; required keys: {', '.join(parent.model_fields)}")
    annotation, text = _declared(model, loc)
    if err["type"] == "literal_error":
        text = ", ".join(str(v) for v in get_args(annotation))
    elif err["type"].endswith("_type"):  # the wrong kind of value: name the kind
        text = TYPE_WORDS.get(err["type"].split("_")[0], text)
    if annotation is float and type(value) is int:
        value = float(value)  # shown as used, as `lr = 0.0`
    return not_allowed(dotted, value, text or err["msg"])


def _section(model: type[Section], raw, key: str):
    if not isinstance(raw, dict):
        raise not_allowed(key, raw, "a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _translate(exc, model, key) from None


def parse_params(raw: dict) -> Params:
    """Typed, validated Params from the parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise not_allowed("params", type(raw).__name__, "a mapping at the top level")
    allowed_sections = [*SECTIONS, "branches"]
    unknown = sorted(set(raw) - set(allowed_sections))
    if unknown:
        raise not_allowed(unknown[0], "(unknown section)", ", ".join(allowed_sections))
    models = {name: Params.model_fields[name].annotation for name in SECTIONS}
    built = {}
    for name in SECTIONS:
        if name not in raw:
            raise ParamsError(f"params: section {name} is missing; required: {', '.join(allowed_sections)}")
        built[name] = _section(models[name], raw[name], name)
    if built["train"].encoder is not None:
        raise not_allowed("train.encoder", built["train"].encoder,
                          "only per branch (branches.<m>.encoder): the views take different encoders")

    overrides = raw.get("branches") or {}
    if not isinstance(overrides, dict):
        raise not_allowed("branches", overrides, "a mapping of modality -> train keys")
    bad = sorted(set(overrides) - set(MODALITIES))
    if bad:
        raise not_allowed(f"branches.{bad[0]}", "(unknown modality)", ", ".join(MODALITIES))
    branches = {}
    for modality in MODALITIES:
        override = overrides.get(modality) or {}
        key = f"branches.{modality}"
        if not isinstance(override, dict):
            raise not_allowed(key, override, "a mapping of train keys")
        if "seeds" in override:
            raise not_allowed(f"{key}.seeds", override["seeds"],
                              "no per-branch seeds (every branch and the fusion train on train.seeds)")
        branch = _section(TrainParams, {**raw["train"], **override}, key)
        encoders = MODALITY_SPECS[modality].encoders
        if branch.encoder not in (None, *encoders):
            raise not_allowed(f"{key}.encoder", branch.encoder, ", ".join(encoders))
        branches[modality] = branch.model_copy(update={"encoder": branch.encoder or encoders[0]})
    built["distill"] = resolve_students(built["distill"], built["fusion"])
    check_distill(built["distill"], built["fusion"])
    for key, section in [("train", built["train"]), ("fusion", built["fusion"]),
                         *((f"branches.{m}", b) for m, b in branches.items())]:
        check_task_weights(key, section, built["data"].tasks)
    return Params(branches=branches, **built)


def resolve_students(dp: DistillParams, fp: FusionParams) -> DistillParams:
    """The students the stage trains: none while distill is off; `students: null` as the list it
    stands for: the fused views that are their signal's plain view (eeg for the EEG, acoustic for
    the speech; the registry's `student`), in fusion.modalities order. So changing
    fusion.modalities alone never leaves a student of a view that is not fused."""
    if not dp.enabled:
        return dp.model_copy(update={"students": ()})
    if dp.students is not None:
        return dp
    return dp.model_copy(update={"students": tuple(m for m in fp.modalities if MODALITY_SPECS[m].student)})


def check_distill(dp: DistillParams, fp: FusionParams) -> None:
    """Students of fused views only; the feature term needs a fused representation."""
    outside = [m for m in dp.students if m not in fp.modalities]
    if outside:
        raise not_allowed("distill.students", list(dp.students),
                          f"views of fusion.modalities ({', '.join(fp.modalities)}); {outside[0]} is not fused")
    if dp.feature_weight > 0 and dp.students and dp.teacher_targets == "cross_fitted":
        raise not_allowed("distill.feature_weight", dp.feature_weight,
                          "0 with distill.teacher_targets cross_fitted: its inner teachers' representations are "
                          "separately trained spaces, which one projection of the student cannot match")
    if dp.feature_weight > 0 and dp.students and fp.type in BRANCH_FREEZING_TYPES:
        raise not_allowed("distill.feature_weight", dp.feature_weight,
                          f"0 with fusion.type {fp.type}: it combines the branches' outputs, "
                          "with no fused representation to match")


def check_task_weights(key: str, section: TrainParams | FusionParams, tasks: tuple[str, ...]) -> None:
    """`task_weighting: fixed` needs one weight per task of data.tasks, the primary one above 0."""
    if section.task_weighting != "fixed":
        return
    weights = section.task_weights
    if weights is None or len(weights) != len(tasks) or weights[0] <= 0:
        raise not_allowed(f"{key}.task_weights", None if weights is None else list(weights),
                          f"with {key}.task_weighting fixed, {len(tasks)} number(s) >= 0, one per task of "
                          f"data.tasks ({', '.join(tasks)}), the first above 0")


def read_params_yaml(path: str | Path = "params.yaml") -> dict:
    """params.yaml as parsed YAML, unvalidated; raises ParamsError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params: file {path} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ParamsError with a one-line message."""
    return parse_params(read_params_yaml(path))


def fill_missing(saved: dict, current: dict, model: type[BaseModel] | None = None,
                 prefix: str = "") -> tuple[dict, list[str]]:
    """`saved` (params stored with a model) with every key it lacks taken from `current` (this
    project's), and the dotted keys so taken: a model saved before a key existed still loads. It
    goes down into sections only (`model`'s fields that are sections themselves); a value that is
    a mapping (`topo.bands`, `eeg.read_kwargs`, `branches`) is kept whole, as the model ran with
    it. The keys are named to the user, since the model never ran under their values."""
    model = model or Params
    filled, taken = dict(saved), []
    for key, value in current.items():
        field = model.model_fields.get(key)
        section = _unwrap(field.annotation, None)[0] if field else None
        if key not in saved:
            filled[key] = value
            taken.append(prefix + key)
        elif _is_model(section) and isinstance(value, dict) and isinstance(saved[key], dict):
            filled[key], deeper = fill_missing(saved[key], value, section, f"{prefix}{key}.")
            taken += deeper
    return filled, taken
