"""The one place where params.yaml is declared and validated.

Each section is a frozen pydantic model: every field carries its type, allowed values
(`Literal`) and range (`Field(ge=..., description=<what is allowed, in words>)`) beside it;
only rules that tie several fields together are code (model validators). Every stage calls
:func:`load_params` before any work, so a wrong value stops the stage with one line naming the
key, the value and what is allowed, and nothing is written.

Imports nothing heavy: the registries (fusion heads, data sources, encoders) register their
classes under the names declared here, and tests/test_registries.py checks that both agree.
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


def allowed(text: str, **constraints) -> Any:
    """A field's range, with `text` (what is allowed, in words) for the error message."""
    return Field(description=text, **constraints)


Dropout = Annotated[StrictFloat, allowed("0 <= dropout < 1", ge=0.0, lt=1.0)]
TaskWeighting = Literal["equal", "uncertainty", "fixed"]  # uncertainty: learned log-variances (Kendall et al. 2018)
TaskWeights = tuple[Annotated[StrictFloat, allowed("numbers >= 0", ge=0.0)], ...] | None
Band = Annotated[tuple[StrictFloat, StrictFloat], allowed("a list of 2 numbers")]  # [low, high] in Hz
HomologyDimension = Annotated[StrictInt, allowed("0 or 1", ge=0, le=1)]  # a Literal would take true for 1


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticParams(Section):
    seed: StrictInt
    n_subjects: StrictInt = allowed("an integer >= 3", ge=3)
    trials_per_class: StrictInt = allowed("an integer >= 1", ge=1)
    trial_seconds: StrictFloat = allowed(">= 1.0", ge=1.0)
    gap_seconds: StrictFloat = allowed(">= 0.0", ge=0.0)
    eeg_sfreq: StrictFloat = allowed(">= 128", ge=128)
    audio_sr: StrictInt = allowed(">= 8000", ge=8000)
    arousal_strength: StrictFloat = allowed(">= 0.0", ge=0.0)   # how clearly speech carries arousal
    valence_strength: StrictFloat = allowed(">= 0.0", ge=0.0)   # ... frontal alpha asymmetry valence
    coupling_strength: StrictFloat = allowed(">= 0.0", ge=0.0)  # ... channel coupling the class
    artifact_class_coupling: StrictFloat = allowed(">= 0.0", ge=0.0)  # extra blinks in a class's trials (0: none)


class EAVParams(Section):
    task: Literal["speaking", "listening", "both"]  # speaking: EEG + audio; the others EEG only
    segment_seconds: StrictFloat | None = allowed("null or > 0", gt=0)  # cut 20 s trials; null: whole


class BIDSParams(Section):
    """data.source bids (pipeline/data/bids.py): which recordings of a BIDS dataset, and which of
    their events are trials."""

    task: StrictStr | None                      # the BIDS task entity; null: every task
    sessions: tuple[StrictStr, ...] | None      # null: every session
    runs: tuple[StrictStr, ...] | None          # null: every run
    datatype: Literal["eeg"]
    label_column: StrictStr                     # the events.tsv column holding the class (trial_type: value if absent)
    labels: tuple[StrictStr, ...] | None        # the values that are classes; null: every value but a next:<end> marker
    trial_end: StrictStr                        # duration | fixed | next:<value>
    trial_seconds: StrictFloat | None = allowed("null or > 0", gt=0)  # fixed: the window from the onset

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
    root: StrictStr
    manifest: StrictStr                      # manifest source: file name inside root
    classes: tuple[StrictStr, ...] | None    # null: the sorted set of labels
    tasks: tuple[StrictStr, ...]             # the manifest's label columns; the first is the primary task
    task_classes: dict[StrictStr, tuple[StrictStr, ...]]  # a secondary task's classes in order; absent: sorted set
    on_error: Literal["fail", "skip"]
    synthetic: SyntheticParams
    eav: EAVParams
    bids: BIDSParams

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
    seed: StrictInt
    val_subjects: StrictInt = allowed("an integer >= 1", ge=1)
    test_subjects: StrictInt = allowed("an integer >= 1", ge=1)  # holdout only
    folds: StrictInt = allowed("an integer >= 2", ge=2)          # kfold only


# ICLabel's classes (mne-icalabel); brain and other are never removed
ICLABEL_REMOVABLE = ("eye blink", "muscle artifact", "heart beat", "line noise", "channel noise")
ICA_METHODS = ("infomax", "picard", "fastica")  # infomax: extended infomax, as ICLabel was trained


