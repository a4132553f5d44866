"""End to end on other data, through every stage's body in-process, in order (what DVC adds is
the same for every source and is tested on the shared project, tests/dvc_project.py): the EAV
layout up to its features, a real EEG recording without audio, and a study where only speech
carries the class."""
from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.data.synthetic import write_manifest
from pipeline.params import parse_params

from dvc_project import ROOT, TINY, cli, merge

pytestmark = pytest.mark.slow  # seconds each, not minutes; kept with the end-to-end tests

VIEWS = ("eeg", "mel", "topo", "acoustic")
# in dvc.yaml's order: features eeg writes the manifest split and the other views read
STAGES = [("ingest",), ("features", "eeg"), ("split",), *[("features", m) for m in VIEWS[1:]],
          *[("normalize", m) for m in VIEWS], ("baselines",), *[("pretrain", m) for m in VIEWS], ("fuse",), ("distill",), ("evaluate",)]


def _tiny_params(override: dict) -> dict:
    """params.yaml with the tiny test params and `override` on top, as a mapping."""
    # no students: distillation is tested on the shared project and in tests/integration/test_training_stages.py
    return merge(merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), {"distill": {"students": []}}),
                 override)


def _run_stages(raw: dict, stages: list[tuple]) -> None:
    """Each stage's body in-process, in order, in the current folder, as its command runs it."""
    for name, *args in stages:
        importlib.import_module(f"pipeline.stages.{name}").run(parse_params(raw), *args)


def _manifest_over_real_recording(eeg_file: Path, out: Path, window: float, per_label: int = 6) -> None:
    """Trials cut by onset from one real EEGLAB recording: a window at the first `per_label`
    events of each label ('rt' or 'square') in each quarter of the recording, the quarters
    standing in for 4 subjects."""
    import mne

    raw = mne.io.read_raw(eeg_file, preload=False, verbose="error")
    length = raw.n_times / raw.info["sfreq"]
    rows, taken = [], Counter()
    for onset, label in zip(raw.annotations.onset, raw.annotations.description):
        part = f"part{int(onset // (length / 4)) + 1}"
        if onset + window <= length and taken[part, label] < per_label:
            taken[part, label] += 1
            rows.append({"subject": part, "label": label, "eeg_path": str(eeg_file),
                         "eeg_onset": round(float(onset), 4), "eeg_duration": window})
    out.mkdir(parents=True)
    write_manifest(out / "manifest.csv", rows)


