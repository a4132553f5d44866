"""pipeline/fusion.py: the fusion registry, output shapes for 2 and 3 branches, gradient flow
into every branch, and the behaviour of the heads that combine branch predictions."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline.fusion import FUSION_HEADS, ConcatFusion, EmbeddingPrep, FusionModel, build_fusion, load_fusion, save_fusion
from pipeline.nets import BranchClassifier
from pipeline.params import FusionParams
from pipeline.training import ClassificationLoss, FitConfig, fit, predict_proba, seed_everything

from factories import make_branches, random_inputs

SHAPES = {"eeg": (16, 512), "mel": (1, 64, 128), "topo": (6, 32, 32)}
N_CLASSES = 5
EMBED = {"eeg": 16, "mel": 24, "topo": 8}  # different widths, as per-branch overrides allow
DESIGN_TYPES = ("concat", "gated", "cross_attention", "film", "transformer", "weighted", "late", "ensemble")
# heads that fuse embeddings (ensemble and late combine branch predictions instead)
EMBEDDING_TYPES = ("concat", "gated", "cross_attention", "film", "transformer", "weighted")
PAIRS_AND_ALL = [*itertools.combinations(SHAPES, 2), tuple(SHAPES)]


def _fp(params, fusion_type: str, modalities, **changes) -> FusionParams:
    return params.fusion.model_copy(update=dict(type=fusion_type, modalities=tuple(modalities), hidden=12, heads=4,
                                                dropout=0.0, film_condition=modalities[0], embed_norm="none",
                                                channel_scale=False, **changes))


def _branches(modalities) -> dict[str, BranchClassifier]:
    return make_branches({m: SHAPES[m] for m in modalities}, N_CLASSES, EMBED, dropout=0.1)


def _inputs(batch: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    return random_inputs(SHAPES, batch, seed)


def test_registry_holds_the_designed_types():
    assert FUSION_HEADS["concat"] is ConcatFusion
    assert set(DESIGN_TYPES) <= set(FUSION_HEADS)


@pytest.mark.parametrize("modalities", PAIRS_AND_ALL)
def test_concat_output_shape(params, modalities):
    model = build_fusion(_branches(modalities), _fp(params, "concat", modalities))
    assert isinstance(model, FusionModel)
    assert list(model.branches) == list(modalities)
    # the head's input is the concatenation of the branch embeddings
    assert model.head.mlp[1].in_features == sum(EMBED[m] for m in modalities)
    model.train()
    out = model(_inputs(4))
    assert out.shape == (4, N_CLASSES) and torch.isfinite(out).all()
    model.eval()
    assert model(_inputs(3)).shape == (3, N_CLASSES)


@pytest.mark.parametrize("fusion_type", DESIGN_TYPES)
@pytest.mark.parametrize("modalities", [("eeg", "topo"), tuple(SHAPES)])
def test_every_type_output_shape(params, fusion_type, modalities):
    model = build_fusion(_branches(modalities), _fp(params, fusion_type, modalities))
    model.train()
    out = model(_inputs(4))
    assert out.shape == (4, N_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("fusion_type", ["concat", "transformer"])
def test_fusion_uses_only_its_modalities(params, fusion_type):
    modalities = ("eeg", "topo")
    model = build_fusion(_branches(modalities), _fp(params, fusion_type, modalities)).eval()
    x = _inputs(3)
    a = model(x)
    x["mel"] = x["mel"] * 100.0  # not a fused modality
    torch.testing.assert_close(a, model(x))
    x["topo"] = x["topo"] * 3.0 + 1.0
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize("fusion_type", EMBEDDING_TYPES)
@pytest.mark.parametrize("modalities", [("eeg", "mel"), tuple(SHAPES)])
def test_gradients_reach_every_branch(params, fusion_type, modalities):
    model = build_fusion(_branches(modalities), _fp(params, fusion_type, modalities))
    model.train()
    loss = F.cross_entropy(model(_inputs(6)), torch.arange(6) % N_CLASSES)
    loss.backward()
    for m in modalities:
        for name, p in model.branches[m].encoder.named_parameters():
            assert p.grad is not None, f"{fusion_type}: {m}.{name}: no gradient"
            assert torch.isfinite(p.grad).all(), f"{fusion_type}: {m}.{name}"
            assert p.grad.abs().sum() > 0, f"{fusion_type}: {m}.{name}: zero gradient"
    for name, p in model.head.named_parameters():
        assert p.grad is not None, f"{fusion_type}: head.{name}: no gradient"


def test_late_fusion_gradients_reach_branch_classifiers(params):
    modalities = ("eeg", "mel")
    model = build_fusion(_branches(modalities), _fp(params, "late", modalities))
    F.cross_entropy(model(_inputs(6)), torch.arange(6) % N_CLASSES).backward()
    for m in modalities:
        assert model.branches[m].head[-1].weight.grad.abs().sum() > 0
    assert model.head.linears[0].weight.grad.abs().sum() > 0


def test_late_fusion_starts_as_mean_of_log_probabilities(params):
    modalities = tuple(SHAPES)
    model = build_fusion(_branches(modalities), _fp(params, "late", modalities)).eval()
    x = _inputs(3)
    out = model(x)
    expected = sum(F.log_softmax(b(x), dim=1) for b in model.branches.values()) / len(modalities)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_ensemble_averages_branch_probabilities(params):
    modalities = ("eeg", "mel", "topo")
    model = build_fusion(_branches(modalities), _fp(params, "ensemble", modalities)).eval()
    model.head.set_weights([1.0, 2.0, 1.0])
    x = _inputs(3)
    probs = {m: F.softmax(b(x), dim=1) for m, b in model.branches.items()}
    expected = (probs["eeg"] + 2 * probs["mel"] + probs["topo"]) / 4
    torch.testing.assert_close(F.softmax(model(x), dim=1), expected, rtol=1e-5, atol=1e-6)
    assert not model.head.trainable


def test_branch_temperature_divides_branch_logits(params):
    modalities = ("eeg", "mel")
    branches = _branches(modalities)
    model = build_fusion(branches, _fp(params, "ensemble", modalities)).eval()
    x = _inputs(2)
    model(x)
    raw = {m: b(x) for m, b in branches.items()}
    branches["mel"].temperature = 4.0
    model(x)
    torch.testing.assert_close(model.last_branch_logits["mel"], raw["mel"] / 4.0)
    torch.testing.assert_close(model.last_branch_logits["eeg"], raw["eeg"])


def test_fusion_reuses_the_pretrained_branches(params):
    branches = _branches(("eeg", "mel"))
    model = build_fusion(branches, _fp(params, "concat", ("eeg", "mel")))
    assert model.branches["eeg"] is branches["eeg"]
    # the head and the embedding prep are the "head" parameters, no branch parameter among them
    head_ids = {id(p) for p in model.head_parameters()}
    assert not head_ids & {id(p) for p in model.branches.parameters()}
    assert head_ids == {id(p) for p in [*model.head.parameters(), *model.prep.parameters()]}


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_embedding_prep(norm):
    prep = EmbeddingPrep(6, norm, channel_scale=True).train()
    e = torch.randn(32, 6) * 50 + 7
    out = prep(e)
    axis = 0 if norm == "batchnorm" else 1
    torch.testing.assert_close(out.mean(axis), torch.zeros(out.shape[1 - axis]), atol=1e-4, rtol=0)
    assert prep.scale is not None and torch.equal(prep.scale.data, torch.ones(6))


# A task that needs both modalities: every fusion type must beat each branch alone.

def _two_bit_task(n: int, seed: int):
    """Label = 2a + b: eeg carries bit a (power of channel 0), topo carries bit b (image sign).
    Either modality alone can reach at most 50 %; both together 100 %."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    eeg = torch.randn(n, 4, 64, generator=g)
    eeg[:, 0] *= (1 + 3 * a)[:, None].float()
    topo = torch.randn(n, 2, 8, 8, generator=g) * 0.5 + (2 * b - 1)[:, None, None, None].float()
    return {"eeg": eeg, "topo": topo}, 2 * a + b


