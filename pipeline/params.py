"""The one place where params.yaml is typed and validated.

Every stage calls :func:`load_params` before doing any work, so a wrong value stops the stage
with one line naming the key and what is allowed, and nothing is written.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import PipelineError

MODALITIES = ("eeg", "mel", "topo")
SPLIT_SCHEMES = ("holdout", "kfold", "loso")
LOSSES = ("ce", "focal")
DEVICES = ("auto", "cpu", "cuda")
REFERENCES = ("average", "none")
TOPO_SOURCES = ("connectivity",)
EMBED_NORMS = ("none", "batchnorm", "layernorm")
GRAD_MODULATIONS = ("none", "ogm_ge")
ENSEMBLE_WEIGHTINGS = ("equal", "val", "fixed")
ON_ERROR = ("fail", "skip")
EAV_TASKS = ("speaking", "listening", "both")
CROPS = ("center", "start", "end")
SYNTHETIC_ROOT = "data/synthetic"  # where the synthesize stage writes (a dvc.yaml out)


class ParamsError(PipelineError, ValueError):
    """A params value that is missing, of the wrong type or outside what is allowed."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"params: {key} = {value!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True)
class SyntheticParams:
    seed: int
    n_subjects: int
    trials_per_class: int
    trial_seconds: float
    gap_seconds: float
    eeg_sfreq: float
    audio_sr: int
    arousal_strength: float
    valence_strength: float
    coupling_strength: float

    def validate(self, key: str) -> None:
        _require(self.n_subjects >= 3, f"{key}.n_subjects", self.n_subjects, "an integer >= 3")
        _require(self.trials_per_class >= 1, f"{key}.trials_per_class", self.trials_per_class,
                 "an integer >= 1")
        _require(self.trial_seconds >= 1.0, f"{key}.trial_seconds", self.trial_seconds, ">= 1.0")
        _require(self.gap_seconds >= 0.0, f"{key}.gap_seconds", self.gap_seconds, ">= 0.0")
        _require(self.eeg_sfreq >= 128, f"{key}.eeg_sfreq", self.eeg_sfreq, ">= 128")
        _require(self.audio_sr >= 8000, f"{key}.audio_sr", self.audio_sr, ">= 8000")
        for name in ("arousal_strength", "valence_strength", "coupling_strength"):
            value = getattr(self, name)
            _require(value >= 0.0, f"{key}.{name}", value, ">= 0.0")


@dataclass(frozen=True)
class EAVParams:
    task: str                # speaking (EEG + audio) | listening | both (EEG only)
    segment_seconds: float | None  # cut each 20 s trial into segments of this length; null: whole trials

    def validate(self, key: str) -> None:
        _require(self.task in EAV_TASKS, f"{key}.task", self.task, ", ".join(EAV_TASKS))
        _require(self.segment_seconds is None or self.segment_seconds > 0, f"{key}.segment_seconds",
                 self.segment_seconds, "null or > 0")


@dataclass(frozen=True)
class DataParams:
    source: str
    root: str
    manifest: str                   # manifest source: file name inside root
    classes: tuple[str, ...] | None  # null: the sorted set of labels
    on_error: str                   # fail | skip
    synthetic: SyntheticParams
    eav: EAVParams

    def validate(self, key: str) -> None:
        from pipeline.data.sources import SOURCES  # the registry is the list of allowed sources

        _require(self.source in SOURCES, f"{key}.source", self.source, ", ".join(SOURCES))
        if self.source == "synthetic":
            _require(Path(self.root) == Path(SYNTHETIC_ROOT), f"{key}.root", self.root,
                     f"{SYNTHETIC_ROOT} with data.source synthetic (where the synthesize stage writes)")
        _require(self.on_error in ON_ERROR, f"{key}.on_error", self.on_error, ", ".join(ON_ERROR))
        if self.classes is not None:
            _require(len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes),
                     f"{key}.classes", list(self.classes), "null or a list of 2 or more distinct labels")
        self.synthetic.validate(f"{key}.synthetic")
        self.eav.validate(f"{key}.eav")


@dataclass(frozen=True)
class SplitParams:
    scheme: str
    seed: int
    val_subjects: int
    test_subjects: int
    folds: int

    def validate(self, key: str) -> None:
        _require(self.scheme in SPLIT_SCHEMES, f"{key}.scheme", self.scheme, ", ".join(SPLIT_SCHEMES))
        _require(self.val_subjects >= 1, f"{key}.val_subjects", self.val_subjects, "an integer >= 1")
        _require(self.test_subjects >= 1, f"{key}.test_subjects", self.test_subjects,
                 "an integer >= 1")
        _require(self.folds >= 2, f"{key}.folds", self.folds, "an integer >= 2")


