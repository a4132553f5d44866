"""The training stages' bodies (normalize, pretrain, fuse, evaluate) run in-process on tiny
arrays written where ingest, split and features would write them: what they read and write,
and the promises between them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import io
from pipeline.fusion import load_fusion
from pipeline.nets import load_branch
from pipeline.params import ComputeParams, parse_params
from pipeline.errors import PipelineError
from pipeline.stages import baselines, distill, evaluate, fuse, normalize, pretrain, split

SUBJECTS = [f"s{k}" for k in range(6)]
CLASSES = ["a", "b", "c"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, params):
    """A project folder with the manifest, classes, features, ingest and artifacts reports of 6 subjects x
    9 trials; eeg and topo carry the class, mel and acoustic (eGeMAPS' 88 columns) do not."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    labels = np.tile(np.repeat(np.arange(3), 3), len(SUBJECTS))
    subjects = np.repeat(SUBJECTS, 9)
    manifest = pd.DataFrame({"subject": subjects, "label": [CLASSES[k] for k in labels],
                             "eeg_path": "x.fif", "audio_path": "x.wav"})
    io.save_csv(io.MANIFEST, manifest)
    io.write_json(io.CLASSES, CLASSES)
    io.write_json(io.TASKS, {})
    io.write_json(io.INGEST_REPORT, {"trials_kept": len(labels), "trials_dropped": 0, "problems": 0,
                                     "subjects_kept": SUBJECTS, "subjects_dropped": []})
    io.write_json(io.ARTIFACTS_REPORT, {"ica": False, "autoreject": False})  # what features_eeg writes without cleaning
    eeg = rng.standard_normal((len(labels), 4, 64)).astype(np.float32)
    eeg[:, 0] *= (1 + labels)[:, None]
    topo = (rng.standard_normal((len(labels), 2, 8, 8)) + labels[:, None, None, None]).astype(np.float32)
    mel = rng.standard_normal((len(labels), 1, 8, 8)).astype(np.float32)
    acoustic = rng.standard_normal((len(labels), 88)).astype(np.float32)
    for m, x in {"eeg": eeg, "mel": mel, "topo": topo, "acoustic": acoustic}.items():
        io.save_array(io.feature_path(m), x)
    raw = params.model_dump(mode="json")
    raw.pop("branches")
    raw["split"].update(scheme="kfold", folds=2, val_subjects=1, seed=3)
    raw["acoustic"].update(feature_sets=["eGeMAPSv02"])
    raw["train"].update(seeds=[0, 1], epochs=2, batch_size=8, embed_dim=8)
    raw["fusion"].update(epochs=2, hidden=8, heads=2)
    raw["compute"].update(n_jobs=1, backend="local")
    raw["distill"].update(students=[])  # the tests that distil say so
    return tmp_path, parse_params(raw), labels


VIEWS = ("eeg", "mel", "topo", "acoustic")


def _prepare(p):
    split.run(p)
    for m in VIEWS:
        normalize.run(p, m)
        pretrain.run(p, m)


@pytest.mark.parametrize("fusion_type", ["concat", "late", "ensemble"])
def test_a_secondary_task_is_trained_fused_and_reported(workdir, fusion_type):
    """With data.tasks [label, level], every branch and the fusion train a head per task: each
    task's probabilities, its metrics under tasks.<task>, its prediction rows and checkpoints
    that carry it (that a head learns its task: tests/unit/test_pretraining.py). A third of the trials
have no `level`."""
    tmp, p, labels = workdir
    level = np.where(labels > 0, "high", "low").astype(object)
    level[::3] = ""
    manifest = pd.read_csv(io.MANIFEST, dtype=str, keep_default_na=False)
    manifest["level"] = level
    io.save_csv(io.MANIFEST, manifest)
    io.write_json(io.TASKS, {"level": ["low", "high"]})
    raw = p.model_dump(mode="json")
    raw.pop("branches")
    raw["data"].update(tasks=["label", "level"])
    raw["train"].update(task_weighting="uncertainty")
    raw["fusion"].update(type=fusion_type)
    raw["distill"].update(enabled=True, students=["eeg"])
    p = parse_params(raw)
    _prepare(p)
    for m in VIEWS:
        assert np.load(io.branch_dir(m) / "probabilities.npy").shape == (2, 2, len(labels), 3)  # the primary task's
        level_probs = np.load(io.branch_dir(m) / "probabilities_tasks.npz")["level"]
        assert level_probs.shape == (2, 2, len(labels), 2)
        np.testing.assert_allclose(level_probs.sum(-1), 1.0, rtol=1e-5)
    branch = load_branch(io.branch_dir("topo") / "fold0_seed0.pt")
    assert branch.classes == CLASSES and branch.tasks == {"level": ["low", "high"]}
    fuse.run(p)
    assert np.load(io.FUSION_DIR / "probabilities_tasks.npz")["level"].shape == (2, 2, len(labels), 2)
    model = load_fusion(io.FUSION_DIR / "fold0_seed0.pt")  # rebuilt from the checkpoint alone
    assert model.task_sizes == [3, 2]
    baselines.run(p)
    distill.run(p)  # the student gets the same heads, each distilled
    assert load_branch(io.student_dir("eeg") / "fold0_seed0.pt").tasks == {"level": ["low", "high"]}
    evaluate.run(p)
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert set(np.load(io.BASELINES_DIR / "probabilities_tasks.npz")) == {f"{b}:level" for b in metrics["baselines"]}
    for entry in [*metrics["branches"].values(), metrics["fusion"], *metrics["baselines"].values(),
                  metrics["students"]["eeg"]]:
        test = entry["tasks"]["level"]["test"]
        assert 0 <= test["acc"] <= 1 and test["acc_ci"][0] <= test["acc"] <= test["acc_ci"][1] and "acc_std" in test
    predictions = pd.read_csv(tmp / "reports" / "predictions.csv", dtype={"label": str})
    rows = predictions[predictions["model"] == "fusion:level"]
    assert len(rows) == 2 * int((level != "").sum()) and set(rows["label"]) == {"low", "high"}  # labelled trials, 2 seeds
    assert "level: acc; UA |" in (tmp / "reports" / "summary.md").read_text()


def test_pretrain_then_fuse_then_evaluate(workdir):
    tmp, p, labels = workdir
    _prepare(p)
    folds = io.read_json(io.SPLIT)["folds"]
    assert len(folds) == 2
    for m in VIEWS:
        probs = np.load(io.branch_dir(m) / "probabilities.npy")
        assert probs.shape == (2, 2, len(labels), 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        assert sorted(x.name for x in io.branch_dir(m).glob("*.pt")) == [
            f"fold{f}_seed{s}.pt" for f in range(2) for s in (0, 1)]
    fuse.run(p)
    assert np.load(io.FUSION_DIR / "probabilities.npy").shape == (2, 2, len(labels), 3)
    model = load_fusion(io.FUSION_DIR / "fold1_seed1.pt")
    assert list(model.branches) == list(p.fusion.modalities)
    baselines.run(p)
    evaluate.run(p)
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert metrics["n_folds"] == 2 and metrics["n_seeds"] == 2 and metrics["n_subjects_test"] == 6
    assert set(metrics["branches"]) == set(VIEWS)
    fusion = metrics["fusion"]
    low, high = fusion["test"]["acc_ci"]
    assert low <= fusion["test"]["acc"] <= high
    assert fusion["gain_test"] == "wilcoxon" and 0 < fusion["gain_p"] <= 1 and fusion["gain_n_subjects"] == 6
    cost = json.loads((tmp / "reports" / "cost.json").read_text())
    assert cost["type"] == "concat" and cost["runs"] == 4 and cost["device"] == "cpu"
    assert cost["params"] == sum(t.numel() for t in model.parameters())  # the saved model's own count
    assert cost["train_s_per_epoch"] > 0 and cost["infer_ms_per_trial"] > 0
    summary = (tmp / "reports" / "summary.md").read_text()
    assert "`reports/cost.json`" in summary and " s per training epoch" not in summary  # no wall times
    assert metrics["bit_reproducible"] is True and "nondeterministic_kernels" not in metrics  # CPU
    assert summary.startswith("# Results") and "**6 test subjects**" in summary and "p = " in summary
    # every model's test predictions: each trial once per seed (kfold tests every subject once)
    predictions = pd.read_csv(tmp / "reports" / "predictions.csv")
    assert set(predictions["model"]) == {*VIEWS, "fusion", "fusion_trained", "eeg_band_power", "eeg_tangent_space",
                                         "mel_stats", "topo_images", "speech_egemaps", "early_fusion"}
    # eeg and topo carry the class here, mel does not: their baselines are flagged per view, and
    # both speech views answer to the best speech baseline, whichever view it reads
    assert set(metrics["baselines"]) == {"eeg_band_power", "eeg_tangent_space", "mel_stats", "topo_images",
                                         "speech_egemaps", "early_fusion"}
    assert metrics["branches"]["eeg"]["best_baseline"] in ("eeg_band_power", "eeg_tangent_space")
    assert metrics["branches"]["topo"]["best_baseline"] == "topo_images"
    speech = max(("mel_stats", "speech_egemaps"), key=lambda n: metrics["baselines"][n]["val_acc"])
    assert metrics["branches"]["mel"]["best_baseline"] == metrics["branches"]["acoustic"]["best_baseline"] == speech
    assert metrics["baselines"]["early_fusion"]["view"] is None
    eeg = predictions[predictions["model"] == "eeg"]
    assert len(eeg) == 2 * len(labels) and sorted(set(eeg["trial"])) == list(range(len(labels)))
    probs = np.load(io.branch_dir("eeg") / "probabilities.npy")
    row = eeg.iloc[0]
    np.testing.assert_allclose(row[["p_a", "p_b", "p_c"]].to_numpy(float),
                               probs[row["fold"], [0, 1].index(row["seed"]), row["trial"]], rtol=1e-6)
    # the reported accuracy is the mean over subjects of their accuracy, from these very rows
    right = (eeg["label"] == eeg["predicted"]).groupby(eeg["subject"]).mean()
    assert metrics["branches"]["eeg"]["test"]["acc"] == pytest.approx(right.mean())


def test_fuse_starts_each_run_from_its_own_fold_and_seed(workdir):
    """With the branches frozen for every epoch, each fused checkpoint carries exactly the
    pretrained branch of its own fold and seed."""
    tmp, p, _ = workdir
    p = p.model_copy(update={"fusion": p.fusion.model_copy(update={"freeze_epochs": p.fusion.epochs})})
    _prepare(p)
    fuse.run(p)
    for fold in range(2):
        for seed in (0, 1):
            fused = load_fusion(io.FUSION_DIR / f"fold{fold}_seed{seed}.pt")
            for m in p.fusion.modalities:
                own = load_branch(io.branch_dir(m) / f"fold{fold}_seed{seed}.pt").state_dict()
                for k, v in fused.branches[m].state_dict().items():
                    assert torch.equal(v, own[k]), f"fold {fold} seed {seed}: {m}.{k} is not its own branch"


def test_pretrain_uses_the_branch_overrides(workdir):
    tmp, p, _ = workdir
    branches = dict(p.branches)
    branches["topo"] = p.train.model_copy(update={"embed_dim": 5, "epochs": 1})
    p = p.model_copy(update={"branches": branches})
    split.run(p)
    normalize.run(p, "topo")
    pretrain.run(p, "topo")
    assert load_branch(io.branch_dir("topo") / "fold0_seed0.pt").embed_dim == 5
    history = json.loads((io.branch_dir("topo") / "history.json").read_text())
    assert all(len(h) == 1 for h in history.values())


def _training_outputs(modality_dir) -> dict:
    """Every array a training stage wrote: probabilities, histories, checkpoint tensors."""
    out = {f.name: np.load(f) for f in modality_dir.glob("*.npy")}
    out["history"] = json.loads((modality_dir / "history.json").read_text())
    for ckpt in sorted(modality_dir.glob("*.pt")):
        out.update({f"{ckpt.stem}.{k}": v.numpy() for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()})
    return out


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_training_runs_are_bit_identical_for_any_backend_and_n_jobs(workdir):
    """pretrain, fuse, distill and baselines give the same probabilities, histories and weights,
    to the last bit, run in-process one after another and on a two-worker Dask cluster (whose
    tasks go through the same joblib calls as the loky pool's): pretrain on the LocalCluster the
    stage starts, the others on a running cluster given by its scheduler's address."""
    tmp, p, _ = workdir
    p = p.model_copy(update={"distill": p.distill.model_copy(update={"students": ("mel",)})})
    _prepare(p)  # local, n_jobs 1
    fuse.run(p)
    distill.run(p)
    baselines.run(p)

    def baseline_probs():
        return dict(np.load(io.BASELINES_DIR / "probabilities.npz"))

    reference = {"eeg": _training_outputs(io.branch_dir("eeg")), "fusion": _training_outputs(io.FUSION_DIR),
                 "student": _training_outputs(io.student_dir("mel")), "baselines": baseline_probs()}
    on_dask = p.model_copy(update={"compute": ComputeParams(n_jobs=2, backend="dask")})
    pretrain.run(on_dask, "eeg")
    _assert_identical(reference["eeg"], _training_outputs(io.branch_dir("eeg")))
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        on_dask = p.model_copy(update={"compute": ComputeParams(n_jobs=2, backend="dask",
                                                                scheduler=cluster.scheduler_address)})
        fuse.run(on_dask)
        _assert_identical(reference["fusion"], _training_outputs(io.FUSION_DIR))
        distill.run(on_dask)
        _assert_identical(reference["student"], _training_outputs(io.student_dir("mel")))
        baselines.run(on_dask)
        _assert_identical(reference["baselines"], baseline_probs())


@pytest.mark.parametrize("fusion_type,informative,expected", [
    ("concat", [], ["eeg", "mel", "topo", "acoustic"]),  # none above chance: every view kept
    ("concat", ["mel"], ["mel"]),                    # one: it stands in for the fusion
    ("concat", ["eeg", "topo"], ["eeg", "topo"]),
    ("film", [], ["eeg", "mel", "topo", "acoustic"]),  # film too keeps every view when none is informative
    ("film", ["eeg"], ["eeg", "mel"]),               # its conditioning view (mel) beside the informative one
    ("film", ["mel"], ["mel"]),                      # only the conditioning view: nothing to modulate
])
def test_fold_views_drop_only_views_at_chance(params, fusion_type, informative, expected):
    fp = params.fusion.model_copy(update={"type": fusion_type, "drop_uninformative": True, "film_condition": "mel"})
    tests = {m: (0.6, 0.001) if m in informative else (0.2, 0.5) for m in VIEWS}
    assert fuse.fold_views(fp, tests, fold=0) == expected


def test_a_fold_that_trains_no_fusion_is_reported_as_its_stand_in(workdir, monkeypatch):
    """Fold 0 keeps one view (as drop_uninformative does when one view is informative): nothing
    is trained there, its branch is what the fold reports, and the trained fused model's figures
    come from fold 1 alone, with the stand-in named."""
    tmp, p, labels = workdir
    _prepare(p)
    baselines.run(p)
    monkeypatch.setattr(fuse, "fold_views", lambda fp, tests, fold: ["eeg"] if fold == 0 else list(fp.modalities))
    fuse.run(p)
    trained = np.load(io.FUSION_DIR / "trained_probabilities.npy")
    assert np.isnan(trained[0]).all() and np.isfinite(trained[1]).all()
    np.testing.assert_array_equal(np.load(io.FUSION_DIR / "probabilities.npy")[0],
                                  np.load(io.branch_dir("eeg") / "probabilities.npy")[0])
    decisions = io.read_json(io.FUSION_DIR / "selection.json")
    assert [(d["trained"], d["selected"]) for d in decisions][0] == (False, "eeg")
    assert decisions[0]["val_acc"]["fusion"] is None
    evaluate.run(p)
    fusion = json.loads((tmp / "reports" / "metrics.json").read_text())["fusion"]
    assert fusion["trained"]["folds"] == 1 and fusion["trained"]["stand_in"] == {"0": "eeg"}
    assert fusion["selected"]["eeg"] >= 1
    predictions = pd.read_csv(io.PREDICTIONS)
    assert set(predictions.loc[predictions["model"] == "fusion_trained", "fold"]) == {1}
    assert "on fold(s) 0 eeg one informative view was left" in (tmp / "reports" / "summary.md").read_text()
    robust = json.loads((tmp / "reports" / "robustness.json").read_text())
    assert robust["runs"] == 2  # fold 1's two seeds fused every view; fold 0 trained none


def test_distill_trains_students_that_evaluate_reports(workdir):
    """Cross-fitted students of two views: branch checkpoints that load, probabilities of every
    trial, each run's teachers (no train subject labelled by a teacher that trained on it), and
    in metrics.json, predictions.csv and summary.md their scores against their branches. Too few
    train subjects for distill.inner_folds, or a student view the data lacks, stops the stage
    with one line and leaves the previous output."""
    tmp, p, labels = workdir
    _prepare(p)
    fuse.run(p)
    baselines.run(p)
    raw = p.model_dump(mode="json")
    raw.pop("branches")
    raw["distill"].update(enabled=True, students=["eeg", "acoustic"], teacher_targets="cross_fitted", inner_folds=2)
    p = parse_params(raw)
    distill.run(p)
    for view in ("eeg", "acoustic"):
        assert np.load(io.student_dir(view) / "probabilities.npy").shape == (2, 2, len(labels), 3)
        assert load_branch(io.student_dir(view) / "fold1_seed1.pt").modality == view
    teachers = io.read_json(io.DISTILL_DIR / "teachers.json")
    assert sorted(teachers) == [f"fold{f}_seed{s}" for f in range(2) for s in (0, 1)]
    for run, info in teachers.items():
        fold = io.read_json(io.SPLIT)["folds"][int(run[4])]
        assert info["teacher"] == f"{run}.pt" and len(info["groups"]) == 2
        assert sorted(s for g in info["groups"] for s in g["held_out"]) == sorted(fold["train"])
        assert all(not set(g["held_out"]) & set(g["trained_on"]) for g in info["groups"])
    evaluate.run(p)
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    for view in ("eeg", "acoustic"):
        student = metrics["students"][view]
        assert 0 <= student["test"]["acc"] <= 1 and student["gain_test"] == "wilcoxon" and student["gain_n_subjects"] == 6
        assert 0 < student["gain_p"] <= 1 and student["gain_ci"][0] <= student["gain_over_branch"] <= student["gain_ci"][1]
        assert student["gap_to_teacher"] is not None
    predictions = pd.read_csv(tmp / "reports" / "predictions.csv")
    assert len(predictions[predictions["model"] == "student_eeg"]) == 2 * len(labels)  # every test trial, 2 seeds
    summary = (tmp / "reports" / "summary.md").read_text()
    assert "| student: eeg |" in summary and "- `acoustic`: distillation " in summary

    before = (io.student_dir("eeg") / "probabilities.npy").read_bytes()
    raw["distill"].update(inner_folds=3)  # 2 train subjects a fold
    with pytest.raises(PipelineError, match="distill.inner_folds = 3 .*fold 0 has 2"):
        distill.run(parse_params(raw))
    manifest = pd.read_csv(io.MANIFEST).assign(audio_path="")  # as ingest writes data without audio
    io.save_csv(io.MANIFEST, manifest)
    raw["distill"].update(inner_folds=2, students=["eeg", "mel"])
    raw["fusion"].update(modalities=["eeg", "mel"])
    with pytest.raises(PipelineError, match=r"distill.students = \['eeg', 'mel'\].*mel: the data has no audio"):
        distill.run(parse_params(raw))
    assert (io.student_dir("eeg") / "probabilities.npy").read_bytes() == before
