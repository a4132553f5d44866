"""pipeline/plots.py: every figure is written as a real PNG, atomically, at the path asked."""
from __future__ import annotations

import numpy as np

from pipeline import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_a_png(tmp_path):
    classes = ["a", "b", "c"]
    run = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5, "val_acc": 0.4,
            "grad_norm/eeg": 0.1, "embed_norm/eeg": 2.0, "entropy/eeg": 1.0} for e in (1, 2, 3)]
    plots.plot_persistence_examples(tmp_path / "pi.png", np.random.rand(6, 2, 8, 8), np.array([0, 1, 2] * 2),
                                    classes, ["H0", "H1"])
    plots.plot_confusions(tmp_path / "cm.png", {"eeg": np.eye(3, dtype=int), "fusion": np.ones((3, 3), int)}, classes)
    plots.plot_curves(tmp_path / "curves.png", {"eeg": {"fold0_seed0": run}})
    plots.plot_contributions(tmp_path / "contrib.png", {"eeg": [0.1, 0.2]}, {"eeg": [0.6, 0.7]})
    plots.plot_fusion_dynamics(tmp_path / "dyn.png", {"fold0_seed0": run}, ["eeg"])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["cm.png", "contrib.png", "curves.png", "dyn.png", "pi.png"]  # no temp files left
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000


def test_persistence_up_puts_high_persistence_on_high_rows():
    """A point of persistence 0.85 peaks near the top (high row index, drawn with
    origin='lower'), one of persistence 0.1 near the bottom; births stay on the columns."""
    from gtda.diagrams import PersistenceImage

    grid = np.array([[[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])
    images = PersistenceImage(sigma=0.03, n_bins=10).fit(grid)
    high = plots.persistence_up(images.transform(np.array([[[0.1, 0.95, 0.0]]]))[0, 0])
    low = plots.persistence_up(images.transform(np.array([[[0.8, 0.9, 0.0]]]))[0, 0])
    (high_row, high_col), (low_row, low_col) = (np.unravel_index(i.argmax(), i.shape) for i in (high, low))
    assert high_row >= 7 and low_row <= 1
    assert high_col <= 1 and low_col >= 7


def test_branches_frozen_only_when_no_branch_ever_got_a_gradient():
    """The fusion-dynamics figure says the branches were frozen only when every epoch's gradient
    norm of every branch is 0 (as FreezeModules leaves it), never for one still epoch."""
    still = [{"epoch": e, "grad_norm/eeg": 0.0, "grad_norm/mel": 0.0} for e in (1, 2)]
    assert plots.branches_frozen(still, ["eeg", "mel"])
    assert not plots.branches_frozen(still + [{"epoch": 3, "grad_norm/eeg": 0.0, "grad_norm/mel": 0.2}], ["eeg", "mel"])
    assert not plots.branches_frozen([], ["eeg"])


def test_explain_figures_are_pngs_with_and_without_channel_positions(tmp_path):
    """Topomaps where every channel has a position (MNE's standard 10-20 ones), a bar chart per
    channel where one has none; the other explain figures."""
    import mne

    names = ["Fp1", "Fp2", "C3", "C4", "O1", "O2"]
    xyz = mne.channels.make_standard_montage("standard_1020").get_positions()["ch_pos"]
    placed = {"channels": names, "positions": {ch: list(map(float, xyz[ch])) for ch in names}}
    unplaced = {"channels": names, "positions": {**placed["positions"], "O2": None}}
    assert plots._channel_info(placed) is not None and plots._channel_info(unplaced) is None
    maps = {"label": {"theta": np.arange(6.0), "alpha": np.ones(6)}, "valence": {"theta": np.zeros(6), "alpha": np.arange(6.0)}}
    plots.plot_channel_maps(tmp_path / "topo.png", maps, placed, "patterns")
    plots.plot_channel_maps(tmp_path / "bars.png", maps, unplaced, "patterns", signed=True)
    plots.plot_channel_maps(tmp_path / "signed.png", maps, placed, "attributions", signed=True)
    plots.plot_top_features(tmp_path / "top.png", {"label": [["F0semitone_amean", 0.2], ["loudness_amean", 0.1]]})
    plots.plot_mel_saliency(tmp_path / "mel.png", np.random.rand(3, 8, 16), ["a", "b", "c"])
    plots.plot_view_shares(tmp_path / "share.png", {"label": {"a": {"eeg": 0.7, "mel": 0.3}, "b": {"eeg": np.nan, "mel": 1.0}}})
    for name in ("topo.png", "bars.png", "signed.png", "top.png", "mel.png", "share.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