@dataclass(frozen=True)
class EEGParams:
    l_freq: float
    h_freq: float
    notch: float | None
    sfreq: float
    reference: str
    epoch_seconds: float
    channels: tuple[str, ...] | None  # named subset common to all recordings; null: all EEG channels
    read_kwargs: dict[str, typing.Any]  # passed to MNE's reader, e.g. {data_format: int16} for .cnt

    def validate(self, key: str) -> None:
        _require(self.channels is None or (len(self.channels) >= 2 and len(set(self.channels)) == len(self.channels)),
                 f"{key}.channels", self.channels, "null or a list of 2 or more distinct channel names")
        _require(0 < self.l_freq < self.h_freq, f"{key}.l_freq", self.l_freq,
                 f"0 < l_freq < h_freq ({self.h_freq})")
        _require(self.sfreq > 2 * self.h_freq, f"{key}.sfreq", self.sfreq,
                 f"> 2 * h_freq ({2 * self.h_freq})")
        _require(self.notch is None or self.notch > 0, f"{key}.notch", self.notch, "null or > 0")
        _require(self.reference in REFERENCES, f"{key}.reference", self.reference,
                 ", ".join(REFERENCES))
        _require(self.epoch_seconds > 0, f"{key}.epoch_seconds", self.epoch_seconds, "> 0")


@dataclass(frozen=True)
class MelParams:
    sr: int
    clip_seconds: float
    n_mels: int
    n_frames: int
    n_fft: int
    fmin: float
    fmax: float
    crop: str  # clips longer than clip_seconds: center | start | end

    def validate(self, key: str) -> None:
        _require(self.crop in CROPS, f"{key}.crop", self.crop, ", ".join(CROPS))
        _require(self.sr >= 8000, f"{key}.sr", self.sr, ">= 8000")
        _require(self.n_mels >= 8, f"{key}.n_mels", self.n_mels, "an integer >= 8")
        _require(self.n_frames >= 8, f"{key}.n_frames", self.n_frames, "an integer >= 8")
        _require(self.clip_seconds * self.sr >= self.n_frames, f"{key}.clip_seconds",
                 self.clip_seconds, f">= n_frames / sr ({self.n_frames / self.sr:.4f})")
        _require(0 <= self.fmin < self.fmax <= self.sr / 2, f"{key}.fmax", self.fmax,
                 f"fmin < fmax <= sr / 2 ({self.sr / 2})")


@dataclass(frozen=True)
class TopoParams:
    source: str
    bands: dict[str, tuple[float, float]]
    homology_dimensions: tuple[int, ...]
    n_bins: int
    sigma: float

    def validate(self, key: str) -> None:
        _require(self.source in TOPO_SOURCES, f"{key}.source", self.source, ", ".join(TOPO_SOURCES))
        _require(len(self.bands) >= 1, f"{key}.bands", self.bands, "at least one band")
        for name, (low, high) in self.bands.items():
            _require(0 < low < high, f"{key}.bands.{name}", [low, high], "[low, high] with 0 < low < high")
        dims = self.homology_dimensions
        _require(len(dims) >= 1 and set(dims) <= {0, 1} and len(set(dims)) == len(dims),
                 f"{key}.homology_dimensions", list(dims), "a non-empty subset of [0, 1]")
        _require(self.n_bins >= 4, f"{key}.n_bins", self.n_bins, "an integer >= 4")
        _require(self.sigma > 0, f"{key}.sigma", self.sigma, "> 0")


def _validate_training(obj, key: str) -> None:
    """Checks shared by branch training and fusion training."""
    _require(obj.epochs >= 1, f"{key}.epochs", obj.epochs, "an integer >= 1")
    _require(obj.patience >= 1, f"{key}.patience", obj.patience, "an integer >= 1")
    _require(0.0 <= obj.dropout < 1.0, f"{key}.dropout", obj.dropout, "0 <= dropout < 1")
    _require(obj.loss in LOSSES, f"{key}.loss", obj.loss, ", ".join(LOSSES))
    _require(obj.focal_gamma >= 0, f"{key}.focal_gamma", obj.focal_gamma, ">= 0")
    _require(obj.loss_temperature > 0, f"{key}.loss_temperature", obj.loss_temperature, "> 0")


