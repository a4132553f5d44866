"""Classical baselines: what a branch network has to beat before its fusion gain means anything.

Per view, a scikit-learn logistic regression on simple handcrafted features of the pipeline's
own feature arrays: EEG log band power per channel and band; the EEG covariance matrix in its
tangent space (pyriemann); log-mel mean and std per mel bin over time; the persistence images
pooled to 8 x 8 bins and flattened; each openSMILE set's functionals (eGeMAPS, ComParE: the
speech field's standard); and early fusion (all the fixed features side by side; whether each
view's block is scaled to the same total variance after standardisation, so that ComParE's 6,373
columns do not outweigh the 48 of EEG band power in the penalty, is chosen on validation).
Every fitted step (standardisation, the tangent space's reference point, the classifier) sees
the fold's train trials only, and the regularisation C (and early fusion's block scaling) is the
one with the best validation accuracy (the most regularised on ties).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from pipeline.normalize import constant_on_train
from pipeline.params import Params


def log_band_power(eeg: np.ndarray, sfreq: float, bands: dict[str, tuple[float, float]]) -> np.ndarray:
    """(n, channels, samples) -> (n, channels * bands): log mean Welch power in each band
    (1 s windows, or the whole epoch if shorter), channel-major."""
    from scipy.signal import welch  # here: scipy.signal is 0.5 s of the explain stage's start-up, which needs it later

    freqs, psd = welch(eeg, fs=sfreq, nperseg=min(eeg.shape[-1], int(sfreq)), axis=-1)
    power = [psd[..., (freqs >= low) & (freqs < high)].mean(axis=-1) for low, high in bands.values()]
    return np.log(np.stack(power, axis=-1) + 1e-30).reshape(len(eeg), -1)


def mel_statistics(mel: np.ndarray) -> np.ndarray:
    """(n, 1, n_mels, n_frames) log-mel -> (n, 2 * n_mels): mean and std of each bin over time."""
    x = mel.reshape(len(mel), mel.shape[-2], mel.shape[-1])
    return np.concatenate([x.mean(axis=-1), x.std(axis=-1)], axis=1)


IMAGE_BINS = 8


def pooled_images(images: np.ndarray, bins: int = IMAGE_BINS) -> np.ndarray:
    """(n, channels, b, b) persistence images -> (n, channels * bins * bins): each image averaged
    over blocks down to at most bins x bins, flattened. A 6 x 32 x 32 image is 6,144 inputs for a
    few hundred train trials: slow to fit and no better for it."""
    n, c, b, _ = images.shape
    k = max(1, b // bins)
    b = b // k * k
    blocks = images[..., :b, :b].reshape(n, c, b // k, k, b // k, k)
    return blocks.mean(axis=(3, 5)).reshape(n, -1)


def tangent_space_steps() -> list:
    """OAS-shrunk channel covariance mapped to the Riemannian tangent space at the train mean."""
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace

    return [Covariances(estimator="oas"), TangentSpace(metric="riemann")]


class TrainStandardScaler(StandardScaler):
    """scikit-learn's StandardScaler with `fit_normalizer`'s rule for features constant on the
    train rows: they map to 0 on every row (StandardScaler would divide by 1, or by a rounding
    error's std, and pass a held-out trial's raw difference on). A branch and its baseline
    then see the same inputs. (`inverse_transform` cannot restore such a column: NaN.)"""

    def partial_fit(self, X, y=None, sample_weight=None):  # fit calls it too
        super().partial_fit(X, y, sample_weight)
        if self.var_ is not None:
            self.scale_ = np.where(constant_on_train(self.mean_, np.sqrt(self.var_)), np.inf, self.scale_)
        return self


class TrainRowSpace(TransformerMixin, BaseEstimator):
    """Coordinates in the span of the train rows, where there are more columns than train rows
    (ComParE's 6,373 against a fold's few hundred trials); otherwise the identity.

    An L2-penalised logistic regression's optimal weights lie in that span (a part orthogonal
    to every train row changes no train score and only adds to the penalty), and an orthonormal
    basis keeps both the scores and the penalty, so the optimum is the same model, found in a
    few hundred dimensions: on the default data lbfgs fitted ComParE's C grid in 0.5 s instead
    of 15 s a fold, and nearer the optimum (at C = 10 its probabilities 0.0004 from a fit to
    tol 1e-10, against 0.027 in the 6,373 columns, where it stopped early)."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] <= X.shape[0]:
            self.basis_ = None
            return self
        _, singular, vt = np.linalg.svd(X, full_matrices=False)
        self.basis_ = vt[singular > singular[0] * 1e-10].T  # (columns, rank)
        return self

    def transform(self, X):
        return X if self.basis_ is None else np.asarray(X, dtype=np.float64) @ self.basis_


@dataclass(frozen=True)
class Baseline:
    """One baseline: the view it stands for (None: several), the views it reads, how it turns
    their feature arrays into a (n, d) input, steps fitted before scaling (e.g. tangent space),
    and whether this run's params offer it (the speech sets: when the acoustic view computes them)."""
    view: str | None
    reads: tuple[str, ...]
    features: Callable[[dict[str, np.ndarray], Params], np.ndarray]
    fitted_steps: Callable[[], list] = list
    offered: Callable[[Params], bool] = lambda params: True
    blocks: Callable[[dict[str, np.ndarray], Params], tuple[int, ...]] = lambda x, params: ()


