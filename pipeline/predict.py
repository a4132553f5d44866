"""`python -m pipeline predict DATA --out FILE [--model final|fold<k>_seed<s>] [--rev REV]`: a
trained fused model labels recordings it has not seen.

DATA (a manifest CSV or a BIDS root) goes through the very code of the stages: ingest's checks
and each view's feature function (the one its stage calls) run on it in memory, the features
are standardised with the model's own train-only statistics, and the fused model's probabilities come out as the fuse stage
computes them. The final model (models/final/, the final stage's) carries its params, so its
features are computed as it was trained, at any revision (`--rev`, through dvc.api); a fold's
model (models/fusion/) uses this workspace's params.yaml and its fold's statistics. A trial
without a view (no audio) gets it filled with the model's train mean, as the robustness check
fills a missing view, and its row says so.
"""
from __future__ import annotations

import io as bytes_io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.errors import PipelineError, warn
from pipeline.params import Params, fill_missing, load_params, parse_params, read_params_yaml

MODEL = re.compile(r"fold(\d+)_seed(\d+)")


def data_params(params: Params, data: Path, classes: list[str], work: Path) -> Params:
    """`params` with DATA as the source: a BIDS root (dataset_description.json) or a manifest CSV
    (without a label column: a copy in `work` with blank labels and absolute paths); the model's
    classes; the primary task alone."""
    if (data / "dataset_description.json").is_file():
        source = {"source": "bids", "root": str(data.resolve())}
    elif data.suffix.lower() == ".csv" and data.is_file():
        source = {"source": "manifest", "root": str(data.resolve().parent), "manifest": data.name}
        table = pd.read_csv(data, dtype=str, keep_default_na=False)
        if "label" not in table.columns:  # unlabelled trials
            for column in ("eeg_path", "audio_path"):
                if column in table:
                    table[column] = [str((data.parent / v).resolve()) if v else "" for v in table[column]]
            table.assign(label="").to_csv(work / "unlabelled.csv", index=False)
            source = {"source": "manifest", "root": str(work), "manifest": "unlabelled.csv"}
    else:
        raise PipelineError(f"predict: {data}: neither a manifest CSV nor a BIDS root (no dataset_description.json)")
    bids = params.data.bids  # events other than the model's classes are no trials, unless the model says which are
    bids = bids if bids.labels is not None else bids.model_copy(update={"labels": tuple(classes)})
    return params.model_copy(update={"data": params.data.model_copy(update={
        **source, "classes": tuple(classes), "tasks": ("label",), "task_classes": {}, "on_error": "fail",
        "bids": bids})})


def bring_recordings(paths, p: Params, seen: list[dict] | None) -> None:
    """Stop, naming the file and the difference, at the first recording whose EEG cannot be
    brought to what the model saw (`seen`, its recordings' filters; None: a model saved before
    they were recorded, which is not checked); warn once about those that will be low-passed
    further to match it."""
    from pipeline.data.readers import open_eeg
    from pipeline.features.eeg import adapt_filters, matched_filters

    if seen is None:
        warn("predict: the model predates the record of its EEG preprocessing: new recordings' sampling rates "
             "and filters are not checked against it")
        return
    brought = {}
    for path in dict.fromkeys(paths):
        sfreq = open_eeg(path, p.eeg.read_kwargs).info["sfreq"]
        matched = matched_filters(p.eeg, sfreq, seen, path)
        if matched != adapt_filters(p.eeg, sfreq, path)[:2]:
            brought.setdefault((sfreq, matched[1]), []).append(path)
    for (sfreq, top), files in brought.items():
        warn(f"predict: {len(files)} recording(s) at {sfreq:g} Hz (first: {files[0]}) low-passed at {top:g} Hz, "
             "the top of the band the model saw")