@dataclass(frozen=True)
class TrainParams:
    seeds: tuple[int, ...]
    epochs: int
    patience: int
    batch_size: int
    lr: float
    weight_decay: float
    dropout: float
    embed_dim: int
    loss: str
    focal_gamma: float
    loss_temperature: float
    device: str

    def validate(self, key: str) -> None:
        _require(len(self.seeds) >= 1, f"{key}.seeds", list(self.seeds), "a non-empty list of integers")
        _require(len(set(self.seeds)) == len(self.seeds), f"{key}.seeds", list(self.seeds),
                 "distinct integers")
        _validate_training(self, key)
        _require(self.batch_size >= 2, f"{key}.batch_size", self.batch_size, "an integer >= 2")
        _require(self.lr > 0, f"{key}.lr", self.lr, "> 0")
        _require(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, ">= 0")
        _require(self.embed_dim >= 2, f"{key}.embed_dim", self.embed_dim, "an integer >= 2")
        _require(self.device in DEVICES, f"{key}.device", self.device, ", ".join(DEVICES))


@dataclass(frozen=True)
class FusionParams:
    type: str
    modalities: tuple[str, ...]
    epochs: int
    patience: int
    branch_lr: float
    head_lr: float
    freeze_epochs: int
    hidden: int
    heads: int                      # cross_attention, transformer
    layers: int                     # transformer
    film_condition: str             # film: the modality that modulates the others
    channel_scale: bool             # learnable per-channel scale of each embedding (init 1)
    embed_norm: str                 # none | batchnorm | layernorm, before fusion
    dropout: float
    curriculum_epochs: int          # easy-to-hard epochs ordered by branch confidence
    post_curriculum_dropout: float  # dropout after the curriculum phase
    grad_modulation: str            # none | ogm_ge
    ogm_alpha: float
    ensemble_weighting: str         # ensemble: equal | val (validation accuracy) | fixed
    ensemble_weights: tuple[float, ...]  # ensemble with fixed weighting, one per modality
    loss: str
    focal_gamma: float
    loss_temperature: float

    def validate(self, key: str) -> None:
        from pipeline.fusion import FUSION_TYPES  # the registry is the list of allowed types

        _require(self.type in FUSION_TYPES, f"{key}.type", self.type, ", ".join(FUSION_TYPES))
        mods = self.modalities
        _require(len(mods) >= 2 and set(mods) <= set(MODALITIES) and len(set(mods)) == len(mods),
                 f"{key}.modalities", list(mods), f"2 or 3 distinct of {', '.join(MODALITIES)}")
        _validate_training(self, key)
        _require(self.branch_lr >= 0, f"{key}.branch_lr", self.branch_lr, ">= 0")
        _require(self.head_lr > 0, f"{key}.head_lr", self.head_lr, "> 0")
        _require(self.freeze_epochs >= 0, f"{key}.freeze_epochs", self.freeze_epochs, "an integer >= 0")
        _require(self.hidden >= 2, f"{key}.hidden", self.hidden, "an integer >= 2")
        _require(self.heads >= 1 and self.hidden % self.heads == 0, f"{key}.heads", self.heads,
                 f"an integer >= 1 that divides fusion.hidden ({self.hidden})")
        _require(self.layers >= 1, f"{key}.layers", self.layers, "an integer >= 1")
        if self.type == "film":
            _require(self.film_condition in mods, f"{key}.film_condition", self.film_condition,
                     f"one of fusion.modalities ({', '.join(mods)})")
        _require(self.embed_norm in EMBED_NORMS, f"{key}.embed_norm", self.embed_norm,
                 ", ".join(EMBED_NORMS))
        _require(self.curriculum_epochs >= 0, f"{key}.curriculum_epochs", self.curriculum_epochs,
                 "an integer >= 0")
        _require(0.0 <= self.post_curriculum_dropout < 1.0, f"{key}.post_curriculum_dropout",
                 self.post_curriculum_dropout, "0 <= dropout < 1")
        _require(self.grad_modulation in GRAD_MODULATIONS, f"{key}.grad_modulation",
                 self.grad_modulation, ", ".join(GRAD_MODULATIONS))
        _require(self.ogm_alpha >= 0, f"{key}.ogm_alpha", self.ogm_alpha, ">= 0")
        _require(self.ensemble_weighting in ENSEMBLE_WEIGHTINGS, f"{key}.ensemble_weighting",
                 self.ensemble_weighting, ", ".join(ENSEMBLE_WEIGHTINGS))
        if self.type == "ensemble" and self.ensemble_weighting == "fixed":
            w = self.ensemble_weights
            _require(len(w) == len(mods) and min(w) >= 0 and sum(w) > 0, f"{key}.ensemble_weights",
                     list(w), f"{len(mods)} non-negative numbers (one per fusion.modalities), not all 0")


