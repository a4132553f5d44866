"""pipeline/params.py: the real params.yaml loads; every wrong value is a ParamsError that names
the key and what is allowed; the CLI turns it into one line on stderr and writes nothing."""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.modalities import MODALITIES as MODALITY_SPECS
from pipeline.params import FUSION_TYPES, MODALITIES, SECTIONS, ParamsError, fill_missing, load_params, parse_params

from dvc_project import ROOT



@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _with(raw: dict, dotted: str, value) -> dict:
    """A deep copy of `raw` with the value at `a.b.c` replaced."""
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message, "the error must be one line"
    assert message.startswith("params: "), message
    return message


# ------------------------------------------------------------------ the real file

def test_real_params_load(params):
    assert params.fusion is not None and params.fusion.type in FUSION_TYPES
    assert set(params.fusion.modalities) <= set(MODALITIES)
    assert len(params.train.seeds) >= 1 and all(isinstance(s, int) for s in params.train.seeds)
    assert 0.0 <= params.fusion.dropout < 1.0
    assert params.train.loss_temperature > 0
    assert params.split.scheme in ("holdout", "kfold", "loso")
    # typed: bands are (low, high) tuples of floats, seeds a tuple
    for low, high in params.topo.bands.values():
        assert isinstance(low, float) and isinstance(high, float) and low < high
    assert isinstance(params.train.seeds, tuple)
    # every modality has branch params, equal to train when no override is given
    for m in MODALITIES:
        assert params.branch(m).lr > 0


def test_load_params_equals_parse_of_the_yaml(raw, params):
    assert parse_params(raw) == params


def test_params_error_is_a_pipeline_error():
    assert issubclass(ParamsError, PipelineError)


# ------------------------------------------------------------------ wrong values

def test_unknown_fusion_type(raw):
    message = _error(_with(raw, "fusion.type", "no_such_fusion"))
    assert "fusion.type" in message and "no_such_fusion" in message
    for name in FUSION_TYPES:
        assert name in message, f"allowed value {name} not listed: {message}"


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_fusion_dropout_outside_unit_interval(raw, value):
    message = _error(_with(raw, "fusion.dropout", value))
    assert "fusion.dropout" in message and str(value) in message
    assert "0 <= dropout < 1" in message


def test_fusion_dropout_zero_is_allowed(raw):
    assert parse_params(_with(raw, "fusion.dropout", 0.0)).fusion.dropout == 0.0


@pytest.mark.parametrize("value", [0, 0.0, -1.0])
def test_train_loss_temperature_not_positive(raw, value):
    message = _error(_with(raw, "train.loss_temperature", value))
    assert "train.loss_temperature" in message and "> 0" in message


def test_fusion_loss_temperature_not_positive(raw):
    message = _error(_with(raw, "fusion.loss_temperature", 0))
    assert "fusion.loss_temperature" in message and "> 0" in message


def test_empty_seeds(raw):
    message = _error(_with(raw, "train.seeds", []))
    assert "train.seeds" in message and "non-empty list" in message


def test_duplicate_seeds(raw):
    message = _error(_with(raw, "train.seeds", [1, 1]))
    assert "train.seeds" in message and "distinct" in message


@pytest.mark.parametrize("mods", [["eeg", "video"], ["video", "mel", "topo"], ["eeg"], ["eeg", "eeg"]])
def test_fusion_modalities_unknown_or_too_few(raw, mods):
    message = _error(_with(raw, "fusion.modalities", mods))
    assert "fusion.modalities" in message
    for m in MODALITIES:
        assert m in message.split("allowed:")[1], f"allowed modality {m} not listed: {message}"


@pytest.mark.parametrize("section", ["fusion", "train", "mel"])
def test_unknown_key_in_section(raw, section):
    message = _error(_with(raw, f"{section}.bogus_knob", 1))
    assert f"{section}.bogus_knob" in message
    # the allowed keys of that section are listed
    for key in raw[section]:
        assert key in message.split("allowed:")[1]


def test_unknown_section(raw):
    bad = copy.deepcopy(raw)
    bad["video"] = {}
    message = _error(bad)
    assert "video" in message and "fusion" in message and "branches" in message


def test_missing_key(raw):
    bad = copy.deepcopy(raw)
    del bad["fusion"]["head_lr"]
    message = _error(bad)
    assert "fusion.head_lr" in message and "missing" in message