def _accuracy(model, x, y) -> float:
    return float((predict_proba(model, x, torch.device("cpu")).argmax(1) == y.numpy()).mean())


@pytest.fixture(scope="module")
def pretrained_two_bit():
    """Branches trained alone on the two-bit task, and their accuracy on held-out data."""
    x_train, y_train = _two_bit_task(256, 0)
    x_val, y_val = _two_bit_task(128, 1)
    branches, alone = {}, {}
    for m in ("eeg", "topo"):
        gen = seed_everything(0)
        branch = BranchClassifier(m, x_train[m].shape[1:], 4, 8, 0.0)
        fit(branch, torch.optim.AdamW(branch.parameters(), lr=0.01), ClassificationLoss("ce", 1.0),
            ({m: x_train[m]}, y_train), ({m: x_val[m]}, y_val), FitConfig(15, 15, 32), gen,
            torch.device("cpu"))
        branches[m], alone[m] = branch.state_dict(), _accuracy(branch, {m: x_val[m]}, y_val)
    return branches, alone, (x_train, y_train), (x_val, y_val)


@pytest.mark.parametrize("fusion_type", DESIGN_TYPES)
def test_fusion_learns_what_neither_modality_alone_can(params, fusion_type, pretrained_two_bit):
    states, alone, train, val = pretrained_two_bit
    assert max(alone.values()) <= 0.62  # each alone is capped near 50 %
    branches = {}
    for m, state in states.items():
        branches[m] = BranchClassifier(m, train[0][m].shape[1:], 4, 8, 0.0)
        branches[m].load_state_dict(state)
    p = _fp(params, fusion_type, ("eeg", "topo"), ensemble_weighting="equal")
    gen = seed_everything(0)
    model = build_fusion(branches, p)
    if model.head.trainable:
        fit(model, torch.optim.AdamW([{"params": model.branches.parameters(), "lr": 1e-3},
                                      {"params": model.head_parameters(), "lr": 1e-2}]),
            ClassificationLoss("ce", 1.0), train, val, FitConfig(25, 25, 32), gen, torch.device("cpu"))
    # Averaging probabilities (no training) only resolves the task as far as the branches are
    # calibrated; every trained head must get most of the way to 100 %.
    margin = 0.08 if fusion_type == "ensemble" else 0.25
    assert _accuracy(model, *val) >= max(alone.values()) + margin