class ArtifactParams(Section):
    """eeg.artifacts: ICA per recording with ICLabel's component labels, and autoreject (local) over
    each recording's trials (pipeline/features/artifacts.py)."""

    ica: StrictBool
    ica_method: Literal[ICA_METHODS]
    ica_components: StrictFloat = allowed("a count >= 2, or a share of variance between 0 and 1", gt=0)
    seed: StrictInt  # ICA's and autoreject's random_state
    iclabel_reject: dict[StrictStr, Annotated[StrictFloat, allowed("a probability in [0, 1)", ge=0.0, lt=1.0)]]
    autoreject: StrictBool  # per trial: bad channels interpolated, or the trial dropped (it leaves the manifest)

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
    h_freq: StrictFloat
    notch: StrictFloat | None = allowed("null or > 0", gt=0)
    sfreq: StrictFloat
    reference: Literal["average", "none"]
    epoch_seconds: StrictFloat = allowed("> 0", gt=0)
    channels: tuple[StrictStr, ...] | None   # a named subset common to all recordings; null: all EEG channels
    read_kwargs: dict[StrictStr, Any]        # MNE reader options, e.g. {data_format: int16} for .cnt
    drop_channels: tuple[StrictStr, ...]     # removed from every recording (bad channels without positions)
    montage: StrictStr | None                # positions by channel name: an MNE standard montage or a montage file
    artifacts: ArtifactParams

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
    clip_seconds: StrictFloat
    n_mels: StrictInt = allowed("an integer >= 8", ge=8)
    n_frames: StrictInt = allowed("an integer >= 8", ge=8)
    n_fft: StrictInt
    fmin: StrictFloat
    fmax: StrictFloat
    crop: Literal["center", "start", "end"]  # clips longer than clip_seconds

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

    sr: StrictInt = allowed(">= 8000", ge=8000)  # audio is resampled to this rate first
    feature_sets: tuple[AcousticFeatureSet, ...] = allowed("a non-empty list of distinct openSMILE sets",
                                                            min_length=1)

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
    bands: dict[StrictStr, Band] = allowed("at least one band", min_length=1)
    homology_dimensions: tuple[HomologyDimension, ...] = allowed("a non-empty subset of [0, 1]", min_length=1)
    n_bins: StrictInt = allowed("an integer >= 4", ge=4)
    sigma: StrictFloat = allowed("> 0", gt=0)

    @model_validator(mode="after")
    def _rules(self):
        check_bands(self.bands)
        if len(set(self.homology_dimensions)) < len(self.homology_dimensions):
            raise Rule("homology_dimensions", list(self.homology_dimensions), "a non-empty subset of [0, 1]")
        return self


class TrainParams(Section):
    """Training knobs shared by every branch (`branches.<m>` overrides any but `seeds`)."""

    seeds: tuple[StrictInt, ...] = allowed("a non-empty list of integers", min_length=1)
    epochs: StrictInt = allowed("an integer >= 1", ge=1)
    patience: StrictInt = allowed("an integer >= 1", ge=1)  # epochs without val improvement before stopping
    batch_size: StrictInt = allowed("an integer >= 2", ge=2)
    lr: StrictFloat = allowed("> 0", gt=0)
    weight_decay: StrictFloat = allowed(">= 0", ge=0)
    dropout: Dropout
    embed_dim: StrictInt = allowed("an integer >= 2", ge=2)
    loss: Literal["ce", "focal"]
    focal_gamma: StrictFloat = allowed(">= 0", ge=0)
    loss_temperature: StrictFloat = allowed("> 0", gt=0)
    device: Literal["auto", "cpu", "cuda"]
    task_weighting: TaskWeighting     # how the tasks' losses add up (data.tasks with more than one)
    task_weights: TaskWeights         # task_weighting fixed: one weight per task of data.tasks
    encoder: StrictStr | None = None  # branches.<m> only; None: the view's default (pipeline.modalities)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        if len(set(seeds)) < len(seeds):
            raise Rule("", list(seeds), "distinct integers")
        return seeds