def test_wrong_type(raw):
    message = _error(_with(raw, "train.epochs", "many"))
    assert "train.epochs" in message and "integer" in message


def test_unknown_loss(raw):
    message = _error(_with(raw, "train.loss", "hinge"))
    assert "train.loss" in message and "ce" in message and "focal" in message


def test_unknown_split_scheme(raw):
    message = _error(_with(raw, "split.scheme", "random"))
    assert "split.scheme" in message
    for scheme in ("holdout", "kfold", "loso"):
        assert scheme in message


def test_film_condition_must_be_a_fused_modality(raw):
    bad = _with(_with(_with(raw, "fusion.type", "film"), "fusion.modalities", ["eeg", "topo"]),
                "fusion.film_condition", "mel")
    message = _error(bad)
    assert "fusion.film_condition" in message and "eeg, topo" in message


def test_ensemble_fixed_weights_one_per_modality(raw):
    bad = _with(raw, "fusion.type", "ensemble")
    bad = _with(_with(bad, "fusion.ensemble_weighting", "fixed"), "fusion.ensemble_weights", [1.0, 1.0])
    message = _error(bad)
    assert "fusion.ensemble_weights" in message and "4 non-negative numbers" in message


@pytest.mark.parametrize("key,value,allowed", [
    ("fusion.heads", 5, "divides fusion.hidden"),
    ("fusion.embed_norm", "groupnorm", "none, batchnorm, layernorm"),
    ("fusion.post_curriculum_dropout", 1.0, "0 <= dropout < 1"),
    ("fusion.grad_modulation", "gradnorm", "none, ogm_ge"),
    ("fusion.ensemble_weighting", "best", "equal, val, fixed"),
    ("fusion.modality_dropout", 1.0, "0 <= p < 1"),
    ("fusion.select", "best", "fusion, safe"),
    ("fusion.optimizer", "adam", "adamw, sgd"),
    ("fusion.drop_uninformative", "yes", "true or false"),
])
def test_other_fusion_knobs(raw, key, value, allowed):
    message = _error(_with(raw, key, value))
    assert key in message and allowed in message


@pytest.mark.parametrize("value,allowed", [
    (["eGeMAPS"], "allowed: eGeMAPSv02, ComParE_2016"),
    ([], "a non-empty list of distinct openSMILE sets"),
    (["eGeMAPSv02", "eGeMAPSv02"], "distinct names of eGeMAPSv02, ComParE_2016"),
])
def test_acoustic_feature_sets(raw, value, allowed):
    message = _error(_with(raw, "acoustic.feature_sets", value))
    assert "acoustic.feature_sets" in message and allowed in message, message


def test_acoustic_columns_follow_the_listed_order(raw):
    p = parse_params(_with(raw, "acoustic.feature_sets", ["ComParE_2016", "eGeMAPSv02"]))
    assert p.acoustic.columns() == {"ComParE_2016": slice(0, 6373), "eGeMAPSv02": slice(6373, 6461)}


# ------------------------------------------------------------------ branch overrides

def test_branch_override_applies_to_that_branch_only(raw):
    bad = _with(raw, "branches", {"mel": {"lr": 0.0123}})
    p = parse_params(bad)
    assert p.branch("mel").lr == 0.0123
    assert p.branch("eeg").lr == p.train.lr == raw["train"]["lr"]
    assert p.branch("topo").lr == p.train.lr
    # everything else of mel still comes from train
    assert p.branch("mel").epochs == p.train.epochs
    assert p.branch("mel").seeds == p.train.seeds


def test_branch_override_is_validated(raw):
    message = _error(_with(raw, "branches", {"mel": {"dropout": 1.0}}))
    assert "branches.mel.dropout" in message and "0 <= dropout < 1" in message


def test_branch_override_unknown_key(raw):
    message = _error(_with(raw, "branches", {"eeg": {"bogus": 1}}))
    assert "branches.eeg.bogus" in message


def test_branch_override_unknown_modality(raw):
    message = _error(_with(raw, "branches", {"video": {"lr": 0.1}}))
    assert "branches.video" in message
    for m in MODALITIES:
        assert m in message.split("allowed:")[1]


