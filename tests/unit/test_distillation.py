"""Cross-modal distillation (pipeline/distillation.py): the loss against a hand computation, the
student trained with alpha 0 against the student trained on labels alone, cross-fitted targets
against the subjects their teachers trained on, and the params that are bad input."""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pipeline import distillation, fusion_training
from pipeline.dataset import Trials
from pipeline.distillation import DistillationLoss, inner_groups, train_student
from pipeline.folds import FoldData
from pipeline.fusion import build_fusion
from pipeline.nets import BranchClassifier
from pipeline.params import ParamsError, parse_params
from pipeline.training import ClassificationLoss

from dvc_project import ROOT
from factories import fold_data


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_term_is_t_squared_batchmean_kl_of_the_softened_distributions():
    """T^2 x (1/n) sum_i sum_c q_ic log(q_ic / p_ic), q the teacher's and p the student's
    distributions at temperature T, by hand in float64; two task blocks add up."""
    rng = np.random.default_rng(0)
    n, sizes, t = 6, [3, 2], 2.5
    student = rng.normal(size=(n, 5)) * 3
    teacher_logp = np.concatenate([np.log(_softmax(rng.normal(size=(n, k)) * 3)) for k in sizes], axis=1)
    expected = 0.0
    for block in (slice(0, 3), slice(3, 5)):
        q, p = _softmax(teacher_logp[:, block] / t), _softmax(student[:, block] / t)
        expected += t * t * (q * np.log(q / p)).sum() / n
    loss = DistillationLoss(ClassificationLoss("ce", 1.0), sizes, 2, 1.0, t, 1.0, 0.0)
    got = loss.kd(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher_logp, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # alpha 1: the loss is the KD term alone; alpha 0.3: 0.7 x CE + 0.3 x KD
    labels = np.array([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [2, 0]], dtype=np.float32)
    target = torch.tensor(np.concatenate([labels, teacher_logp], axis=1), dtype=torch.float32)
    logits = torch.tensor(student, dtype=torch.float32)
    ce = torch.nn.functional.cross_entropy(logits[:, :3], target[:, 0].long())
    mixed = DistillationLoss(_OnePrimary(), sizes, 2, 0.3, t, 1.0, 0.0)
    assert mixed(logits, target).item() == pytest.approx(0.7 * ce.item() + 0.3 * expected, rel=1e-5)


class _OnePrimary(torch.nn.Module):
    """Cross-entropy of the primary task's block (labels (n, 2): the primary's in column 0)."""

    def forward(self, logits, labels):
        return torch.nn.functional.cross_entropy(logits[:, :3], labels[:, 0])

    def primary(self, logits, labels):
        return logits[:, :3], labels[:, 0]


def _fold(n_per_subject: int = 8, subjects=("a", "b", "c", "d", "e", "f")) -> tuple[FoldData, Trials]:
    """Two views of 6 subjects (4 train, 1 val, 1 test), 2 classes; 'x' carries the class."""
    rng = np.random.default_rng(1)
    subject = np.repeat(subjects, n_per_subject)
    labels = np.tile(np.arange(2), len(subject) // 2)
    x = rng.normal(size=(len(subject), 6)).astype(np.float32) + labels[:, None]
    y = rng.normal(size=(len(subject), 6)).astype(np.float32)
    index = {"train": np.flatnonzero(np.isin(subject, subjects[:4])), "val": np.flatnonzero(subject == subjects[4]),
             "test": np.flatnonzero(subject == subjects[5])}
    trials = Trials(labels=labels, subjects=subject, classes=["lo", "hi"],
                    folds=[{"train": list(subjects[:4]), "val": [subjects[4]], "test": [subjects[5]]}])
    return fold_data({"eeg": x, "acoustic": y}, labels, index), trials


def _params(**distill):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(epochs=4, patience=10, batch_size=8, embed_dim=4)
    raw["fusion"].update(modalities=["eeg", "acoustic"], epochs=2, hidden=4, heads=2)
    raw["distill"].update(enabled=True, students=["eeg"], **distill)
    return parse_params(raw)


def test_alpha_zero_trains_exactly_the_student_on_labels_alone():
    """Same seed, same initial weights: alpha 0 (and no feature term) with teacher targets gives
    the very weights and history of training on the labels alone, to the last bit; alpha 0.5
    does not."""
    data, _ = _fold()
    p = _params(alpha=0.0)
    branch = BranchClassifier("eeg", (6,), 2, 4, 0.1, "linear")
    teacher = np.log(_softmax(np.random.default_rng(2).normal(size=(len(data.labels), 2)) * 4)).astype(np.float32)

    def trained(alpha, logp):
        dp = p.distill.model_copy(update={"alpha": alpha})
        return train_student(copy.deepcopy(branch), data, p.branch("eeg"), dp, logp, None, 0, torch.device("cpu"))

    alone, zero, half = trained(0.0, None), trained(0.0, teacher), trained(0.5, teacher)
    assert zero[1] == alone[1]
    assert all(torch.equal(a, b) for a, b in zip(alone[0].state_dict().values(), zero[0].state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(alone[0].state_dict().values(), half[0].state_dict().values()))
    # the feature term (FitNets) acts on the student: another student, still a plain branch
    features = np.random.default_rng(3).normal(size=(len(data.labels), 5)).astype(np.float32)
    dp = p.distill.model_copy(update={"alpha": 0.5, "feature_weight": 1.0})
    matched, _ = train_student(copy.deepcopy(branch), data, p.branch("eeg"), dp, teacher, features, 0, torch.device("cpu"))
    assert type(matched) is BranchClassifier and matched.state_dict().keys() == half[0].state_dict().keys()
    assert not all(torch.equal(a, b) for a, b in zip(half[0].state_dict().values(), matched.state_dict().values()))


def test_cross_fitted_targets_never_come_from_a_teacher_that_trained_on_the_subject(monkeypatch):
    """Every inner teacher's branches and fusion train on train subjects outside the group it
    labels; each train trial is relabelled by exactly one of them; validation and test trials
    keep the fold's own teacher's targets."""
    data, trials = _fold()
    p = _params(teacher_targets="cross_fitted", inner_folds=2)
    trained_on: list[set] = []
    real_branch, real_fusion = fusion_training.train_branch, fusion_training.train_fusion

    def spy_branch(modality, inner, *args, **kwargs):
        trained_on.append(set(trials.subjects[inner.index["train"]]))
        return real_branch(modality, inner, *args, **kwargs)

    def spy_fusion(branches, inner, *args, **kwargs):
        trained_on.append(set(trials.subjects[inner.index["train"]]))
        return real_fusion(branches, inner, *args, **kwargs)

    monkeypatch.setattr(fusion_training, "train_branch", spy_branch)
    monkeypatch.setattr(fusion_training, "train_fusion", spy_fusion)
    branches = {m: BranchClassifier(m, (6,), 2, 4, 0.1, "linear") for m in ("eeg", "acoustic")}
    teacher = build_fusion(branches, p.fusion)
    fold_logp, _ = distillation.teacher_outputs(teacher, data.inputs, torch.device("cpu"))
    logp, _, record = distillation.cross_fitted_targets(data, trials, {m: p.branch(m).model_copy(update={"encoder": "linear"})
                                                                       for m in branches}, p.train, teacher, 2, 0,
                                                        torch.device("cpu"))
    groups = inner_groups(["a", "b", "c", "d"], 2)
    assert [r["held_out"] for r in record] == groups == [["a", "c"], ["b", "d"]]
    assert len(trained_on) == 2 * 3  # per group: two branches, one fusion
    for k, group in enumerate(groups):
        for subjects in trained_on[3 * k:3 * k + 3]:
            assert subjects == set("abcd") - set(group)
    changed = np.flatnonzero(~np.isclose(logp, fold_logp).all(axis=1))
    assert set(changed) == set(data.index["train"])
    others = np.concatenate([data.index["val"], data.index["test"]])
    assert np.array_equal(logp[others], fold_logp[others])


@pytest.mark.parametrize("key,value,words", [
    ("distill.students", ["eeg", "ecg"], "eeg, mel, topo, acoustic"),
    ("distill.alpha", 1.5, "0 <= alpha <= 1"),
    ("distill.alpha", -0.1, "0 <= alpha <= 1"),
    ("distill.temperature", 0.0, "> 0"),
    ("distill.inner_folds", 1, ">= 2"),
])
def test_bad_distill_params_are_one_line_naming_the_key(key, value, words):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"params: {key}") and words in message, message


def test_the_distill_command_stops_on_bad_params_with_exit_2_and_writes_nothing(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["distill"]["temperature"] = -1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "pipeline", "distill", "--params", str(bad)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "distill.temperature" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_student_of_a_view_the_fusion_does_not_fuse_is_a_params_error():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["fusion"]["modalities"] = ["eeg", "mel"]
    raw["distill"].update(enabled=True, students=["acoustic"])
    with pytest.raises(ParamsError, match=r"distill.students = \['acoustic'\].*acoustic is not fused"):
        parse_params(raw)
    raw["distill"].update(enabled=True, students=["eeg"], feature_weight=1.0, teacher_targets="cross_fitted")
    with pytest.raises(ParamsError, match="distill.feature_weight = 1.0 .*cross_fitted"):
        parse_params(raw)
    raw["distill"]["teacher_targets"] = "in_fold"
    raw["fusion"]["type"] = "ensemble"
    with pytest.raises(ParamsError, match="distill.feature_weight = 1.0 .*no fused representation"):
        parse_params(raw)


@pytest.mark.parametrize("modalities,students", [
    (["eeg", "mel", "topo", "acoustic"], ("eeg", "acoustic")),  # the default run's students
    (["eeg", "topo"], ("eeg",)),
    (["mel", "topo"], ()),
    (["acoustic", "eeg"], ("acoustic", "eeg")),
])
def test_default_students_follow_the_fused_views(modalities, students):
    """distill.students null (the default): each fused signal's plain view, so changing
    fusion.modalities alone never breaks distillation; with distill off (the default), none."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["distill"]["students"] is None and raw["distill"]["enabled"] is False
    raw["fusion"]["modalities"] = modalities
    assert parse_params(raw).distill.students == ()
    raw["distill"]["enabled"] = True
    assert parse_params(raw).distill.students == students