def data_features(p: Params, views: list[str], seen: list[dict] | None) -> tuple[pd.DataFrame, np.ndarray, dict, dict]:
    """DATA's trials, which of them are labelled, and per view of `views` its features and which
    trials have it (a speech view: the trials with audio; none: the view is missing everywhere):
    the source and ingest's checks of every trial (not its checks of the whole set: one class or
    none is fine here), then each view's feature function, the one its stage calls, in memory (a
    speech view's on the trials with audio; the EEG brought to the model's preprocessing, `seen`,
    and cleaned as the model's was: ICA and autoreject per recording with the model's
    eeg.artifacts), and per recording what cleaning found (`eeg_features`)."""
    import importlib

    from pipeline.data.ingest import check_trials
    from pipeline.data.manifest import COLUMNS, BadInput
    from pipeline.data.sources import SOURCES
    from pipeline.features.eeg import eeg_features
    from pipeline.modalities import MODALITIES

    bad = BadInput("fail")
    table, _ = SOURCES[p.data.source]().trials(p, bad)
    if table.empty:
        where = f" among its events' {p.data.bids.label_column} values" if p.data.source == "bids" else ""
        raise PipelineError(f"predict: {p.data.root}: no trial of the model's classes "
                            f"({', '.join(p.data.classes)}){where}")
    labelled = (table["label"] != "").to_numpy()
    audio = (table["audio_path"] != "").to_numpy()
    # trials with audio and without, each checked as ingest checks a source's trials (which
    # refuses a mix), then back in DATA's order
    checked = [check_trials(table[rows].assign(order=np.flatnonzero(rows)), p, bad, labelled=False)[0]
               for rows in (audio, ~audio) if rows.any()]
    trials = pd.concat(checked).sort_values("order")[list(COLUMNS)].reset_index(drop=True)
    bring_recordings(trials["eeg_path"], p, seen)
    eeg, _, cleaned = eeg_features(trials, p.eeg, p.compute, seen)
    x = {"eeg": (eeg, np.ones(len(trials), bool))}
    for view in (m for m in views if m != "eeg"):
        spec = MODALITIES[view]
        present = audio if spec.needs_audio else x["eeg"][1]
        if not present.any():
            continue
        rows = np.flatnonzero(present)
        values = importlib.import_module(spec.features).features(trials.iloc[rows].reset_index(drop=True), p, eeg[rows])
        full = np.zeros((len(trials), *values.shape[1:]), values.dtype)
        full[rows] = values
        x[view] = (full, present)
    return trials, labelled, {m: v for m, v in x.items() if m in views}, cleaned


@dataclass
class Model:
    """A fused model ready to label new trials: the network, its classes, the params its features
    are computed with (the EEG channels it was trained on pinned, in their order; `compute` this
    project's), per view what `FoldData.view_stats` keeps (normaliser, fill of a missing view,
    range of the train trials' scale), and what its recordings' EEG went through
    (`preprocessing_record`; None for a final model saved before it was recorded)."""
    fused: object
    classes: list[str]
    params: Params
    stats: dict[str, dict[str, np.ndarray]]
    eeg_seen: list[dict] | None


def with_channels(params: Params, channels: list[str]) -> Params:
    """`params` reading exactly `channels`, in that order: new recordings with the channels in
    another order are reordered, and one lacking a channel stops with one line naming it."""
    return params.model_copy(update={"eeg": params.eeg.model_copy(update={"channels": tuple(channels)})})


def training_channels(params: Params) -> list[str]:
    """The EEG channels of the project's recordings (its manifest's first one: ingest makes sure
    every recording has the same)."""
    from pipeline.data.readers import eeg_channels_of
    from pipeline.dataset import load_manifest

    return eeg_channels_of(load_manifest()["eeg_path"].iloc[0], params.eeg)


def fold_model(name: str, params_path: str) -> Model:
    """Model fold<k>_seed<s> of models/fusion/, with its fold's statistics and this workspace's params."""
    from pipeline.dataset import load_features, load_manifest, load_trials
    from pipeline.features.eeg import preprocessing_record
    from pipeline.folds import fold_data
    from pipeline.fusion import load_fusion

    checkpoint = io.FUSION_DIR / f"{name}.pt"
    if not checkpoint.is_file():
        raise PipelineError(f"predict: {checkpoint}: no such model; run `dvc repro` (models/fusion/ holds "
                            f"{', '.join(sorted(f.stem for f in io.FUSION_DIR.glob('*.pt'))) or 'none'})")
    fold, fused, trials = int(MODEL.fullmatch(name).group(1)), load_fusion(checkpoint), load_trials()
    stats = fold_data({m: load_features(m, mmap=True) for m in fused.branches}, trials, fold).view_stats()
    params = load_params(params_path)
    seen = preprocessing_record(load_manifest()["eeg_path"], params.eeg)["filters"]
    return Model(fused, trials.classes, with_channels(params, training_channels(params)), stats, seen)


# params sections predict never reads (about what else a run trains and evaluates): a key new there
# since the model was saved changes nothing it computes, and goes unmentioned
UNREAD_BY_PREDICT = ("baselines", "distill", "final", "explain", "audit")