def test_branch_encoder_defaults_to_the_views_first_and_is_checked_per_view(raw):
    p = parse_params(_with(raw, "branches", {}))
    for m in MODALITIES:
        assert p.branch(m).encoder == MODALITY_SPECS[m].encoders[0]
    assert p.train.encoder is None
    p = parse_params(_with(raw, "branches", {"eeg": {"encoder": "shallow_fbcsp"}}))
    assert p.branch("eeg").encoder == "shallow_fbcsp" and p.branch("mel").encoder == "image_cnn"
    assert _error(_with(raw, "branches", {"mel": {"encoder": "eegnet"}})) == (
        "params: branches.mel.encoder = 'eegnet' is not allowed; allowed: image_cnn")
    message = _error(_with(raw, "branches", {"eeg": {"encoder": "resnet"}}))
    assert message.startswith("params: branches.eeg.encoder = 'resnet'") and "shallow_fbcsp" in message
    assert _error(_with(raw, "train.encoder", "eegnet")).startswith("params: train.encoder = 'eegnet'")


# ------------------------------------------------------------------ files

def test_load_params_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("fusion: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


# ------------------------------------------------------------------ the CLI

@pytest.mark.parametrize("key,value", [("fusion.type", "no_such_fusion"), ("train.seeds", [])])
def test_cli_bad_params_one_line_no_output(raw, tmp_path, key, value):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(raw, key, value)))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "pipeline", "split", "--params", str(bad)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["bad.yaml"]
    for folder in ("data", "models", "reports"):
        assert not (tmp_path / folder).exists()


# ------------------------------------------------------------------ declared types

def test_per_branch_seeds_are_rejected(raw):
    message = _error(_with(raw, "branches", {"eeg": {"seeds": [5]}}))
    assert message.startswith("params: branches.eeg.seeds = [5] is not allowed")
    assert "train.seeds" in message


@pytest.mark.parametrize("key,value,words", [
    ("train.epochs", True, "integer"),       # a bool is no integer
    ("train.epochs", 2.5, "integer"),
    ("train.lr", "0.1", "number"),           # a string is no number
    ("train.lr", True, "number"),
    ("fusion.channel_scale", 1, "true or false"),
    ("split.scheme", 3, "holdout"),
    ("data.root", 5, "a string"),
])
def test_types_are_strict(raw, key, value, words):
    message = _error(_with(raw, key, value))
    assert message.startswith(f"params: {key} = {value!r} is not allowed; allowed: ") and words in message


def test_an_integer_where_a_number_is_expected_becomes_a_float(raw):
    p = parse_params(_with(raw, "train.lr", 1))
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)


def test_ranges_are_declared_beside_the_fields(raw):
    assert _error(_with(raw, "data.synthetic.n_subjects", 2)) == (
        "params: data.synthetic.n_subjects = 2 is not allowed; allowed: an integer >= 3")
    assert "topo.bands.alpha" in _error(_with(raw, "topo.bands", {"alpha": [13.0, 8.0]}))
    assert "train.seeds[1]" in _error(_with(raw, "train.seeds", [0, "x"]))
    assert _error(_with(raw, "compute.n_jobs", 0)).endswith("an integer >= 1, or -1")


def test_dump_round_trip(params):
    """A section's model_dump() validates back to the same section (what fusion checkpoints rely on)."""
    for section in SECTIONS:
        obj = getattr(params, section)
        assert type(obj).model_validate(obj.model_dump()) == obj


def test_ogm_ge_rules_and_warning(raw):
    ogm = _with(raw, "fusion.grad_modulation", "ogm_ge")
    assert "fusion.grad_modulation" in _error(_with(ogm, "fusion.type", "late"))
    gated = _with(_with(ogm, "fusion.type", "gated"), "fusion.aux_loss_weight", 0.0)
    message = _error(gated)
    assert message.startswith("params: fusion.aux_loss_weight = 0.0 is not allowed") and "branch head" in message
    assert parse_params(_with(gated, "fusion.aux_loss_weight", 0.5)).fusion.type == "gated"
    ogm = _with(ogm, "fusion.freeze_epochs", 0)
    assert parse_params(ogm).fusion.warnings() and "sgd" in parse_params(ogm).fusion.warnings()[0]
    assert parse_params(_with(ogm, "fusion.optimizer", "sgd")).fusion.warnings() == []
    frozen = parse_params(_with(_with(ogm, "fusion.optimizer", "sgd"), "fusion.freeze_epochs", 20)).fusion
    assert len(frozen.warnings()) == 1 and "frozen throughout" in frozen.warnings()[0]
    aux = parse_params(_with(_with(raw, "fusion.freeze_epochs", 20), "fusion.aux_loss_weight", 0.5)).fusion
    assert len(aux.warnings()) == 1 and "train nothing" in aux.warnings()[0]
    assert parse_params(_with(_with(raw, "fusion.freeze_epochs", 19), "fusion.aux_loss_weight", 0.5)).fusion.warnings() == []


