"""Fusion of pretrained branches: a registry of fusion heads (name -> class).

A head gets, keyed by modality in `fusion.modalities` order, the branch embeddings (after the
optional per-embedding norm and channel scale) and the branch logits (each branch's own
pretrained classifiers, divided by that branch's loss temperature), and returns class logits:
with secondary tasks (data.tasks), every task's side by side (`sizes`: each task's class count),
so the last layer of a trained head is one linear classifier per task over its shared fused
representation.
Adding a fusion method is one class here plus one line in FUSION_HEADS (and its name in
pipeline.params.FUSION_TYPES, the allowed values of `fusion.type`).
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets import BranchClassifier, branch_from_config, read_checkpoint, save_checkpoint, take
from pipeline.params import FusionParams

Tensors = dict[str, torch.Tensor]


def _mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, n_out))


class FusionHead(nn.Module):
    """Base: `trainable` False means no fine-tuning at all; `freezes_branches` True means the
    branches stay frozen for the whole of training. Heads that weigh modalities leave their
    weights of the last forward in `last_weights`, (batch, n_modalities), for diagnostics.
    Heads that can say what they make of each modality alone implement `modality_logits`
    (OGM-GE scores modalities with it)."""

    trainable = True
    freezes_branches = False
    last_weights: torch.Tensor | None = None

    def modality_logits(self, emb: Tensors) -> Tensors | None:
        return None


class ConcatFusion(FusionHead):
    """Concatenate the embeddings, then an MLP projection to the classes."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.n_primary = sizes[0]
        self.mlp = _mlp(sum(dims.values()), p.hidden, sum(sizes), p.dropout)

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        return self.mlp(torch.cat(list(emb.values()), dim=1))

    def modality_logits(self, emb: Tensors) -> Tensors:
        """Each modality through the head alone: its block of the first layer's weights (the bias
        shared equally between modalities), then the rest of the MLP (dropout off), as OGM-GE's
        official code splits its concat classifier by modality."""
        first, last = self.mlp[1], self.mlp[4]
        out, start = {}, 0
        for m, e in emb.items():
            block = first.weight[:, start:start + e.shape[1]]
            start += e.shape[1]
            hidden = F.relu(e @ block.T + first.bias / len(emb))
            out[m] = (hidden @ last.weight.T + last.bias / len(emb))[:, :self.n_primary]  # the primary task's
        return out


class GatedFusion(FusionHead):
    """Gated multimodal unit (Arevalo et al. 2017): h = sum_m z_m * tanh(W_m e_m), where the
    per-element gates z_m = sigmoid(V_m [e_1, ..., e_M]) see all modalities."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.project = nn.ModuleDict({m: nn.Linear(d, p.hidden) for m, d in dims.items()})
        self.gate = nn.ModuleDict({m: nn.Linear(sum(dims.values()), p.hidden) for m in dims})
        self.out = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(p.hidden, sum(sizes)))

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        joint = torch.cat(list(emb.values()), dim=1)
        gates = {m: torch.sigmoid(self.gate[m](joint)) for m in emb}
        self.last_weights = torch.stack([g.mean(dim=1) for g in gates.values()], dim=1).detach()
        return self.out(sum(gates[m] * torch.tanh(self.project[m](e)) for m, e in emb.items()))


class _Tokens(nn.Module):
    """Each embedding projected to a `hidden`-sized token: (batch, n_modalities, hidden)."""

    def __init__(self, dims: dict[str, int], hidden: int):
        super().__init__()
        self.project = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})

    def forward(self, emb: Tensors) -> torch.Tensor:
        return torch.stack([self.project[m](e) for m, e in emb.items()], dim=1)


class CrossAttentionFusion(FusionHead):
    """A pooled query (layer-normed mean of the modality tokens) attends over the tokens with
    multi-head attention, then a feed-forward block, both with residual connections."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.tokens = _Tokens(dims, p.hidden)
        self.query_norm = nn.LayerNorm(p.hidden)
        self.attention = nn.MultiheadAttention(p.hidden, p.heads, dropout=p.dropout, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(p.hidden), nn.Linear(p.hidden, 2 * p.hidden), nn.ReLU(),
                                nn.Dropout(p.dropout), nn.Linear(2 * p.hidden, p.hidden))
        self.out = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(p.hidden, sum(sizes)))

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        tokens = self.tokens(emb)
        query = self.query_norm(tokens.mean(dim=1, keepdim=True))
        attended, weights = self.attention(query, tokens, tokens)  # weights: (batch, 1, n_modalities)
        self.last_weights = weights.squeeze(1).detach()
        x = (query + attended).squeeze(1)
        return self.out(x + self.ff(x))


