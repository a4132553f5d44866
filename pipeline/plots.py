"""Figures under reports/figures/: what a reviewer would rather look at than read."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _no_model(fig, axes, path: Path) -> None:
    """The figure of a run where no fold trained a fusion model (one view left on every fold)."""
    for ax in axes:
        ax.text(0.5, 0.5, "no trained fusion model", ha="center", va="center")
        ax.set_axis_off()
    _save(fig, path)


def persistence_up(image: np.ndarray) -> np.ndarray:
    """A giotto-tda persistence image (n_bins, n_bins) with rows flipped so the row index grows
    with persistence: giotto-tda returns row 0 as the highest persistence, column 0 as the
    lowest birth. Drawn with origin='lower', persistence then rises up the y axis."""
    return image[::-1]


def plot_persistence_examples(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
                              channel_names: list[str]) -> None:
    """The first trial of each class: one row per class, one column per image channel."""
    n_ch = images.shape[1]
    fig, axes = plt.subplots(len(classes), n_ch, figsize=(1.6 * n_ch, 1.6 * len(classes)), squeeze=False)
    for r, name in enumerate(classes):
        rows = np.flatnonzero(labels == r)
        for c in range(n_ch):
            ax = axes[r, c]
            if len(rows):
                ax.imshow(persistence_up(images[rows[0], c]), origin="lower", cmap="magma", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(channel_names[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("Persistence images (x: birth, y: persistence), first trial of each class", fontsize=9)
    _save(fig, path)


def plot_confusions(path: Path, confusions: dict[str, np.ndarray], classes: list[str]) -> None:
    """Row-normalised test confusion matrices summed over folds and seeds, one panel a model."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(3.2 * len(confusions), 3.2), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0, 0].set_ylabel("actual", fontsize=8)
    _save(fig, path)


def plot_curves(path: Path, histories: dict[str, dict[str, list[dict]]]) -> None:
    """Train and validation loss / accuracy per epoch, one thin line per run, for each model."""
    fig, axes = plt.subplots(2, len(histories), figsize=(3.2 * len(histories), 5), squeeze=False)
    for col, (name, runs) in enumerate(histories.items()):
        for run in runs.values():
            epochs = [r["epoch"] for r in run]
            for row, metric in enumerate(("loss", "acc")):
                axes[row, col].plot(epochs, [r[f"train_{metric}"] for r in run], color="tab:blue", lw=0.8)
                axes[row, col].plot(epochs, [r[f"val_{metric}"] for r in run], color="tab:orange", lw=0.8)
        axes[0, col].set_title(name, fontsize=9)
        axes[1, col].set_xlabel("epoch", fontsize=8)
    axes[0, 0].set_ylabel("loss (blue train, orange val)", fontsize=8)
    axes[1, 0].set_ylabel("accuracy", fontsize=8)
    _save(fig, path)


def plot_contributions(path: Path, drops: dict[str, list[float]], weights: dict[str, list[float]]) -> None:
    """Modality ablation (test accuracy drop when replaced by its train mean) and, where the
    fusion head has them, its mean learned modality weights; bars are means, ticks std."""
    panels = [("accuracy drop when ablated", drops)] + ([("learned fusion weight", weights)] if weights else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3), squeeze=False)
    if not drops:
        _no_model(fig, axes[0], path)
        return
    for ax, (title, values) in zip(axes[0], panels):
        names = list(values)
        ax.bar(names, [np.mean(values[m]) for m in names], yerr=[np.std(values[m]) for m in names],
               color="tab:green", capsize=4)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def branches_frozen(run: list[dict], modalities: list[str]) -> bool:
    """Whether no branch received a gradient in any epoch of `run` (frozen throughout)."""
    return bool(run) and all(r.get(f"grad_norm/{m}", 0.0) == 0.0 for r in run for m in modalities)


