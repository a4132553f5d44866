"""Branch networks: one small encoder per view, each with its own classifier head, and
self-describing checkpoints.

All models take a dict of input tensors keyed by modality, so one training loop serves
branch pretraining and fusion alike. A checkpoint is {"kind", "config", "state_dict"} of plain
values and tensors: it loads with `torch.load(weights_only=True)` (nothing is unpickled but
tensors and builtins) and rebuilds its model without params.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.modalities import MODALITIES



def take(inputs: dict[str, torch.Tensor], idx, device) -> dict[str, torch.Tensor]:
    """The rows `idx` of every view's input tensor, on `device`: one batch of a model's input dict."""
    return {m: x[idx].to(device, non_blocking=True) for m, x in inputs.items()}


class EEGEncoder(nn.Module):
    """Filter-bank spatial-temporal encoder: spatial filters, per-component temporal filters,
    log band power (in the spirit of ShallowConvNet / FBCSP).

    (batch, n_channels, n_times) -> (batch, embed_dim). Spatial mixing first and depthwise
    temporal filters after keep it cheap on CPU; squaring and log-average pooling turn each
    output into the band power of a learned spatial mixture, where frontal asymmetry lives.
    """

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float,
                 components: int = 16, bands: int = 2):
        super().__init__()
        n_channels, n_times = in_shape
        kernel = max(3, n_times // 20)
        pool, stride = max(2, n_times // 7), max(1, n_times // 35)
        self.spatial = nn.Conv1d(n_channels, components, 1, bias=False)
        self.temporal = nn.Conv1d(components, components * bands, kernel, groups=components, bias=False)
        self.norm = nn.BatchNorm1d(components * bands)
        self.pool = nn.AvgPool1d(pool, stride)
        n_out = (n_times - kernel + 1 - pool) // stride + 1
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(components * bands * n_out, embed_dim),
                                     nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.temporal(self.spatial(x)))
        x = torch.log(self.pool(x * x).clamp_min(1e-6))
        return self.project(x.flatten(1))


class LogPowerEncoder(nn.Module):
    """Learned filter bank on every channel, log of each filter's mean power over the epoch,
    then a linear mix: the classical log band-power features, with the bands learned.

    (batch, n_channels, n_times) -> (batch, embed_dim). The same `bands` temporal filters run on
    every channel (few weights: it does not overfit a few hundred trials), and the log comes
    before any mixing of channels, so a power ratio between channels (frontal alpha asymmetry) is
    a linear function of its features, as it is for logistic regression on band power.
    """

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float, bands: int = 6):
        super().__init__()
        n_channels, n_times = in_shape
        self.filters = nn.Conv2d(1, bands, (1, max(3, n_times // 8)), bias=False)
        self.norm = nn.BatchNorm1d(n_channels * bands)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_channels * bands, embed_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filtered = self.filters(x[:, None])                      # (batch, bands, channels, times')
        log_power = torch.log((filtered * filtered).mean(-1).clamp_min(1e-6))
        return self.project(self.norm(log_power.flatten(1)))


class ImageEncoder(nn.Module):
    """Small CNN for multi-channel images (log-mel spectrograms, persistence images).

    (batch, c, h, w) -> (batch, embed_dim). Large inputs (short side >= 64) start with a
    stride-2 convolution so a 128x256 spectrogram costs about as much as a 64x128 one.
    """

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        stride = 2 if min(h, w) >= 64 else 1
        h, w = h // stride, w // stride
        for width in (8, 16, 32, 64):
            layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c, stride = width, 1
            if min(h, w) >= 8:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, embed_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


class LinearEncoder(nn.Module):
    """Dropout on the inputs, then one linear projection: for thousands of correlated features
    (openSMILE's functionals) and a few hundred trials, a regularised linear model is the strong
    choice (the INTERSPEECH baselines are linear), and input dropout acts as feature bagging.

    (batch, features) -> (batch, embed_dim).
    """

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float):
        super().__init__()
        (n_features,) = in_shape
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)


class MLPEncoder(LinearEncoder):
    """LinearEncoder followed by one hidden ReLU layer: (batch, features) -> (batch, embed_dim)."""

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float):
        super().__init__(in_shape, embed_dim, dropout)
        self.project.extend([nn.ReLU(), nn.Dropout(dropout), nn.Linear(embed_dim, embed_dim), nn.ReLU()])


class BraindecodeEncoder(nn.Module):
    """A braindecode model as an encoder: its last layer gives `embed_dim` outputs instead of
    class scores (the branch's own head classifies). Imported on use: braindecode pulls in MNE.

    (batch, n_channels, n_times) -> (batch, embed_dim).
    """

    model_name = ""      # a class in braindecode.models
    extra: dict = {}     # its constructor arguments beyond shape, outputs and dropout

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, dropout: float):
        super().__init__()
        import braindecode.models

        n_channels, n_times = in_shape
        model = getattr(braindecode.models, self.model_name)
        self.net = model(n_chans=n_channels, n_outputs=embed_dim, n_times=n_times, final_conv_length="auto",
                         drop_prob=dropout, **self.extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ShallowFBCSPEncoder(BraindecodeEncoder):
    """ShallowFBCSPNet (Schirrmeister et al. 2017) from braindecode, with its defaults: temporal
    then spatial convolution, squaring, mean pooling, log (the FBCSP pipeline as a network)."""

    model_name = "ShallowFBCSPNet"
    extra = {"add_log_softmax": False}


class EEGNetEncoder(BraindecodeEncoder):
    """EEGNet-8,2 (Lawhern et al. 2018; braindecode's EEGNetv4) with its defaults: temporal
    convolution, depthwise spatial convolution, separable convolution."""

    model_name = "EEGNetv4"


# Encoder registry: name -> class; each modality lists the ones it accepts in pipeline.modalities.
ENCODERS: dict[str, type[nn.Module]] = {
    "log_power": LogPowerEncoder, "filterbank": EEGEncoder, "shallow_fbcsp": ShallowFBCSPEncoder,
    "eegnet": EEGNetEncoder, "image_cnn": ImageEncoder, "linear": LinearEncoder, "mlp": MLPEncoder,
}


class BranchClassifier(nn.Module):
    """Encoder of one modality plus a linear classifier per task; `embed` is what fusion consumes.

    `head` classifies the primary task (`n_classes`; their names `classes` where known); each
    secondary task of `tasks` (name -> its classes) gets its own head over the same embedding, and `forward` then returns every
    task's logits side by side (n, sum of `task_sizes`). `config()` gives every constructor
    argument as plain values, so a checkpoint of config and state_dict rebuilds the branch on
    its own. `temperature` is the loss temperature it was trained with: fusion divides the
    branch's logits by it.
    """

    def __init__(self, modality: str, in_shape: tuple[int, ...], n_classes: int, embed_dim: int,
                 dropout: float, encoder: str | None = None, temperature: float = 1.0,
                 tasks: dict[str, list[str]] | None = None, classes: list[str] | None = None):
        super().__init__()
        self.modality, self.in_shape, self.n_classes = modality, tuple(int(d) for d in in_shape), n_classes
        self.embed_dim, self.dropout, self.temperature = embed_dim, dropout, temperature
        self.encoder_name = encoder or MODALITIES[modality].encoders[0]
        self.encoder = ENCODERS[self.encoder_name](self.in_shape, embed_dim, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))
        self.classes = None if classes is None else list(classes)  # the primary task's names, for the record
        self.tasks = {task: list(names) for task, names in (tasks or {}).items()}
        self.task_heads = nn.ModuleDict({task: nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, len(classes)))
                                         for task, classes in self.tasks.items()})

    @property
    def task_sizes(self) -> list[int]:
        """Class counts of the primary task, then of each secondary task (forward's column blocks)."""
        return [self.n_classes, *(len(classes) for classes in self.tasks.values())]

    def config(self) -> dict:
        return {"modality": self.modality, "in_shape": list(self.in_shape), "n_classes": self.n_classes,
                "embed_dim": self.embed_dim, "dropout": self.dropout, "encoder": self.encoder_name,
                "temperature": self.temperature, "classes": self.classes, "tasks": self.tasks}

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(inputs[self.modality])

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Every task's logits of an embedding, side by side (n, sum of `task_sizes`)."""
        if not self.task_heads:
            return self.head(embedding)
        return torch.cat([self.head(embedding), *(head(embedding) for head in self.task_heads.values())], dim=1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.embed(inputs))


def save_checkpoint(path: Path | BinaryIO, kind: str, config: dict, model: nn.Module) -> None:
    torch.save({"kind": kind, "config": config, "state_dict": model.state_dict()}, path)


def read_checkpoint(path: Path, kind: str, map_location="cpu") -> dict:
    """A checkpoint's {"kind", "config", "state_dict"}; a missing, corrupt or foreign file is a
    PipelineError naming it."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: checkpoint not found; run the stage that writes it") from None
    except Exception as exc:  # corrupt, or an old pickled checkpoint that weights_only refuses
        raise PipelineError(f"{path}: not a readable checkpoint ({type(exc).__name__}); rerun the stage "
                            "that writes it") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise PipelineError(f"{path}: not a {kind} checkpoint; rerun the stage that writes it")
    return ckpt


def branch_from_config(config: dict) -> BranchClassifier:
    return BranchClassifier(config["modality"], tuple(config["in_shape"]), config["n_classes"],
                            config["embed_dim"], config["dropout"], config["encoder"], config["temperature"],
                            config.get("tasks"), config.get("classes"))  # both absent before multi-task heads


def save_branch(path: Path | BinaryIO, model: BranchClassifier) -> None:
    save_checkpoint(path, "branch", model.config(), model)


def load_branch(path: Path, map_location="cpu") -> BranchClassifier:
    ckpt = read_checkpoint(path, "branch", map_location)
    model = branch_from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model