def acoustic_set(name: str) -> Baseline:
    """Logistic regression on one openSMILE set's functionals: the standard speech baseline."""
    return Baseline("acoustic", ("acoustic",), lambda x, params: x["acoustic"][:, params.acoustic.columns()[name]],
                    offered=lambda params: name in params.acoustic.feature_sets)


BASELINES = {
    "eeg_band_power": Baseline("eeg", ("eeg",), lambda x, params: log_band_power(x["eeg"], params.eeg.sfreq,
                                                                                  params.baselines.bands)),
    "eeg_tangent_space": Baseline("eeg", ("eeg",), lambda x, params: x["eeg"].astype(np.float64),
                                  tangent_space_steps, lambda params: params.baselines.tangent_space),
    "mel_stats": Baseline("mel", ("mel",), lambda x, params: mel_statistics(x["mel"])),
    "topo_images": Baseline("topo", ("topo",), lambda x, params: pooled_images(x["topo"])),
    "speech_egemaps": acoustic_set("eGeMAPSv02"),
    "speech_compare": acoustic_set("ComParE_2016"),
}
# What early fusion concatenates: every fixed-feature baseline (not the tangent space, which is fitted)
FIXED = ("eeg_band_power", "mel_stats", "topo_images", "speech_egemaps", "speech_compare")


def early_fusion_parts(x: dict[str, np.ndarray], params: Params) -> list[str]:
    """The fixed-feature baselines whose columns early fusion concatenates, in order."""
    return [name for name in FIXED if set(BASELINES[name].reads) <= set(x) and BASELINES[name].offered(params)]


def early_fusion_features(x: dict[str, np.ndarray], params: Params) -> np.ndarray:
    return np.concatenate([BASELINES[name].features(x, params) for name in early_fusion_parts(x, params)], axis=1)


def early_fusion_blocks(x: dict[str, np.ndarray], params: Params) -> tuple[int, ...]:
    """Column count of each part of early fusion's input, in order."""
    return tuple(BASELINES[name].features({m: x[m][:1] for m in BASELINES[name].reads}, params).shape[1]
                 for name in early_fusion_parts(x, params))


BASELINES["early_fusion"] = Baseline(None, ("eeg", "mel", "topo", "acoustic"), early_fusion_features,
                                     blocks=early_fusion_blocks)


def scale_blocks(x: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Standardised (n, sum(blocks)) columns, each block divided by the square root of its width:
    every block then has total variance 1 (block scaling, as in multiblock analysis), whatever
    its width."""
    return x * np.repeat(1.0 / np.sqrt(blocks), blocks)


def chosen(params: Params, available: list[str]) -> list[str]:
    """The baselines to run on data with the `available` views (early fusion: of what is there,
    when that is at least two views)."""
    names = [n for n, b in BASELINES.items() if b.view is not None and b.view in available and b.offered(params)]
    if len([m for m in available if m in BASELINES["early_fusion"].reads]) >= 2:
        names.append("early_fusion")
    return names


def logistic_regression(c: float) -> LogisticRegression:
    """The baselines' classifier at inverse regularisation `c`."""
    return LogisticRegression(C=c, max_iter=5000)


def choose_on_validation(x: np.ndarray, labels: np.ndarray, index: dict[str, np.ndarray], c_grid,
                         fitted_steps: Callable[[], list] = list, blocks: tuple[int, ...] = (),
                         classifier: Callable[[float], object] = logistic_regression) -> tuple[object, dict, float]:
    """Fit on the fold's train trials for every C, keep the best on validation. With `blocks`
    (column counts of x's parts, for early fusion), block scaling after standardisation
    (`scale_blocks`) is a choice on validation too: it weighs the parts alike, which helps when
    each carries signal and hurts when a wide part carries it alone. Ties go to no scaling, then
    to the most regularised C. `classifier(c)` is the last step (the explain stage wraps it in
    MNE's LinearModel for its patterns).

    The steps before the classifier do not depend on C: they are fitted once per scaling choice
    (the tangent space and the train-row basis were most of early fusion's time when refitted
    for every C), and the C grid runs over the classifier alone.

    Returns the fitted pipeline, what was kept ({"C": c}, and "block_scaled" when `blocks` are
    given) and its validation accuracy.
    """
    best = None
    train, val = index["train"], index["val"]
    for block_scaled in (False, True) if blocks else (False,):
        scaled = [FunctionTransformer(scale_blocks, kw_args={"blocks": blocks})] if block_scaled else []
        prep = make_pipeline(*fitted_steps(), TrainStandardScaler(), *scaled, TrainRowSpace())
        x_train, x_val = prep.fit_transform(x[train], labels[train]), prep.transform(x[val])
        for c in sorted(c_grid):
            fitted = classifier(c).fit(x_train, labels[train])
            acc = float(fitted.score(x_val, labels[val]))
            if best is None or acc > best[2]:
                model = make_pipeline(*(step for _, step in prep.steps), fitted)
                best = (model, {"C": c, **({"block_scaled": block_scaled} if blocks else {})}, acc)
    return best


def fit_on_fold(x: np.ndarray, labels: np.ndarray, index: dict[str, np.ndarray], n_classes: int,
                c_grid, fitted_steps: Callable[[], list] = list,
                blocks: tuple[int, ...] = ()) -> tuple[np.ndarray, dict, float]:
    """`choose_on_validation`'s logistic regression: class probabilities of every trial
    (n, n_classes; 0 for a class train never had), what was kept and its validation accuracy."""
    model, kept, acc = choose_on_validation(x, labels, index, c_grid, fitted_steps, blocks)
    probs = np.zeros((len(x), n_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs, kept, acc