class FiLMFusion(FusionHead):
    """FiLM (Perez et al. 2018): the `film_condition` modality produces a scale and a shift for
    every other embedding, e' = (1 + gamma) * e + beta; then concat and an MLP."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.condition = p.film_condition
        cond = dims[self.condition]
        self.film = nn.ModuleDict({m: nn.Linear(cond, 2 * d) for m, d in dims.items() if m != self.condition})
        for layer in self.film.values():  # start as the identity modulation
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.mlp = _mlp(sum(dims.values()), p.hidden, sum(sizes), p.dropout)

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        c = emb[self.condition]
        parts = [c]
        for m, layer in self.film.items():
            gamma, beta = layer(c).chunk(2, dim=1)
            parts.append((1 + gamma) * emb[m] + beta)
        return self.mlp(torch.cat(parts, dim=1))


class TransformerFusion(FusionHead):
    """Modality tokens (plus a learned modality embedding) and a learned CLS token through
    `fusion.layers` transformer encoder layers; the CLS output is classified."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.tokens = _Tokens(dims, p.hidden)
        self.cls = nn.Parameter(torch.zeros(1, 1, p.hidden))
        self.position = nn.Parameter(torch.zeros(1, len(dims) + 1, p.hidden))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(p.hidden, p.heads, dim_feedforward=2 * p.hidden,
                                           dropout=p.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(p.hidden), nn.Linear(p.hidden, sum(sizes)))

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        tokens = self.tokens(emb)
        x = torch.cat([self.cls.expand_as(tokens[:, :1]), tokens], dim=1) + self.position  # traced: any batch size
        return self.out(self.encoder(x)[:, 0])


class WeightedFusion(FusionHead):
    """A small network gives one softmax weight per modality per sample; the fused vector is
    the weighted sum of the same-size projected embeddings, then an MLP."""

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.tokens = _Tokens(dims, p.hidden)
        self.scorer = nn.Sequential(nn.Linear(sum(dims.values()), p.hidden), nn.ReLU(),
                                    nn.Linear(p.hidden, len(dims)))
        self.mlp = _mlp(p.hidden, p.hidden, sum(sizes), p.dropout)

    def modality_weights(self, emb: Tensors) -> torch.Tensor:
        """(batch, n_modalities), rows sum to 1."""
        return F.softmax(self.scorer(torch.cat(list(emb.values()), dim=1)), dim=1)

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        weights = self.modality_weights(emb)
        self.last_weights = weights.detach()
        return self.mlp((weights[:, :, None] * self.tokens(emb)).sum(dim=1))


class LateFusion(FusionHead):
    """A trainable linear layer over the concatenated branch log-probabilities, branches frozen;
    with several tasks, one such layer per task over that task's log-probabilities.

    Initialised to the equal-weight product of experts (mean of log-probabilities), so training
    starts from a sensible combination and learns per-class, per-modality weights.
    """

    freezes_branches = True

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.sizes = list(sizes)
        self.linears = nn.ModuleList(nn.Linear(len(dims) * k, k) for k in sizes)
        with torch.no_grad():
            for k, linear in zip(sizes, self.linears):
                linear.weight.copy_(torch.eye(k).repeat(1, len(dims)) / len(dims))
                linear.bias.zero_()

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        per_task = zip(*(l.split(self.sizes, dim=1) for l in logits.values()))  # task -> each branch's block
        out = [linear(torch.cat([F.log_softmax(l, dim=1) for l in blocks], dim=1))
               for linear, blocks in zip(self.linears, per_task)]
        # a modality's weight: its share of the primary task's layer's absolute weight
        primary = self.linears[0]
        share = primary.weight.detach().abs().reshape(len(primary.bias), len(logits), -1).sum(dim=(0, 2))
        self.last_weights = (share / share.sum()).expand(out[0].shape[0], -1)
        return torch.cat(out, dim=1)