def test_eeg_only_manifest_over_real_recording(tmp_path, monkeypatch, capsys, realdata):
    """A manifest with no audio over a real EEGLAB file runs through every stage's body with
    fusion.modalities [eeg, topo]; the speech stages are skipped with a note, and fusing mel is a
    params error (the DAG's part, that such data comes from data.root and not from synthesize,
    is tested on the shared project in tests/integration/test_pipeline.py)."""
    _manifest_over_real_recording(realdata / "eeg" / "test_raw.set", tmp_path / "data" / "real", 2.0)
    raw = _tiny_params({"data": {"source": "manifest", "root": "data/real"}, "eeg": {"epoch_seconds": 2.0},
                        "fusion": {"modalities": ["eeg", "topo"]}})
    monkeypatch.chdir(tmp_path)
    _run_stages(raw, STAGES)
    out = capsys.readouterr().out
    assert "features mel: skipped: the data has no audio" in out and "pretrain mel: skipped" in out
    assert "features acoustic: skipped: the data has no audio" in out and "pretrain acoustic: skipped" in out
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert report["modalities"] == ["eeg", "topo"] and report["classes"] == ["rt", "square"]
    assert report["subjects_kept"] == 4 and report["trials_dropped"] == 0
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert set(metrics["branches"]) == {"eeg", "topo"}
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0

    raw["fusion"]["modalities"] = ["eeg", "mel", "topo"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = cli(["fuse"], tmp_path, code=2)
    assert proc.stderr.count("\n") == 1 and "fusion.modalities" in proc.stderr and "no audio" in proc.stderr


def test_a_bids_dataset_as_downloaded_through_every_stage_and_predict(tmp_path, monkeypatch, realdata,
                                                                     downloaded_bids, write_bids):
    """A BIDS tree as downloaded (derivatives/ and sourcedata/ copies of sub-01, MNE's hierarchical
    tags, button and BAD_ rows, F3 bad in channels.tsv, sub-01 with two runs) with
    data.bids.labels [happy, sad] and fusion.modalities [eeg, topo], nothing else changed (the
    default students follow the fused views): ingest keeps exactly the raw recordings' class
    trials and names F3 interpolated in each; the final model labels every class trial of the
    tree; a tree without those classes is one line and exit code 2."""
    import shutil

    import pandas as pd

    shutil.copytree(downloaded_bids["root"], tmp_path / "data" / "bids")
    raw = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY),
                {"data": {"source": "bids", "root": "data/bids", "bids": {"labels": ["happy", "sad"]}},
                 "fusion": {"modalities": ["eeg", "topo"]}})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _run_stages(raw, [*STAGES, ("final",)])
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert report["trials_kept"] == report["trials_in"] == downloaded_bids["trials"] and report["problems"] == 0
    assert report["classes"] == ["happy", "sad"] and report["subjects_kept"] == 4
    assert len(report["bids_recordings"]) == 5 and not any("derivatives" in r for r in report["bids_recordings"])
    assert report["channels"] == dict.fromkeys(report["bids_recordings"], {"interpolated": ["F3"], "dropped": []})
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert set(metrics["branches"]) == {"eeg", "topo"} and set(metrics["students"]) == {"eeg"}

    out = tmp_path / "predictions.csv"
    said = cli(["predict", "data/bids", "--out", str(out)], tmp_path).output
    rows = pd.read_csv(out, keep_default_na=False)
    assert len(rows) == downloaded_bids["trials"] and set(rows["label"]) == {"happy", "sad"}, said
    assert set(rows["predicted"]) <= {"happy", "sad"} and (rows["out_of_range"] == "").all()

    other = write_bids(tmp_path / "other", realdata / "eeg" / "test_raw.set", subjects=("05",))  # rt, square only
    failed = cli(["predict", str(other), "--out", str(tmp_path / "none.csv")], tmp_path, code=2)
    assert failed.stderr.count("\n") == 1 and "no trial of the model's classes (happy, sad)" in failed.stderr
    assert not (tmp_path / "none.csv").exists()


def test_eav_layout_through_the_feature_stages(tmp_path, monkeypatch, write_eav):
    """The EAV source on a generated EAV-shaped folder (4 subjects, 2 s trials cut into 1 s
    segments) runs through ingest and the three views' features (what comes after reads features
    and the manifest only, the same for every source, and runs end to end above)."""
    write_eav(tmp_path / "data" / "eav", n_subjects=4, n_samples=1000, trials_per_class=2)
    raw = _tiny_params({"data": {"source": "eav", "root": "data/eav", "eav": {"task": "speaking", "segment_seconds": 1.0}},
                        "eeg": {"epoch_seconds": 1.0}, "mel": {"clip_seconds": 1.0}})
    monkeypatch.chdir(tmp_path)
    _run_stages(raw, [("ingest",), ("features", "eeg"), ("features", "mel"), ("features", "topo")])
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert report["trials_kept"] == 4 * 5 * 2 * 2  # subjects x emotions x speaking trials x segments
    assert len(report["eav_pairing"]) == 4 * 5 * 2
    assert json.loads((tmp_path / "reports" / "mel_clips.json").read_text())["exact"] == 80
    for modality in ("eeg", "mel", "topo"):
        features = np.load(tmp_path / "data" / "features" / f"{modality}.npy", mmap_mode="r")
        assert features.shape[0] == 80 and np.isfinite(features).all()


