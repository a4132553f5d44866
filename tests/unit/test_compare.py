"""pipeline/compare.py: pairing two runs' predictions, refusing runs on different data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.compare import check_comparable, compare_runs, holm_rows, params_diff, render
from pipeline.errors import PipelineError


def _predictions(right: dict[str, list[bool]], model: str = "fusion", seeds=(0,)) -> pd.DataFrame:
    """Test predictions of one model: per subject a list of right/wrong, 2 classes."""
    rows, trial = [], 0
    for subject, outcomes in right.items():
        for ok in outcomes:
            for seed in seeds:
                rows.append({"model": model, "fold": 0, "seed": seed, "subject": subject, "trial": trial,
                             "label": "x", "predicted": "x" if ok else "y", "p_x": 0.9 if ok else 0.1,
                             "p_y": 0.1 if ok else 0.9})
            trial += 1
    return pd.DataFrame(rows)


SIX = {f"s{k}": [True, True, False, False] for k in range(6)}


def test_a_run_against_itself_is_delta_zero_p_one():
    a = _predictions(SIX)
    (row,) = compare_runs(a, a.copy(), seed=0)
    assert row["delta"] == 0.0 and row["p"] == 1.0 and row["ci"] == [0.0, 0.0]
    assert row["acc_a"] == row["acc_b"] == 0.5 and row["test"] == "wilcoxon" and row["n_subjects"] == 6


def test_better_on_every_subject_by_hand():
    a = _predictions(SIX)
    b = _predictions({s: [True, True, True, k % 2 == 0] for k, s in enumerate(SIX)})
    (row,) = compare_runs(a, b, seed=0)
    # per subject +0.25 or +0.5 -> mean +0.375; all 6 positive -> Wilcoxon 2 / 2**6
    assert row["delta"] == pytest.approx(0.375) and row["p"] == pytest.approx(2 / 64)
    # at least Student's t over the 6 differences: 0.375 -+ 2.5706 x 0.13693 / sqrt(6) = -+ 0.14370
    assert row["ci"][0] <= 0.375 - 0.14369 and row["ci"][1] >= 0.375 + 0.14369


def test_few_subjects_get_no_p_value():
    """Two subjects: no test over subjects can reach 0.05, and trials are not independent."""
    a = _predictions({"s0": [False] * 4, "s1": [False] * 4})
    b = _predictions({"s0": [True] * 4, "s1": [True, True, False, False]})
    (row,) = compare_runs(a, b, seed=0)
    assert row["test"] == "none" and row["p"] is None and row["delta"] == pytest.approx(0.75)
    table = render(holm_rows([{"run": "B", **row}]), {"B": []}, "A", md=True)
    assert "| n/a | n/a | none, 2 subjects | no test |" in table


def test_seeds_are_averaged_per_subject():
    a = _predictions(SIX, seeds=(0, 1))
    b = a.copy()
    b.loc[(b["seed"] == 1) & (b["subject"] == "s0"), "predicted"] = "x"  # s0 right on all 4 in seed 1
    (row,) = compare_runs(a, b, seed=0)
    assert row["delta"] == pytest.approx((0.75 - 0.5) / 6)


def test_unweighted_accuracy_beside_accuracy():
    """Per subject three trials of x and one of y: always predicting x is 0.75 accurate but 0.5 on
    UA (the recalls 1 and 0, averaged); getting every trial right is 1 on both."""
    def run(predicted: list[str]) -> pd.DataFrame:
        return pd.DataFrame([{"model": "fusion", "fold": 0, "seed": 0, "subject": f"s{k}", "trial": 4 * k + t,
                              "label": "xxxy"[t], "predicted": predicted[t]} for k in range(6) for t in range(4)])

    (row,) = compare_runs(run(["x"] * 4), run(list("xxxy")), seed=0)
    assert row["acc_a"] == pytest.approx(0.75) and row["ua_a"] == pytest.approx(0.5)
    assert row["acc_b"] == row["ua_b"] == 1.0
    assert row["delta"] == pytest.approx(0.25) and row["ua_delta"] == pytest.approx(0.5) and row["ua_ci"] == [0.5, 0.5]
    assert "| 0.500 | 1.000 | +0.500 | [+0.500, +0.500] |" in render(holm_rows([{"run": "B", **row}]), {"B": []}, "A",
                                                                     md=True)


def test_runs_on_different_trials_or_classes_are_refused():
    a = _predictions(SIX)
    other = _predictions({**SIX, "s9": [True]})
    with pytest.raises(PipelineError, match=r"do not share test trials and folds \(0 .* only in A, 1 only in B\)"):
        check_comparable(a, other, ("A", "B"))
    relabelled = a.rename(columns={"p_y": "p_z"})
    with pytest.raises(PipelineError, match="do not share classes"):
        check_comparable(a, relabelled, ("A", "B"))
    check_comparable(a, a.copy(), ("A", "B"))


def test_params_diff_and_markdown():
    diff = params_diff({"fusion": {"type": "concat", "dropout": 0.3}, "train": {"seeds": [0]}},
                       {"fusion": {"type": "gated", "dropout": 0.3}, "train": {"seeds": [0]}})
    assert diff == [("fusion.type", "concat", "gated")]
    rows = compare_runs(_predictions(SIX), _predictions(SIX), seed=0)
    text = render(holm_rows([{"run": "exp-1", **r} for r in rows]), {"exp-1": diff}, "HEAD", md=True)
    assert text.splitlines()[0] == ("| model | acc HEAD | acc exp-1 | delta | 95% CI | p | p_holm | test | verdict | "
                                    "UA HEAD | UA exp-1 | UA delta | UA 95% CI |")
    assert "| fusion | 0.500 | 0.500 | +0.000 | [+0.000, +0.000] | 1 | 1 | wilcoxon, 6 subjects | not significant |" in text
    assert "fusion.type: 'concat' -> 'gated'" in text
    assert not np.isnan(rows[0]["p"])


def test_secondary_tasks_are_compared_and_do_not_block_a_single_task_run():
    """A run with a secondary task (rows of `fusion:level`, its own probability columns) compares
    with a single-task run on the primary task, and with another multi-task run on both."""
    single = _predictions(SIX)
    level = _predictions({s: [True, False, False, False] for s in SIX}, model="fusion:level")
    level = level.rename(columns={"p_x": "p_level_hi", "p_y": "p_level_lo"}).assign(label="hi")
    level["predicted"] = np.where(level["p_level_hi"] > 0.5, "hi", "lo")
    multi = pd.concat([single, level], ignore_index=True)
    check_comparable(single, multi, ("A", "B"))
    assert [r["model"] for r in compare_runs(single, multi, seed=0)] == ["fusion"]
    better = level.assign(predicted="hi")
    rows = {r["model"]: r for r in compare_runs(multi, pd.concat([single, better], ignore_index=True), seed=0)}
    assert rows["fusion"]["delta"] == 0.0 and rows["fusion:level"]["delta"] == pytest.approx(0.75)
    other_classes = pd.concat([single, level.rename(columns={"p_level_lo": "p_level_mid"})], ignore_index=True)
    with pytest.raises(PipelineError, match="do not share classes on task level"):
        check_comparable(multi, other_classes, ("A", "B"))


def test_several_runs_one_family_holm_corrected(tmp_path):
    """Three runs against one reference: a row each, their p-values one family. Each run beats
    REF on all 6 subjects (Wilcoxon p = 2/64 each), so Holm multiplies the smallest by 3, the next
    by 2 and the last by 1, then keeps them non-decreasing: every row 3 x 2/64 = 0.094, none
    significant, where each alone would be. The forest plot is a PNG."""
    from pipeline.plots import plot_forest

    ref = _predictions(SIX)
    runs = {name: _predictions({s: [True, True, True, k % 2 == 0 or j == 0] for k, s in enumerate(SIX)})
            for j, name in enumerate(("gated", "film", "late"))}
    rows = holm_rows([{"run": name, **r} for name, run in runs.items() for r in compare_runs(ref, run, seed=0)])
    assert [r["p"] for r in rows] == pytest.approx([2 / 64] * 3)
    assert [r["p_holm"] for r in rows] == pytest.approx([3 * 2 / 64] * 3)
    text = render(rows, {name: [] for name in runs}, "HEAD", md=True)
    assert text.splitlines()[0].startswith("| run | model | acc HEAD | acc run | delta |")
    assert text.count("| not significant |") == 3 and "Holm-corrected across the 3 tested rows" in text
    plot_forest(tmp_path / "forest.png", rows, "HEAD")
    assert (tmp_path / "forest.png").read_bytes().startswith(b"\x89PNG")