@dataclass(frozen=True)
class ComputeParams:
    n_jobs: int  # joblib workers of ingest and the feature stages; -1: one per core

    def validate(self, key: str) -> None:
        _require(self.n_jobs >= 1 or self.n_jobs == -1, f"{key}.n_jobs", self.n_jobs, "an integer >= 1, or -1")


@dataclass(frozen=True)
class Params:
    data: DataParams
    split: SplitParams
    eeg: EEGParams
    mel: MelParams
    topo: TopoParams
    train: TrainParams
    branches: dict[str, TrainParams] = field(default_factory=dict)
    fusion: FusionParams | None = None
    compute: ComputeParams = ComputeParams(n_jobs=1)

    def check_modalities(self, available: list[str], missing_reason: str) -> None:
        """Fusing a modality the data does not have is a params error naming fusion.modalities."""
        lacking = [m for m in self.fusion.modalities if m not in available]
        _require(not lacking, "fusion.modalities", list(self.fusion.modalities),
                 f"modalities the data has ({', '.join(available)}); {', '.join(lacking)}: {missing_reason}")

    def branch(self, modality: str) -> TrainParams:
        """Training params of one branch: `train` with `branches.<modality>` on top."""
        return self.branches[modality]


def _coerce(value, hint, key: str):
    """Convert one YAML value to the annotated type, or raise ParamsError naming the key."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), key, value, "a list")
        (inner, *rest) = typing.get_args(hint)
        if rest and rest[0] is not Ellipsis:  # fixed-length tuple such as (low, high)
            _require(len(value) == len(typing.get_args(hint)), key, value,
                     f"a list of {len(typing.get_args(hint))} numbers")
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _require(isinstance(value, dict), key, value, "a mapping")
        _, inner = typing.get_args(hint)
        return {k: _coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    if hint is typing.Any:
        return value
    if hint is bool:
        _require(isinstance(value, bool), key, value, "true or false")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if hint is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), key, value,
                 "a number")
        return float(value)
    if hint is str:
        _require(isinstance(value, str), key, value, "a string")
        return value
    raise TypeError(f"unsupported annotation {hint!r} for {key}")


def _build(cls, raw, key: str):
    """Build dataclass `cls` from a mapping: no unknown keys, no missing keys, typed values."""
    _require(isinstance(raw, dict), key, raw, "a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    _require(not unknown, f"{key}.{unknown[0]}" if unknown else key, "(unknown key)",
             ", ".join(names))
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"params: {key}.{missing[0]} is missing; required keys: {', '.join(names)}")
    return cls(**{n: _coerce(raw[n], hints[n], f"{key}.{n}") for n in names})


def parse_params(raw: dict) -> Params:
    """Typed, validated Params from the parsed YAML mapping."""
    _require(isinstance(raw, dict), "params", type(raw).__name__, "a mapping at the top level")
    sections = {"data": DataParams, "split": SplitParams, "eeg": EEGParams, "mel": MelParams,
                "topo": TopoParams, "train": TrainParams, "fusion": FusionParams, "compute": ComputeParams}
    allowed = [*sections, "branches"]
    unknown = sorted(set(raw) - set(allowed))
    _require(not unknown, unknown[0] if unknown else "", "(unknown section)", ", ".join(allowed))
    built = {}
    for name, cls in sections.items():
        if name not in raw:
            raise ParamsError(f"params: section {name} is missing; required: {', '.join(allowed)}")
        built[name] = _build(cls, raw[name], name)
        built[name].validate(name)

    overrides = raw.get("branches") or {}
    _require(isinstance(overrides, dict), "branches", overrides, "a mapping of modality -> train keys")
    bad = sorted(set(overrides) - set(MODALITIES))
    _require(not bad, f"branches.{bad[0]}" if bad else "branches", "(unknown modality)",
             ", ".join(MODALITIES))
    branches = {}
    for modality in MODALITIES:
        override = overrides.get(modality) or {}
        _require(isinstance(override, dict), f"branches.{modality}", override, "a mapping of train keys")
        branch = _build(TrainParams, {**raw["train"], **override}, f"branches.{modality}")
        branch.validate(f"branches.{modality}")
        branches[modality] = branch
    return Params(branches=branches, **built)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ParamsError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params: file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_params(raw)