def test_one_informative_view_study_warns_and_safe_selection_falls_back(tmp_path, monkeypatch, capsys, realdata):
    """Speech carries the class, EEG none (real EEG windows drawn independently of the labels).
    A fusion that leans on EEG (an ensemble weighted on it alone) is flagged below its best
    branch, with a warning; `select: safe` with an unreachable margin reports the branches'
    choice on every fold. Every stage's body runs in-process, in order (which stages a fusion
    knob reruns is DVC's part, tested on the shared project in tests/integration/test_pipeline.py)."""
    from pipeline.data.studies import write_one_view_study

    write_one_view_study(tmp_path / "data" / "study", realdata / "eeg" / "test_raw.set", n_subjects=4,
                         trials_per_class=4, trial_seconds=2.0, voice_spread=1.5)
    raw = _tiny_params({
        "data": {"source": "manifest", "root": "data/study"},
        "split": {"scheme": "loso", "val_subjects": 1},
        "train": {"epochs": 8, "patience": 8},
        "fusion": {"type": "ensemble", "ensemble_weighting": "fixed", "ensemble_weights": [1.0, 0.0, 0.0, 0.0],
                   "select": "fusion"},
    })
    monkeypatch.chdir(tmp_path)
    _run_stages(raw, STAGES)
    out = capsys.readouterr()
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["fusion"]["below_best_branch"] is True, metrics["fusion"]
    assert "warning: fusion (ensemble) is below its best branch" in out.err
    assert (tmp_path / "reports" / "summary.md").read_text().split("\n")[2].startswith("> **Warning:**")
    assert metrics["fusion"]["selected"] == {"fusion": 4}
    robust = json.loads((tmp_path / "reports" / "robustness.json").read_text())
    assert set(robust["missing"]) == set(VIEWS)

    # the margin makes every fold's fallback the candidate; the fused model (the uninformative
    # first view alone) is then far behind it on validation, and McNemar's test lets each fold fall back
    raw["fusion"].update(select="safe", select_margin=1.0)
    _run_stages(raw, [("fuse",), ("evaluate",)])
    assert "select safe reports" in capsys.readouterr().out
    decisions = json.loads((tmp_path / "models" / "fusion" / "selection.json").read_text())
    assert all(d["fallback_p"] < 0.05 for d in decisions), decisions
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert "fusion" not in metrics["fusion"]["selected"] and sum(metrics["fusion"]["selected"].values()) == 4
    per_fold = (tmp_path / "reports" / "per_fold.csv").read_text()
    assert "selected" in per_fold.splitlines()[0]


def test_real_speech_study_through_the_acoustic_view(tmp_path, monkeypatch, capsys, realdata):
    """Real speech (the committed espeak-ng clips: 4 voices as subjects, 5 prosody-acted classes,
    clips of different lengths) paired with class-free real EEG: the acoustic view's features are
    openSMILE's, its baselines run on each set, and both speech branches answer to the best
    speech baseline, whichever speech view it reads."""
    from pipeline.data.studies import write_speech_study

    write_speech_study(ROOT / "tests" / "fixtures" / "speech_clips" / "clips.csv", realdata / "eeg" / "test_raw.set",
                       tmp_path / "data" / "speech")
    raw = _tiny_params({"data": {"source": "manifest", "root": "data/speech"},
                        "split": {"scheme": "loso", "val_subjects": 1}, "eeg": {"epoch_seconds": 4.0},
                        "mel": {"clip_seconds": 4.0}, "train": {"epochs": 4},
                        "acoustic": {"feature_sets": ["eGeMAPSv02", "ComParE_2016"]}})
    monkeypatch.chdir(tmp_path)
    _run_stages(raw, STAGES)
    acoustic = np.load(tmp_path / "data" / "features" / "acoustic.npy")
    assert acoustic.shape == (40, 88 + 6373) and np.isfinite(acoustic).all()
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    speech = {n: metrics["baselines"][n] for n in ("mel_stats", "speech_egemaps", "speech_compare")}
    best = max(speech, key=lambda n: speech[n]["val_acc"])
    assert metrics["branches"]["mel"]["best_baseline"] == metrics["branches"]["acoustic"]["best_baseline"] == best
    # prosody carries the class: openSMILE's sets find it on unseen voices (chance: 0.2)
    assert max(speech[n]["test"]["acc"] for n in ("speech_egemaps", "speech_compare")) >= 0.45, speech