def test_more_types_are_strict(raw):
    assert _error(_with(raw, "topo.homology_dimensions", [True])).startswith(
        "params: topo.homology_dimensions[0] = True is not allowed; allowed: an integer")
    assert _error(_with(raw, "topo.homology_dimensions", [1.0])).startswith("params: topo.homology_dimensions[0] = 1.0")
    assert _error(_with(raw, "train.seeds", [0, True])) == (
        "params: train.seeds[1] = True is not allowed; allowed: an integer")
    assert _error(_with(raw, "eeg.notch", "50")) == "params: eeg.notch = '50' is not allowed; allowed: a number"
    assert _error(_with(raw, "topo.bands", {"alpha": ["8", 13.0]})).startswith("params: topo.bands.alpha[0] = '8'")


def test_integers_where_numbers_are_expected_become_floats(raw):
    bad = _with(_with(_with(raw, "topo.bands", {"alpha": [8, 13]}), "eeg.notch", 50), "fusion.ensemble_weights", [1, 2, 3])
    p = parse_params(bad)
    assert p.topo.bands == {"alpha": (8.0, 13.0)} and all(type(f) is float for f in p.topo.bands["alpha"])
    assert type(p.eeg.notch) is float and all(type(w) is float for w in p.fusion.ensemble_weights)
    # and the message shows the value as a number, as it was used: `0.0`, not `0`
    assert _error(_with(raw, "train.lr", 0)) == "params: train.lr = 0.0 is not allowed; allowed: > 0"
    assert _error(_with(raw, "branches", {"eeg": {"lr": 0}})) == "params: branches.eeg.lr = 0.0 is not allowed; allowed: > 0"


def test_bands_are_pairs_with_string_names(raw):
    for value in ([8.0], [8.0, 13.0, 30.0]):
        assert _error(_with(raw, "topo.bands", {"alpha": value})) == (
            f"params: topo.bands.alpha = {value!r} is not allowed; allowed: a list of 2 numbers")
    assert _error(_with(raw, "topo.bands", {})) == "params: topo.bands = {} is not allowed; allowed: at least one band"
    assert _error(_with(raw, "topo.bands", {1: [8.0, 13.0]})).startswith("params: topo.bands.1 = 1 is not allowed")


def test_compute_section_is_required(raw):
    bad = copy.deepcopy(raw)
    del bad["compute"]
    assert _error(bad).startswith("params: section compute is missing")


def test_film_condition_is_only_checked_for_film(raw):
    assert parse_params(_with(raw, "fusion.film_condition", "none")).fusion.film_condition == "none"
    assert "fusion.film_condition" in _error(_with(_with(raw, "fusion.type", "film"), "fusion.film_condition", "none"))


def test_unknown_key_is_named_before_a_wrong_value(raw):
    bad = _with(_with(raw, "train.lr", -1.0), "train.bogus", 1)
    assert _error(bad).startswith("params: train.bogus = '(unknown key)'")


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and value and key not in ("bands", "read_kwargs"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("value", [None, True, -1, 0.5, "x", [], [0, 0], {"a": 1}])
def test_every_wrong_value_is_one_params_line(raw, value):
    """Whatever the key and value: accepted, or a ParamsError of one line naming a key of that
    section (a cross-field rule may name the other key), never a pydantic error."""
    for key in _leaves(raw):
        try:
            parse_params(_with(raw, key, value))
        except ParamsError as exc:
            message = str(exc)
            assert message.startswith(f"params: {key.split('.')[0]}.") and "\n" not in message, message


def test_dump_of_the_whole_file_parses_back(raw, params):
    """model_dump() gives plain Python values, and the dump (as evaluate writes it) parses back to
    the same Params."""
    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (tuple, list)):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    dumped = params.model_dump()
    assert plain(dumped) and isinstance(dumped["train"]["seeds"], tuple)
    assert set(dumped) == {*SECTIONS, "branches"}
    for mode in ("python", "json"):
        again = {k: v for k, v in params.model_dump(mode=mode).items() if k != "branches"}
        assert parse_params({**again, "branches": raw["branches"]}) == params
    assert parse_params(params.to_yaml_mapping()) == params  # what models/final/meta.json stores