@pytest.mark.parametrize("fusion_type", ["concat", "late", "ensemble", "film"])
def test_fusion_checkpoint_rebuilds_without_params(tmp_path, params, fusion_type):
    torch.manual_seed(0)
    fp = params.fusion.model_copy(update=dict(type=fusion_type, modalities=("eeg", "topo"), film_condition="eeg",
                                              hidden=8, heads=2))
    branches = {"eeg": BranchClassifier("eeg", (4, 64), 3, 6, 0.0), "topo": BranchClassifier("topo", (2, 8, 8), 3, 6, 0.0)}
    model = build_fusion(branches, fp)
    if fusion_type == "ensemble":
        model.head.set_weights([0.2, 0.8])
    model.eval()
    save_fusion(tmp_path / "f.pt", model, fp)
    loaded = load_fusion(tmp_path / "f.pt").eval()
    assert type(loaded.head) is type(model.head) and list(loaded.branches) == ["eeg", "topo"]
    x = {"eeg": torch.randn(3, 4, 64), "topo": torch.randn(3, 2, 8, 8)}
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_modality_dropout_zeroes_inputs_per_sample_never_all():
    from pipeline.fusion import drop_modalities
    torch.manual_seed(0)
    x = {m: torch.ones(4000, *SHAPES[m][:1], 2) for m in ("eeg", "mel", "topo")}
    out = drop_modalities(x, ["eeg", "mel", "topo"], 0.4)
    kept = torch.stack([out[m].flatten(1).amax(1) for m in ("eeg", "mel", "topo")], dim=1)  # 1 kept, 0 dropped
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    assert (kept.sum(1) >= 1).all()  # never all of them
    assert all(torch.equal(out[m].flatten(1).amin(1), kept[:, k]) for k, m in enumerate(("eeg", "mel", "topo")))
    # each dropped with about p (a little less: the rescued all-dropped samples keep one)
    rate = 1 - kept.mean().item()
    assert 0.4 - 0.064 / 3 - 0.03 < rate < 0.4 + 0.02


def test_modality_dropout_acts_in_training_only(params, monkeypatch):
    import pipeline.fusion as fusion
    calls = []
    monkeypatch.setattr(fusion, "drop_modalities", lambda x, mods, p, fills: calls.append((mods, p)) or x)
    modalities = ("eeg", "topo")
    model = build_fusion(_branches(modalities), _fp(params, "concat", modalities, modality_dropout=0.3))
    model.eval()
    model(_inputs(4))
    assert calls == []
    model.train()
    model(_inputs(4))
    assert calls == [(["eeg", "topo"], 0.3)]
    off = build_fusion(_branches(modalities), _fp(params, "concat", modalities, modality_dropout=0.0)).train()
    off(_inputs(4))
    assert len(calls) == 1