def test_an_eeg_view_that_learned_blinks_falls_to_chance_with_ica(tmp_path, monkeypatch, realdata):
    """Real EEG whose class lives only in artifacts (pipeline.data.studies.write_artifact_study:
    the real recording per subject, blink-shaped deflections with its own blink topography added
    to the sadness trials): without cleaning the EEG branch and the band-power baseline learn
    the blinks; with eeg.artifacts.ica they fall to chance (their intervals over subjects hold
    0.5), every recording's eye component is named removed, and predict with the final model
    cleans new recordings as the model's were."""
    import pandas as pd

    from pipeline.data.studies import write_artifact_study

    write_artifact_study(tmp_path / "data" / "study", realdata / "eeg" / "test_raw.set",
                         realdata / "eeg" / "test_chans.locs", n_subjects=6, trials_per_class=16)
    raw = _tiny_params({"data": {"source": "manifest", "root": "data/study"}, "split": {"scheme": "loso", "val_subjects": 1},
                        "eeg": {"epoch_seconds": 2.0}, "fusion": {"modalities": ["eeg", "topo"]},
                        # 10 epochs, no early stop: uncleaned, the branch reaches 0.95 in them (0.5 cleaned)
                        "train": {"epochs": 10, "patience": 10}, "compute": {"n_jobs": 2}})
    monkeypatch.chdir(tmp_path)
    eeg_only = [s for s in STAGES if s[-1] not in ("mel", "acoustic")]
    _run_stages(raw, eeg_only)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["branches"]["eeg"]["test"]["acc"] >= 0.8, metrics["branches"]["eeg"]["test"]
    assert metrics["baselines"]["eeg_band_power"]["test"]["acc"] >= 0.8
    assert json.loads((tmp_path / "reports" / "artifacts.json").read_text()) == {"ica": False, "autoreject": False}
    assert "EEG artifact cleaning: off" in (tmp_path / "reports" / "summary.md").read_text()

    raw["eeg"]["artifacts"]["ica"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _run_stages(raw, [s for s in eeg_only if s[0] not in ("ingest", "split")] + [("final",)])
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    for model in (metrics["branches"]["eeg"], metrics["baselines"]["eeg_band_power"]):
        low, high = model["test"]["acc_ci"]
        assert model["test"]["acc"] <= 0.65 and low <= 0.5 <= high, model["test"]
    report = json.loads((tmp_path / "reports" / "artifacts.json").read_text())
    assert len(report["recordings"]) == 6 and report["removed_by_label"]["eye blink"] >= 6
    assert all(any(c["label"] == "eye blink" and c["removed"] for c in components)
               for components in report["recordings"].values())
    assert (tmp_path / "reports" / "figures" / "removed_components.png").stat().st_size > 10_000
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert re.search(r"ICA \+ ICLabel on each of 6 recording\(s\) removed .*\d+ eye blink", summary), summary
    meta = json.loads((tmp_path / "models" / "final" / "meta.json").read_text())
    assert meta["eeg_preprocessing"]["artifacts"]["ica"] is True

    manifest = pd.read_csv(tmp_path / "data" / "study" / "manifest.csv")
    manifest["eeg_path"] = [str(tmp_path / "data" / "study" / f) for f in manifest["eeg_path"]]
    manifest[manifest["subject"] == "sub-01"].to_csv(tmp_path / "new.csv", index=False)
    said = cli(["predict", str(tmp_path / "new.csv"), "--out", str(tmp_path / "labelled.csv")], tmp_path).output
    assert "EEG cleaned as the model's (eeg.artifacts): ICA removed" in said and "of 1 recording(s)" in said, said


def test_a_trial_autoreject_drops_leaves_every_view_and_predict_labels_it_not(tmp_path, monkeypatch, realdata):
    """A trial of the real-recording study ruined on every channel (800 uV) is dropped by
    eeg.artifacts.autoreject: it stays in ingest's table, leaves the manifest, so every view's
    array, the folds and the evaluated predictions hold the same trials; reports/artifacts.json
    and summary.md say so; the final model records the cleaning and predict, cleaning a new
    recording as the model's were, leaves that trial unlabelled."""
    import mne
    import pandas as pd

    from pipeline.data.studies import write_artifact_study

    study = tmp_path / "data" / "study"
    write_artifact_study(study, realdata / "eeg" / "test_raw.set", realdata / "eeg" / "test_chans.locs",
                         n_subjects=4, trials_per_class=8)
    trials = pd.read_csv(study / "manifest.csv")
    ruined = trials.index[trials["subject"] == "sub-01"][3]
    raw = mne.io.read_raw(study / "sub-01_eeg.fif", preload=True, verbose="error")
    start = int(trials.loc[ruined, "eeg_onset"] * raw.info["sfreq"])
    n = int(trials.loc[ruined, "eeg_duration"] * raw.info["sfreq"])
    across = (-1.0) ** np.arange(len(raw.ch_names))[:, None]  # mean 0 over channels: the average reference keeps it
    raw._data[:, start:start + n] += 800e-6 * across * np.sin(2 * np.pi * 3 * np.arange(n) / raw.info["sfreq"])
    raw.save(study / "sub-01_eeg.fif", overwrite=True, verbose="error")
    params = _tiny_params({"data": {"source": "manifest", "root": "data/study"}, "split": {"scheme": "loso", "val_subjects": 1},
                           "eeg": {"epoch_seconds": 2.0, "artifacts": {"autoreject": True}},
                           "fusion": {"modalities": ["eeg", "topo"]}})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # predict's
    _run_stages(params, [s for s in STAGES if s[-1] not in ("mel", "acoustic")] + [("final",)])

    report = json.loads((tmp_path / "reports" / "artifacts.json").read_text())
    verdicts = next(v for path, v in report["trials"].items() if path.endswith("sub-01_eeg.fif"))
    assert verdicts[3]["status"] == "dropped" and verdicts[3]["onset"] == trials.loc[ruined, "eeg_onset"]
    dropped = report["trials_by_status"]["dropped"]
    assert sum(report["trials_by_status"].values()) == len(trials) == len(pd.read_csv(tmp_path / "data" / "interim" / "trials.csv"))
    manifest = pd.read_csv(tmp_path / "data" / "interim" / "manifest.csv")
    assert len(manifest) == len(trials) - dropped and trials.loc[ruined, "eeg_onset"] not in \
        manifest.loc[manifest["subject"] == "sub-01", "eeg_onset"].to_list()
    for view in ("eeg", "topo"):
        assert len(np.load(tmp_path / "data" / "features" / f"{view}.npy")) == len(manifest)
    folds = json.loads((tmp_path / "data" / "interim" / "split.json").read_text())["folds"]
    assert sorted(s for f in folds for s in f["test"]) == sorted(manifest["subject"].unique())
    assert len(pd.read_csv(tmp_path / "reports" / "predictions.csv").query("model == 'fusion'")
               .drop_duplicates(["fold", "seed", "trial"])) == len(manifest)
    assert re.search(rf"autoreject repaired \d+ and dropped {dropped} of {len(trials)} trial", (tmp_path / "reports" / "summary.md").read_text())
    assert json.loads((tmp_path / "models" / "final" / "meta.json").read_text())["eeg_preprocessing"]["artifacts"]["autoreject"]

    new = trials[trials["subject"] == "sub-01"].assign(eeg_path=str(study / "sub-01_eeg.fif"))
    new.to_csv(tmp_path / "new.csv", index=False)
    said = cli(["predict", str(tmp_path / "new.csv"), "--out", str(tmp_path / "labelled.csv")], tmp_path).output
    assert "EEG cleaned as the model's (eeg.artifacts): autoreject repaired" in said, said
    rows = pd.read_csv(tmp_path / "labelled.csv", keep_default_na=False)
    assert rows.loc[3, "dropped"] == "autoreject" and rows.loc[3, "predicted"] == ""
    assert (rows.loc[rows["dropped"] == "", "predicted"] != "").all()