class EnsembleFusion(FusionHead):
    """Weighted average of the branch probabilities (of each task), no training. Weights are set
    by the fuse stage (equal, fixed from params, or validation accuracy); returns
    log-probabilities so a softmax of the output gives back the average."""

    trainable = False

    def __init__(self, dims: dict[str, int], sizes: list[int], p: FusionParams):
        super().__init__()
        self.sizes = list(sizes)
        self.register_buffer("weights", torch.full((len(dims),), 1.0 / len(dims)))

    def set_weights(self, weights) -> None:
        w = torch.as_tensor(weights, dtype=torch.float32)
        self.weights.copy_(w / w.sum())

    def forward(self, emb: Tensors, logits: Tensors) -> torch.Tensor:
        out = []
        for blocks in zip(*(l.split(self.sizes, dim=1) for l in logits.values())):
            probs = torch.stack([F.softmax(l, dim=1) for l in blocks], dim=0)
            out.append(torch.log((self.weights[:, None, None] * probs).sum(dim=0).clamp_min(1e-12)))
        self.last_weights = self.weights.expand(out[0].shape[0], -1)
        return torch.cat(out, dim=1)


FUSION_HEADS: dict[str, type[FusionHead]] = {
    "concat": ConcatFusion,
    "gated": GatedFusion,
    "cross_attention": CrossAttentionFusion,
    "film": FiLMFusion,
    "transformer": TransformerFusion,
    "weighted": WeightedFusion,
    "late": LateFusion,
    "ensemble": EnsembleFusion,
}


class EmbeddingPrep(nn.Module):
    """Optional norm (batchnorm | layernorm) and learnable per-channel scale (init 1) applied to
    one embedding before fusion: the usual remedies when branch scales differ."""

    def __init__(self, dim: int, norm: str, channel_scale: bool):
        super().__init__()
        self.norm = nn.Identity() if norm == "none" else \
            {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}[norm](dim)
        self.scale = nn.Parameter(torch.ones(dim)) if channel_scale else None

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        e = self.norm(e)
        return e * self.scale if self.scale is not None else e


def drop_modalities(inputs: Tensors, modalities: list[str], p: float, fills: Tensors | None = None) -> Tensors:
    """Modality dropout: each sample loses each of `modalities` with probability `p`, its
    normalised input replaced by 0 (the train mean), or by `fills[m]` (1, ...) where given; a
    sample that would lose all of them keeps one, drawn uniformly. Draws from torch's global
    generator (seeded per run)."""
    n = len(inputs[modalities[0]])
    keep = torch.rand(n, len(modalities)) >= p
    rescue = torch.randint(len(modalities), (n,))
    none = ~keep.any(dim=1)
    keep[none, rescue[none]] = True
    out = dict(inputs)
    for k, m in enumerate(modalities):
        x = inputs[m]
        fill = (fills or {}).get(m)
        fill = torch.zeros((), dtype=x.dtype) if fill is None else fill
        out[m] = torch.where(keep[:, k].to(x.device).view(-1, *[1] * (x.dim() - 1)), x, fill.to(x.device))
    return out