def final_model(rev: str | None, params_path: str) -> Model:
    """models/final/ of the workspace, or of git revision or DVC experiment `rev` read through
    dvc.api. Params keys added since the model was saved take this project's values (a warning
    names them)."""
    from pipeline.compare import WORKSPACE, Revision
    from pipeline.fusion import load_fusion

    with Revision(rev or WORKSPACE, who="predict") as revision:
        def read(name: str, mode: str = "r"):
            path = io.FINAL_DIR / name
            if rev is None and not path.is_file():
                raise PipelineError(f"predict: {path} not found: no final model here (final.enabled false, or the "
                                    "final stage has not run; `dvc repro`), or choose --model fold<k>_seed<s>")
            return revision.read(str(path), mode)

        meta = json.loads(read("meta.json"))
        if not meta.get("enabled"):
            raise PipelineError(f"predict: the final model is off (final.enabled false){f' at {rev}' if rev else ''}; "
                                "choose --model fold<k>_seed<s>")
        fused = load_fusion(bytes_io.BytesIO(read("fusion.pt", "rb")))
        stats = {m: dict(np.load(bytes_io.BytesIO(read(f"{m}.npz", "rb")))) for m in meta["views"]}
    current = read_params_yaml(params_path)
    # keys the model was saved without that must not take this project's values: it had no
    # dropped channels, no montage and no artifact cleaning (no ICA, or ICA without autoreject)
    for key, value in {"drop_channels": [], "montage": None, "artifacts": {**current["eeg"]["artifacts"], "ica": False}}.items():
        meta["params"]["eeg"].setdefault(key, value)
    meta["params"]["eeg"]["artifacts"].setdefault("autoreject", False)
    saved, newer = fill_missing(meta["params"], current)
    newer = [key for key in newer if key.split(".")[0] not in UNREAD_BY_PREDICT]
    if newer:
        warn(f"predict: the final model{f' at {rev}' if rev else ''} was saved before params key(s) "
             f"{', '.join(newer)} existed; {params_path}'s values stand in for them")
    saved["compute"] = current["compute"]  # where this machine runs the work, never where the model was trained
    seen = meta.get("eeg_preprocessing", {}).get("filters")
    return Model(fused, meta["classes"], with_channels(parse_params(saved), meta["eeg_channels"]), stats, seen)


# A trial is out of range in a view when its trial_scale lies more than this factor outside the
# train trials' [min, max] (README: Labelling new recordings, for the measurement behind it).
OUT_OF_RANGE_FACTOR = 3.0


