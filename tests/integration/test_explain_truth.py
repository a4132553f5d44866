"""The explain stage against the truth the default data's generator put in (pipeline/data/synthetic.py):
valence in frontal alpha asymmetry, arousal in the speech's pitch, energy and rate. A project with
the generator's default strengths and `data.tasks: [label, arousal, valence]`, smaller than the
default run (6 subjects, holdout) and with eGeMAPS alone, runs every stage explain reads, in
one process; then the same with the three label columns permuted within each subject (the
control: models at chance), retrained from pretrain on.

Each check is one a random explanation fails: four frontal channels among the top six of 16 by
chance has probability 0.08, a left/right sign flip 0.5, and the control's numbers are compared
in size with the true run's."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from dvc_project import dvc_stages, make_project, run_stages

pytestmark = pytest.mark.slow

TASKS = ["label", "arousal", "valence"]
TRUTH = {"data": {"tasks": TASKS, "synthetic": {"n_subjects": 6, "trials_per_class": 4, "trial_seconds": 4.0,
                                                  "gap_seconds": 1.0}},
         "eeg": {"epoch_seconds": 4.0}, "mel": {"clip_seconds": 4.0, "n_mels": 32, "n_frames": 64}, "topo": {"n_bins": 16},
         "train": {"epochs": 30, "batch_size": 16}, "fusion": {"epochs": 15, "restarts": 1},
         "explain": {"trials": 1000}}
LEFT, RIGHT = ("Fp1", "F7", "F3"), ("Fp2", "F8", "F4")
PITCH = re.compile("F0")
LOUDNESS = re.compile("loudness|energy|equivalentSoundLevel|lengthL1norm", re.IGNORECASE)
SPEECH = ("mel", "acoustic")


def permute_within_subjects(manifest, columns: list[str], seed: int) -> None:
    """Shuffle the rows' `columns` together within each subject: the labels keep their counts and
    their relation to each other, and lose any to the signals."""
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    for rows in table.groupby("subject").indices.values():
        table.loc[rows, columns] = table.loc[rows[rng.permutation(len(rows))], columns].to_numpy()
    table.to_csv(manifest, index=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """explain.json of the true run and of the permuted-label control."""
    project = make_project(tmp_path_factory.mktemp("truth"), TRUTH)
    stages = dvc_stages(project)
    explained = [n for n in stages if n not in ("baselines", "distill", "final", "evaluate")]
    run_stages(project, commands=[stages[n]["cmd"].split() for n in explained])
    out = {"true": json.loads((project / "reports" / "explain.json").read_text())}
    permute_within_subjects(project / "data" / "interim" / "manifest.csv", TASKS, seed=0)
    retrained = [n for n in explained if n.startswith(("pretrain", "fuse", "explain"))]
    run_stages(project, commands=[stages[n]["cmd"].split() for n in retrained])
    out["permuted"] = json.loads((project / "reports" / "explain.json").read_text())
    return out


def frontal_contrast(alpha: dict[str, float]) -> float:
    """Mean |pattern| of the six frontal channels over the mean of the others."""
    frontal = set(LEFT + RIGHT)
    return np.mean([alpha[c] for c in frontal]) / np.mean([v for c, v in alpha.items() if c not in frontal])


def test_valence_alpha_pattern_is_frontal_asymmetry(reports):
    eeg = reports["true"]["eeg"]
    assert eeg["patterns_val_acc"]["valence"] > 0.6  # a pattern of a model at chance shows only covariance
    alpha = eeg["patterns"]["valence"]["alpha"]
    top6 = sorted(alpha, key=lambda c: -alpha[c])[:6]
    assert len(set(top6) & set(LEFT + RIGHT)) >= 4, top6
    positive = eeg["patterns_per_class"]["valence"]["positive"]["alpha"]
    left, right = np.mean([positive[c] for c in LEFT]), np.mean([positive[c] for c in RIGHT])
    assert left * right < 0, (left, right)  # asymmetry: the two sides move apart with valence


def test_arousal_acoustic_features_are_pitch_and_loudness(reports):
    names = [name for name, _ in reports["true"]["acoustic"]["top_features"]["arousal"][:10]]
    assert any(PITCH.search(n) for n in names), names
    assert any(LOUDNESS.search(n) for n in names), names


def test_view_shares_follow_the_views_that_carry_each_task(reports):
    """Arousal: a speech view holds the largest share. Valence: the EEG view moves the fused
    model towards the true class (not necessarily the most: the generator lets speech's arousal
    and the topology view's arousal x valence diagonal decode valence too, and speech alone the
    neutral class; docs/methods/explanations.md)."""
    fusion = reports["true"]["fusion"]
    arousal = fusion["view_share"]["arousal"]
    assert max(arousal, key=arousal.get) in SPEECH, arousal
    assert max(fusion["view_contribution"]["arousal"][m] for m in SPEECH) > 0.3  # nats towards the true class
    assert fusion["view_contribution"]["valence"]["eeg"] > 0.1, fusion["view_contribution"]["valence"]


def test_permuted_labels_leave_no_structure(reports):
    true, permuted = reports["true"], reports["permuted"]
    # the band-power model of valence falls to chance, and its pattern loses the frontal cluster
    assert permuted["eeg"]["patterns_val_acc"]["valence"] < true["eeg"]["patterns_val_acc"]["valence"] - 0.2
    assert frontal_contrast(permuted["eeg"]["patterns"]["valence"]["alpha"]) < \
        0.5 * frontal_contrast(true["eeg"]["patterns"]["valence"]["alpha"])

    def top10(report):
        return np.mean([v for _, v in report["acoustic"]["top_features"]["arousal"][:10]])

    assert top10(permuted) < 0.2 * top10(true)  # no feature moves decisions towards a permuted label
    contribution = true["fusion"]["view_contribution"]
    for task, moved in (("arousal", max(contribution["arousal"][m] for m in SPEECH)),
                        ("valence", contribution["valence"]["eeg"])):
        assert max(abs(v) for v in permuted["fusion"]["view_contribution"][task].values()) < 0.25 * moved, task