class FusionParams(Section):
    type: FusionType
    modalities: tuple[Modality, ...]
    epochs: StrictInt = allowed("an integer >= 1", ge=1)
    patience: StrictInt = allowed("an integer >= 1", ge=1)
    restarts: StrictInt = allowed("an integer >= 1", ge=1)  # trained heads per run; the lowest val log-loss is kept
    branch_lr: StrictFloat = allowed(">= 0", ge=0)      # fine-tuning rate of the pretrained branches
    head_lr: StrictFloat = allowed("> 0", gt=0)         # rate of the fusion head
    freeze_epochs: StrictInt = allowed("an integer >= 0", ge=0)  # branches frozen (and in eval mode) first
    hidden: StrictInt = allowed("an integer >= 2", ge=2)
    heads: StrictInt = allowed("an integer >= 1 that divides fusion.hidden", ge=1)  # cross_attention, transformer
    layers: StrictInt = allowed("an integer >= 1", ge=1)  # transformer
    film_condition: StrictStr  # film: the modality that modulates the others (checked only with type film)
    channel_scale: StrictBool                            # learnable per-channel scale of each embedding
    embed_norm: Literal["none", "batchnorm", "layernorm"]
    dropout: Dropout
    curriculum_epochs: StrictInt = allowed("an integer >= 0", ge=0)
    post_curriculum_dropout: Dropout
    modality_dropout: StrictFloat = allowed("0 <= p < 1", ge=0.0, lt=1.0)  # per sample and view, never all
    aux_loss_weight: StrictFloat = allowed(">= 0", ge=0.0)  # x mean of the branches' own losses
    grad_modulation: Literal["none", "ogm_ge"]
    ogm_alpha: StrictFloat = allowed(">= 0", ge=0)
    task_weighting: TaskWeighting     # as train.task_weighting, for the fusion's task heads
    task_weights: TaskWeights
    optimizer: Literal["adamw", "sgd"]
    momentum: StrictFloat = allowed("0 <= momentum < 1", ge=0.0, lt=1.0)  # sgd
    select: Literal["fusion", "safe"]  # safe: per fold, the best on val of fusion, best branch, ensemble of the fused branches
    select_margin: StrictFloat = allowed(">= 0", ge=0.0)  # safe, select_alpha null: fusion must beat the other two by more than this on val
    select_alpha: StrictFloat | None = allowed("null or 0 < alpha <= 1", gt=0.0, le=1.0)  # safe: fall back only on McNemar evidence at this level
    drop_uninformative: StrictBool  # leave out views at chance on val (binomial test) from a fold's fusion
    ensemble_weighting: Literal["equal", "val", "fixed"]
    ensemble_weights: tuple[StrictFloat, ...]            # fixed weighting: one per modality
    loss: Literal["ce", "focal"]
    focal_gamma: StrictFloat = allowed(">= 0", ge=0)
    loss_temperature: StrictFloat = allowed("> 0", gt=0)

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

    students: tuple[Modality, ...] | None  # views to distil the fusion into; []: off; null: resolved by parse_params
    init: Literal["pretrained", "scratch"]  # the student starts from the fold's pretrained branch, or afresh
    alpha: StrictFloat = allowed("0 <= alpha <= 1", ge=0.0, le=1.0)  # weight of the KD term; 1 - alpha: labels
    temperature: StrictFloat = allowed("> 0", gt=0)
    feature_weight: StrictFloat = allowed(">= 0", ge=0.0)  # x MSE to the teacher's fused representation
    teacher_targets: Literal["in_fold", "cross_fitted"]
    inner_folds: StrictInt = allowed("an integer >= 2", ge=2)  # cross_fitted: teachers per fold

    @field_validator("students")
    @classmethod
    def _distinct(cls, students):
        if students is not None and len(set(students)) < len(students):
            raise Rule("", list(students), "distinct views, or null")
        return students


class FinalParams(Section):
    """The final stage: one model on every subject, the DVC artifact to use (pipeline/stages/final.py)."""

    enabled: StrictBool


class BaselinesParams(Section):
    """The baselines stage: scikit-learn logistic regression on handcrafted features of each view,
    its inverse regularisation C chosen per fold on validation from `c_grid`."""

    c_grid: tuple[Annotated[StrictFloat, allowed("> 0", gt=0)], ...] = allowed("a non-empty list of numbers > 0",
                                                                                   min_length=1)
    bands: dict[StrictStr, Band] = allowed("at least one band", min_length=1)  # EEG log band power
    tangent_space: StrictBool  # EEG covariance tangent space (pyriemann) as a baseline too

    @model_validator(mode="after")
    def _rules(self):
        check_bands(self.bands)
        return self


class ComputeParams(Section):
    """Where and how the work runs (pipeline/parallel.py). Results do not depend on backend,
    scheduler or n_jobs (no DVC dependency); they do on torch_threads (a dependency of pretrain
    and fuse) and on portable_numerics (pipeline/numerics.py; a dependency of every stage that
    computes with floats)."""

    n_jobs: StrictInt  # workers of ingest, the feature stages and the training runs; -1: one per core
    backend: Literal["local", "dask"] = "local"  # local: joblib's loky pool; dask: a distributed cluster
    scheduler: StrictStr | None = None  # dask: a scheduler address (tcp://host:8786); null: a LocalCluster
    torch_threads: StrictInt = allowed("an integer >= 1", ge=1, default=1)  # per training run
    portable_numerics: StrictBool = True  # every library capped at AVX2: the same bits on any x86-64 CPU

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
    split: SplitParams
    eeg: EEGParams
    mel: MelParams
    topo: TopoParams
    acoustic: AcousticParams
    train: TrainParams
    branches: dict[str, TrainParams]  # every modality: `train` with `branches.<m>` on top (parse_params)
    fusion: FusionParams
    baselines: BaselinesParams
    distill: DistillParams
    final: FinalParams
    compute: ComputeParams = ComputeParams(n_jobs=1)

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


SECTIONS = ("data", "split", "eeg", "mel", "topo", "acoustic", "train", "fusion", "baselines", "distill", "final", "compute")
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
        text = next((m.description for m in metadata if getattr(m, "description", None)), text)
    return annotation, text


def _declared(model: type[BaseModel], loc: tuple):
    """What is declared at `loc` (a pydantic error location inside `model`): the annotation and
    what is allowed there in words (None if nothing is declared at that level)."""
    annotation, text = model, None
    for part in loc:
        if _is_model(annotation):
            info = annotation.model_fields[part]
            annotation, text = _unwrap(info.annotation, info.description)
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
    """`students: null` as the list it stands for: the fused views that are their signal's plain
    view (eeg for the EEG, acoustic for the speech; the registry's `student`), in fusion.modalities
    order. So changing fusion.modalities alone never leaves a student of a view that is not fused."""
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