class PrecomputedBranch(nn.Module):
    """A frozen branch whose encoder has already run over every trial (`precompute_branches`):
    its input is the branch's embedding, so a fusion head trained over frozen branches pays for
    the encoders once per fold instead of every epoch of every restart (they were 70 % of a
    fusion run). The same training: a frozen branch runs in eval mode, where each trial's
    embedding depends on that trial alone (up to the last bits, which can differ with the batch
    size a product runs in). `dropped` (1, embed_dim) is the embedding of a view modality dropout
    removed (the encoder on the zero input, the train mean). `classify`, `temperature` and the
    rest are the wrapped branch's; `branch` is the real one, put back after training."""

    def __init__(self, branch: BranchClassifier, dropped: torch.Tensor):
        super().__init__()
        self.branch = branch
        self.register_buffer("dropped", dropped)

    @property
    def embed_dim(self) -> int:
        return self.branch.embed_dim

    @property
    def temperature(self) -> float:
        return self.branch.temperature

    @property
    def task_sizes(self) -> list[int]:
        return self.branch.task_sizes

    @property
    def encoder(self) -> nn.Module:  # frozen: gradient diagnostics and modulation find no gradients
        return self.branch.encoder

    def embed(self, inputs: Tensors) -> torch.Tensor:
        return inputs[self.branch.modality]

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.branch.classify(embedding)