def test_params_pickle_and_are_frozen(params):
    assert pickle.loads(pickle.dumps(params)) == params  # joblib workers get them pickled
    with pytest.raises(Exception):
        params.train.lr = 1.0


def test_loading_params_imports_no_heavy_library():
    code = ("import pipeline.params, sys; "
            "print([m for m in ('torch', 'mne', 'librosa', 'pandas', 'dvclive') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_baselines_section_is_declared(raw):
    assert _error(_with(raw, "baselines.c_grid", [1.0, 0.0])) == (
        "params: baselines.c_grid[1] = 0.0 is not allowed; allowed: > 0")
    assert _error(_with(raw, "baselines.c_grid", [])).startswith("params: baselines.c_grid = [] is not allowed")
    assert "baselines.bands.alpha" in _error(_with(raw, "baselines.bands", {"alpha": [13.0, 8.0]}))
    assert _error(_with(raw, "baselines.tangent_space", "yes")).endswith("true or false")


def test_params_saved_before_a_key_existed_take_the_projects_values_and_name_them(raw):
    """A final model's stored params lacking keys added since (a key, a whole section) parse
    again with this project's values for exactly those keys, and the keys are named; stored
    values are never overwritten."""
    saved = copy.deepcopy(raw)
    del saved["fusion"]["select_alpha"], saved["final"]
    saved["fusion"]["dropout"] = 0.45
    filled, taken = fill_missing(saved, raw)
    assert taken == ["fusion.select_alpha", "final"]
    assert filled["fusion"]["dropout"] == 0.45 and "select_alpha" not in saved["fusion"]  # the input is left as it was
    assert parse_params(filled) == parse_params(_with(raw, "fusion.dropout", 0.45))
    assert fill_missing(raw, raw) == (raw, [])
    # a mapping-valued key is a value, not a section: the model's own bands stay as they were
    fewer = copy.deepcopy(raw)
    fewer["topo"]["bands"] = dict(list(raw["topo"]["bands"].items())[:2])
    assert fill_missing(fewer, raw) == (fewer, [])


def test_drop_channels_and_channels_may_not_name_one_channel(raw):
    message = _error(_with(_with(raw, "eeg.channels", ["Fz", "Cz", "Pz"]), "eeg.drop_channels", ["Cz"]))
    assert message.startswith("params: eeg.drop_channels = ['Cz'] is not allowed") and "Cz is in both" in message


@pytest.mark.parametrize("key,value,words", [
    ("eeg.artifacts.ica_method", "jade", "infomax, picard, fastica"),
    ("eeg.artifacts.ica_components", 1.5, "a whole count >= 2, or a share of variance between 0 and 1"),
    ("eeg.artifacts.ica_components", 0, "a count >= 2, or a share of variance between 0 and 1"),
    ("eeg.artifacts.iclabel_reject", {"brain": 0.5}, "(brain and other are never removed)"),
    ("eeg.artifacts.iclabel_reject", {"eye blink": 1.0}, "a probability in [0, 1)"),
    ("eeg.artifacts.ica", "yes", "true or false"),
])
def test_artifact_keys_are_validated_like_every_other(raw, key, value, words):
    message = _error(_with(raw, key, value))
    assert message.startswith("params: eeg.artifacts.") and words in message, message


def test_artifact_cleaning_is_off_by_default_with_iclabel_s_classes(raw):
    artifacts = load_params(ROOT / "params.yaml").eeg.artifacts
    assert artifacts.ica is False and artifacts.n_components == 15 and artifacts.ica_method == "infomax"
    assert artifacts.iclabel_reject == dict.fromkeys(
        ("eye blink", "muscle artifact", "heart beat", "line noise", "channel noise"), 0.8)