def plot_fusion_dynamics(path: Path, history: dict[str, list[dict]], modalities: list[str]) -> None:
    """Per-epoch gradient norm, embedding norm and prediction entropy of each branch during
    fusion training (first run), where one branch dominating shows at a glance."""
    run = next(iter(history.values()), [])
    keys = ("grad_norm", "embed_norm", "entropy")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3), squeeze=False)
    if branches_frozen(run, modalities):
        fig.suptitle("branches frozen throughout (fusion.freeze_epochs >= fusion.epochs): only the head trains",
                     fontsize=9, y=1.03)
    for ax, key in zip(axes[0], keys):
        for m in modalities:
            ax.plot([r["epoch"] for r in run], [r.get(f"{key}/{m}", np.nan) for r in run], label=m)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def plot_robustness(path: Path, robust: dict) -> None:
    """Fused test accuracy with one modality missing (bars, clean accuracy as a line) and with
    Gaussian noise of growing std on one modality at a time (one line a modality)."""
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3), squeeze=False)
    if not robust:
        _no_model(fig, axes[0], path)
        return
    missing, noise = robust["missing"], robust["noise"]
    ax = axes[0, 0]
    ax.bar(list(missing), list(missing.values()), color="tab:red")
    ax.axhline(robust["clean"], color="black", lw=0.8, label="clean")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy with the modality missing", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for m, by_std in noise.items():
        ax.plot([0.0, *map(float, by_std)], [robust["clean"], *by_std.values()], marker="o", label=m)
    ax.set_ylim(0, 1)
    ax.set_xlabel("noise std (normalised units)", fontsize=8)
    ax.set_title("accuracy with noise on one modality", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


MAX_COMPONENT_PANELS = 40


def plot_removed_components(path: Path, cleaned: dict[str, dict]) -> None:
    """The topographies (ICA mixing columns) of the components artifact cleaning removed, one
    panel each, titled with the recording, ICLabel's class and its probability (the first
    MAX_COMPONENT_PANELS); a note where ICA is off or removed nothing."""
    import mne

    with_ica = {rec: r for rec, r in cleaned.items() if r["components"] is not None}
    panels = [(Path(rec).name, c, r["topographies"][:, i], r["info"]) for rec, r in with_ica.items()
              for i, c in enumerate(c for c in r["components"] if c["removed"])][:MAX_COMPONENT_PANELS]
    if not panels:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "ICA off (eeg.artifacts.ica false)" if not with_ica else "ICA removed no component",
                ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, component, topography, info) in zip(axes.flat, panels):
        mne.viz.plot_topomap(topography, info, axes=ax, show=False)
        ax.set_title(f"{name[:22]}\nIC{component['component']}: {component['label']} {component['p']:.2f}", fontsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    fig.suptitle("Components removed by ICA + ICLabel (eeg.artifacts)", fontsize=9)
    _save(fig, path)


def _channel_info(layout: dict):
    """An MNE Info of the EEG view's channels with their positions (explain's topomaps), or None
    when a channel has none."""
    import mne

    positions = layout["positions"]
    if any(positions[ch] is None for ch in layout["channels"]):
        return None
    info = mne.create_info(layout["channels"], 100.0, "eeg")
    info.set_montage(mne.channels.make_dig_montage({ch: np.array(positions[ch]) for ch in layout["channels"]},
                                                   coord_frame="head"))
    return info


def plot_channel_maps(path: Path, maps: dict[str, dict[str, np.ndarray]], layout: dict, title: str,
                      signed: bool = False) -> None:
    """One panel per row (a task) and column (a band): a value per channel as a topomap
    (mne.viz.plot_topomap) where every channel has a position, as a bar chart otherwise.
    `signed` values get a diverging colour map centred on 0."""
    import mne

    info = _channel_info(layout)
    cmap = "RdBu_r" if signed else "viridis"
    cols = list(dict.fromkeys(c for row in maps.values() for c in row))
    fig, axes = plt.subplots(len(maps), len(cols), figsize=((2.6 if info else 4.5) * len(cols), 2.6 * len(maps)),
                             squeeze=False)
    for r, (row, values) in enumerate(maps.items()):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            if info is not None:
                bound = float(np.nanmax(np.abs(values[col]))) or 1.0
                image, _ = mne.viz.plot_topomap(values[col], info, axes=ax, show=False, cmap=cmap,
                                                vlim=(-bound, bound) if signed else (None, None),
                                                names=layout["channels"], sensors=True)
                fig.colorbar(image, ax=ax, shrink=0.7)
            else:
                ax.bar(range(len(values[col])), values[col])
                ax.set_xticks(range(len(values[col])), layout["channels"], rotation=90, fontsize=6)
            ax.set_title(f"{row}: {col}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_top_features(path: Path, top: dict[str, list[list]]) -> None:
    """Per task, the acoustic branch's most important openSMILE features (name, importance), largest on top."""
    fig, axes = plt.subplots(1, len(top), figsize=(5.5 * len(top), 0.22 * max(len(t) for t in top.values()) + 1),
                             squeeze=False)
    for ax, (task, ranked) in zip(axes[0], top.items()):
        names, values = zip(*ranked) if ranked else ((), ())
        ax.barh(range(len(values))[::-1], values)
        ax.set_yticks(range(len(names))[::-1], names, fontsize=6)
        ax.set_title(f"{task}: mean Integrated Gradients towards the true class", fontsize=8)
    fig.suptitle("Acoustic branch: openSMILE features ranked", fontsize=9)
    _save(fig, path)


def plot_mel_saliency(path: Path, images: np.ndarray, classes: list[str]) -> None:
    """Per class, the mel branch's mean |Integrated Gradients| over (mel band, frame): where in
    time and frequency the branch looks."""
    fig, axes = plt.subplots(1, len(classes), figsize=(2.6 * len(classes), 2.4), squeeze=False)
    for ax, name, image in zip(axes[0], classes, images):
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
    axes[0, 0].set_ylabel("mel band", fontsize=7)
    fig.suptitle("Mel branch: mean |Integrated Gradients| per class (primary task)", fontsize=9)
    _save(fig, path)


def plot_view_shares(path: Path, shares: dict[str, dict[str, dict[str, float]]]) -> None:
    """Per task, each class's stacked bar of the views' shares of the fused model's attribution."""
    fig, axes = plt.subplots(1, len(shares), figsize=(0.7 * sum(len(c) for c in shares.values()) + 2.5 * len(shares), 3),
                             squeeze=False)
    for ax, (task, by_class) in zip(axes[0], shares.items()):
        bottom = np.zeros(len(by_class))
        for view in next(iter(by_class.values())):
            values = np.nan_to_num([by_class[c][view] for c in by_class])
            ax.bar(range(len(by_class)), values, bottom=bottom, label=view)
            bottom += values
        ax.set_xticks(range(len(by_class)), list(by_class), rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(task, fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("Fused model: each view's share of the attribution, per class", fontsize=9)
    _save(fig, path)


def plot_forest(path: Path, rows: list[dict], ref: str) -> None:
    """`compare`'s rows as a forest plot: each (run, model)'s accuracy difference against `ref`
    with its 95% interval over subjects, the zero line, and Holm's p beside it."""
    several = len({r["run"] for r in rows}) > 1
    labels = [f"{r['run']}: {r['model']}" if several else r["model"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    for k, r in zip(y, rows):
        if r["ci"]:
            ax.plot(r["ci"], [k, k], color="0.3", lw=1.5)
        ax.plot([r["delta"]], [k], "o", color="C3" if r["p_holm"] is not None and r["p_holm"] < 0.05 else "C0")
        ax.annotate("p_holm n/a" if r["p_holm"] is None else f"p_holm {r['p_holm']:.2g}", (1.01, k),
                    xycoords=("axes fraction", "data"), va="center", fontsize=7)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"accuracy difference against {ref} (mean over test subjects, 95% interval)", fontsize=8)
    ax.set_title(f"compare: each run minus {ref}", fontsize=9)
    _save(fig, path)