@torch.no_grad()
def embeddings_of(branch: BranchClassifier, x, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """`branch`'s embeddings (n, embed_dim) of its view's inputs `x` (anything that gives rows as
    tensors when indexed), in eval mode, on the CPU."""
    branch.eval().to(device)
    return torch.cat([branch.embed({branch.modality: x[start:start + batch_size].to(device)}).cpu()
                      for start in range(0, len(x), batch_size)])


@torch.no_grad()
def precompute_branches(branches: dict[str, BranchClassifier], inputs: Tensors,
                        device: torch.device) -> tuple[dict[str, PrecomputedBranch], Tensors]:
    """Each branch run once, in eval mode, over `inputs` (every trial of a fold): the branches
    that take the embeddings instead (`PrecomputedBranch`), and the embeddings (n_trials,
    embed_dim) keyed by modality, on the CPU."""
    wrapped, embeddings = {}, {}
    for m, branch in branches.items():
        embeddings[m] = embeddings_of(branch, inputs[m], device)
        zero = torch.zeros(1, *inputs[m].shape[1:], device=device)
        wrapped[m] = PrecomputedBranch(branch, branch.embed({m: zero}))
    return wrapped, embeddings


class FusionModel(nn.Module):
    """Pretrained branches feeding one fusion head; takes the same input dict as a branch (over
    `PrecomputedBranch`es: each view's embeddings).

    In training mode each sample loses each modality with probability `fusion.modality_dropout`
    (never all). After each forward, `branch_logits` holds each branch's own logits (divided by
    its temperature; with gradients, for the auxiliary losses), and `last_branch_logits`,
    `last_embeddings` and `last_prepped` their detached copies and the raw and prepared
    embeddings, for gradient modulation and diagnostics.
    """

    def __init__(self, branches: dict[str, BranchClassifier], head: FusionHead, p: FusionParams):
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        dims = {m: b.embed_dim for m, b in branches.items()}
        self.prep = nn.ModuleDict({m: EmbeddingPrep(d, p.embed_norm, p.channel_scale) for m, d in dims.items()})
        self.head = head
        self.params = p  # what it was built with (its output temperature, a checkpoint's config)
        self.modality_dropout = p.modality_dropout
        self.branch_logits: Tensors = {}
        self.last_branch_logits: Tensors = {}
        self.last_embeddings: Tensors = {}
        self.last_prepped: Tensors = {}

    @property
    def task_sizes(self) -> list[int]:
        """Class counts of the primary task, then of each secondary task (the output's blocks)."""
        return next(iter(self.branches.values())).task_sizes

    def forward(self, inputs: Tensors) -> torch.Tensor:
        if self.training and self.modality_dropout > 0:
            fills = {m: b.dropped for m, b in self.branches.items() if isinstance(b, PrecomputedBranch)}
            inputs = drop_modalities(inputs, list(self.branches), self.modality_dropout, fills)
        raw = {m: b.embed(inputs) for m, b in self.branches.items()}
        logits = {m: b.classify(raw[m]) / b.temperature for m, b in self.branches.items()}  # every task's
        prepped = {m: self.prep[m](e) for m, e in raw.items()}
        primary = self.task_sizes[0]
        self.branch_logits = {m: l[:, :primary] for m, l in logits.items()}  # the callbacks: the primary task
        self.last_branch_logits = {m: l.detach() for m, l in self.branch_logits.items()}
        self.last_embeddings = {m: e.detach() for m, e in raw.items()}
        self.last_prepped = {m: e.detach() for m, e in prepped.items()}
        return self.head(prepped, logits)

    @property
    def output_temperature(self) -> float:
        """The temperature of the fused logits (fusion.loss_temperature); the ensemble outputs
        log-probabilities already (1)."""
        return self.params.loss_temperature if self.head.trainable else 1.0

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything that is not a pretrained branch: the head and the embedding prep."""
        return [*self.head.parameters(), *self.prep.parameters()]


def with_branches(model: FusionModel, branches: dict[str, nn.Module]) -> FusionModel:
    """`model`'s head and embedding prep (shared, not copied) over other `branches`: the real
    ones back after training over `PrecomputedBranch`es, or those over the real ones."""
    other = FusionModel(branches, model.head, model.params)
    other.prep = model.prep
    return other.train(model.training)  # a new module starts in training mode: modality dropout on


@torch.no_grad()
def branch_outputs(model: FusionModel, inputs: Tensors, device: torch.device,
                   batch_size: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """One eval pass: each branch's own probabilities (n, n_classes) and embedding L2 norms (n,),
    and the head's modality weights (n, n_modalities) where it has them."""
    model.eval()
    n = len(next(iter(inputs.values())))
    chunks: dict[str, dict[str, list]] = {"probs": {m: [] for m in model.branches},
                                          "embed_norm": {m: [] for m in model.branches}, "weights": {}}
    for start in range(0, n, batch_size):
        model(take(inputs, slice(start, start + batch_size), device))
        for m, logits in model.last_branch_logits.items():
            chunks["probs"][m].append(F.softmax(logits, dim=1).cpu())
            chunks["embed_norm"][m].append(model.last_embeddings[m].norm(dim=1).cpu())
        if model.head.last_weights is not None:
            for k, m in enumerate(model.branches):
                chunks["weights"].setdefault(m, []).append(model.head.last_weights[:, k].cpu())
    return {kind: {m: torch.cat(c).numpy() for m, c in parts.items()} for kind, parts in chunks.items()}


def build_fusion(branches: dict[str, BranchClassifier], p: FusionParams) -> FusionModel:
    """The fusion of `branches` by `p.type`'s head, with the branches' tasks (a head per task)."""
    dims = {m: b.embed_dim for m, b in branches.items()}
    return FusionModel(branches, FUSION_HEADS[p.type](dims, next(iter(branches.values())).task_sizes, p), p)


def save_fusion(path: Path | BinaryIO, model: FusionModel, p: FusionParams) -> None:
    """A fusion checkpoint carries its fusion params and every branch's config (its tasks and
    their classes included): it rebuilds without params.yaml (`load_fusion`)."""
    config = {"fusion": p.model_dump(), "n_classes": model.task_sizes[0],
              "branches": {m: b.config() for m, b in model.branches.items()}}
    save_checkpoint(path, "fusion", config, model)


def load_fusion(path: Path, map_location="cpu") -> FusionModel:
    ckpt = read_checkpoint(path, "fusion", map_location)
    config = ckpt["config"]
    branches = {m: branch_from_config(c) for m, c in config["branches"].items()}
    # a checkpoint saved before fusion.restarts existed trained one head
    model = build_fusion(branches, FusionParams.model_validate({"restarts": 1, **config["fusion"]}))
    model.load_state_dict(ckpt["state_dict"])
    return model
