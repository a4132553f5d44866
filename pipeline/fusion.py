"""Fusion of pretrained branches: a registry of fusion heads (name -> class).

A head gets the branch embeddings (and the branch logits, for heads that combine
predictions) as dicts keyed by modality, in `fusion.modalities` order, and returns class
logits. Adding a fusion method is one class here plus one line in FUSION_TYPES.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.nets import BranchClassifier


class ConcatFusion(nn.Module):
    """Concatenate the embeddings, then an MLP projection to the classes."""

    def __init__(self, embed_dims: dict[str, int], n_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(embed_dims.values()), hidden),
                                 nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, embeddings: dict[str, torch.Tensor], logits: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat(list(embeddings.values()), dim=1))


FUSION_TYPES = {"concat": ConcatFusion}


class FusionModel(nn.Module):
    """Pretrained branches feeding one fusion head; takes the same input dict as a branch."""

    def __init__(self, branches: dict[str, BranchClassifier], head: nn.Module):
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.head = head

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        embeddings = {m: b.embed(inputs) for m, b in self.branches.items()}
        logits = {m: self.branches[m].head(e) for m, e in embeddings.items()}
        return self.head(embeddings, logits)


def build_fusion(fusion_type: str, branches: dict[str, BranchClassifier], n_classes: int,
                 hidden: int, dropout: float) -> FusionModel:
    embed_dims = {m: b.head[-1].in_features for m, b in branches.items()}
    head = FUSION_TYPES[fusion_type](embed_dims, n_classes, hidden, dropout)
    return FusionModel(branches, head)
