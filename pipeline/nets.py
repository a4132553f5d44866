"""Branch networks: one small encoder per view, each with its own classifier head.

All models take a dict of input tensors keyed by modality, so one training loop serves
branch pretraining and fusion alike.
"""
from __future__ import annotations

import torch
from torch import nn


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


ENCODERS = {"eeg": EEGEncoder, "mel": ImageEncoder, "topo": ImageEncoder}


class BranchClassifier(nn.Module):
    """Encoder of one modality plus a linear classifier; `embed` is what fusion consumes."""

    def __init__(self, modality: str, in_shape: tuple[int, ...], n_classes: int, embed_dim: int,
                 dropout: float):
        super().__init__()
        self.modality, self.in_shape, self.n_classes = modality, tuple(in_shape), n_classes
        self.embed_dim = embed_dim
        self.temperature = 1.0  # the loss temperature it was trained with (set on loading)
        self.encoder = ENCODERS[modality](tuple(in_shape), embed_dim, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(inputs[self.modality])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(inputs))