def out_of_range(normalized: dict[str, np.ndarray], present: dict[str, np.ndarray],
                 stats: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per view, which trials (n,) have normalised features far outside the model's training
    range (`trial_scale` beyond OUT_OF_RANGE_FACTOR x the train trials' range); a view a trial
    lacks is not out of range. A model saved before the range was kept is not checked (a warning
    says so)."""
    from pipeline.normalize import trial_scale

    unchecked = [m for m in normalized if "scale_range" not in stats[m]]
    if unchecked:
        warn(f"predict: the model predates its training range ({', '.join(unchecked)}): inputs are not checked")
    out = {}
    for m, x in normalized.items():
        if m in unchecked:
            continue
        low, high = stats[m]["scale_range"]
        scale = trial_scale(x)
        out[m] = present[m] & ((scale < low / OUT_OF_RANGE_FACTOR) | (scale > high * OUT_OF_RANGE_FACTOR))
    return out


def predict(data: str, out: str, model: str, params_path: str = "params.yaml", rev: str | None = None) -> str:
    """Label DATA's trials with `model` ("final" or fold<k>_seed<s>); writes `out` (one row a trial:
    subject, trial, label (blank where DATA has none), predicted, p_<class>, filled, out_of_range,
    dropped ("autoreject" where the model's cleaning drops the trial: no prediction))
    and returns what to print (with labels, the accuracy and its interval)."""
    import torch

    from pipeline.evaluate import balanced_accuracy
    from pipeline.features.eeg import artifact_report, cleaning_said, dropped_trials
    from pipeline.normalize import apply_normalizer
    from pipeline.stats import MIN_SUBJECTS_INTERVAL, subject_interval
    from pipeline.training import predict_proba

    if model != "final" and not MODEL.fullmatch(model):
        raise PipelineError(f"predict: --model {model!r} is not allowed; allowed: final, or fold<k>_seed<s> "
                            "(a model of models/fusion/)")
    if rev is not None and model != "final":
        raise PipelineError("predict: --rev reads the final model (models/final/ carries its params and "
                            "statistics); for a fold's model, check out that revision")
    chosen = final_model(rev, params_path) if model == "final" else fold_model(model, params_path)
    views, classes = list(chosen.fused.branches), chosen.classes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp).resolve()
        p = data_params(chosen.params, Path(data), classes, work)
        torch.set_num_threads(p.compute.torch_threads)  # as the fuse stage's runs: the same last bits
        table, labelled, x, cleaned = data_features(p, views, chosen.eeg_seen)
    present = {m: x[m][1] if m in x else np.zeros(len(table), bool) for m in views}
    normalized = {m: apply_normalizer(x[m][0], chosen.stats[m]["mean"], chosen.stats[m]["std"]) for m in x}
    inputs = {}
    for m in views:  # a trial without the view: the model's train mean, as the robustness check fills it
        stats = chosen.stats[m]
        fill = torch.from_numpy(stats["fill"]).expand(len(table), *stats["fill"].shape[1:])
        inputs[m] = fill.clone() if m not in x else torch.where(
            torch.tensor(present[m]).view(-1, *[1] * (fill.dim() - 1)), torch.from_numpy(normalized[m]), fill)
    outside = out_of_range(normalized, present, chosen.stats)
    filled = [m for m in views if not present[m].all()]
    probs = predict_proba(chosen.fused, inputs, torch.device("cpu"), chosen.fused.output_temperature)
    probs = probs[:, :len(classes)]
    dropped = dropped_trials(len(table), cleaned)  # autoreject's, as in training: no label for them
    probs[dropped] = np.nan
    rows = pd.DataFrame({"subject": table["subject"], "trial": np.arange(len(table)),
                         "label": table["label"].where(labelled, ""),
                         "predicted": np.where(dropped, "", np.asarray(classes)[probs.argmax(1)])})
    rows = rows.join(pd.DataFrame(probs, columns=[f"p_{c}" for c in classes]))
    rows["filled"] = [";".join(m for m in views if not present[m][k]) for k in range(len(table))]
    rows["out_of_range"] = [";".join(m for m in outside if outside[m][k]) for k in range(len(table))]
    rows["dropped"] = np.where(dropped, "autoreject", "")
    io.save_csv(out, rows)
    if (flagged := rows["out_of_range"] != "").any():
        warn(f"predict: {int(flagged.sum())} of {len(rows)} trials lie far outside the model's training range in "
             + ", ".join(f"{m} ({int(v.sum())})" for m, v in outside.items() if v.any())
             + f" (out_of_range in {out}): other units, another amplifier or other preprocessing? Their labels "
             "are not to be trusted")
    said = f"predict: {len(rows)} trials of {rows['subject'].nunique()} subject(s) -> {out} (model {model}" + \
        (f" at {rev}" if rev else "") + ")"
    scored = labelled & ~dropped
    if scored.any():  # accuracy over the labelled trials, subject by subject
        scored = rows[scored]
        right = (scored["label"] == scored["predicted"]).groupby(scored["subject"]).mean()
        ua = pd.Series({subject: balanced_accuracy(g["label"].to_numpy(), g["predicted"].to_numpy())
                        for subject, g in scored.groupby("subject")})
        ci, ua_ci = (subject_interval(v.to_list(), p.split.seed, (0.0, 1.0)) for v in (right, ua))
        said += (f"; accuracy {right.mean():.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                 + f", unweighted accuracy (UA) {ua.mean():.3f}" + (f" [{ua_ci[0]:.2f}, {ua_ci[1]:.2f}]" if ua_ci else "")
                 + f" over the {len(scored)} labelled trials (mean over subjects, "
                 + ("95% interval over subjects)" if ci else f"no interval below {MIN_SUBJECTS_INTERVAL} subjects)"))
    if cleaned:  # the model's own cleaning, per new recording
        said += f"; EEG cleaned as the model's (eeg.artifacts): {cleaning_said(artifact_report(table, cleaned, p.eeg))}"
        if dropped.any():
            said += f" (those trials are not labelled: predicted blank, dropped 'autoreject' in {out})"
    return said + ("; views filled with the model's train mean: " + ", ".join(
        f"{m} ({int((~present[m]).sum())} trials)" for m in filled) if filled else "")
