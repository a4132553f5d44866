"""docs/params.md and docs/metrics.md are generated from the code (pipeline/reference.py), and
these tests fail when they could go stale: a params field without a description, a params.yaml
key the reference lacks (or one it documents that params.yaml lacks), a committed page that
differs from what the generator gives now, a metrics file whose keys differ from the declaration
in pipeline/metrics_shape.py, and stages listed for a key that dvc.yaml does not say read it."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml
from pydantic import StrictInt

from pipeline import params as params_module
from pipeline.metrics_shape import METRICS_FILES, PLACEHOLDERS, Key, Shape, is_placeholder, shape_problems
from pipeline.modalities import NAMES
from pipeline.params import ParamsError, Section, allowed, parse_params
from pipeline.reference import (METRICS_PAGE, NUMBERS_BLOCK, PARAMS_PAGE, README, REGENERATE, ParamRow,
                                key_matches, metrics_reference, param_rows, params_reference, with_default_numbers,
                                write_docs)

from dvc_project import ROOT

SECTIONS = [obj for obj in vars(params_module).values()
            if isinstance(obj, type) and issubclass(obj, Section) and obj is not Section]


def undescribed(models: list[type[Section]]) -> list[str]:
    """`Model.field` of every field without a description (its attribute docstring)."""
    return [f"{model.__name__}.{name}" for model in models for name, info in model.model_fields.items()
            if not (info.description or "").strip()]


def test_every_params_field_has_a_description():
    assert len(SECTIONS) >= 15, "pipeline.params' sections were not found"
    missing = undescribed(SECTIONS)
    assert not missing, f"params fields without an attribute docstring (the string under the field): {missing}"


def test_a_field_without_a_docstring_is_caught():
    """The check above can fail: `allowed`'s words (what is allowed) are no description."""
    class Probe(Section):
        described: StrictInt
        """A field with a docstring."""
        bare: StrictInt = allowed("an integer >= 1", ge=1)

    assert undescribed([Probe]) == ["Probe.bare"]


def yaml_leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a parsed params.yaml by dotted key (an empty mapping is a leaf)."""
    out = {}
    for name, value in mapping.items():
        if isinstance(value, dict) and value:
            out |= yaml_leaves(value, f"{prefix}{name}.")
        else:
            out[prefix + name] = value
    return out


def depth(key: str) -> int:
    return len(key.split("."))


def documents(row: ParamRow, leaf: str) -> bool:
    """Whether a reference row stands for a params.yaml leaf: the same key (a placeholder part
    matching any name), or a mapping-valued key (`topo.bands`) above one of its entries."""
    return key_matches(row.key, leaf) and (depth(row.key) == depth(leaf)
                                            or depth(row.key) < depth(leaf) and row.type.startswith("mapping"))


def test_reference_documents_exactly_the_keys_of_params_yaml():
    leaves = yaml_leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))
    rows = param_rows(ROOT)
    below = {leaf: [r for r in rows if key_matches(leaf, r.key) and depth(r.key) > depth(leaf)] for leaf in leaves}
    undocumented = [leaf for leaf, value in leaves.items()  # an empty mapping (`branches.mel: {}`): keys go under it
                    if not any(documents(r, leaf) for r in rows) and not (value == {} and below[leaf])]
    unknown = [r.key for r in rows if not any(documents(r, leaf) for leaf in leaves)]
    assert not undocumented, f"params.yaml keys missing from docs/params.md's generator: {undocumented}"
    assert not unknown, f"docs/params.md documents keys params.yaml does not have: {unknown}"
    assert len({r.key for r in rows}) == len(rows), "a key is documented twice"
    page = params_reference(ROOT)
    assert all(f"| `{r.key}` |" in page for r in rows)


def test_reference_lists_the_allowed_words_of_the_error_messages():
    """The allowed column reuses params.py's own words: what a wrong value's error says."""
    rows = {r.key: r for r in param_rows(ROOT)}
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, key, value in [("fusion", "dropout", 1.5), ("eeg", "l_freq", -1.0), ("fusion", "type", "sum")]:
        bad = copy.deepcopy(raw)
        bad[section][key] = value
        with pytest.raises(ParamsError) as caught:
            parse_params(bad)
        words = str(caught.value).split("allowed: ", 1)[1]
        assert words in rows[f"{section}.{key}"].allowed, (words, rows[f"{section}.{key}"].allowed)


@pytest.mark.parametrize("page, generate", [(PARAMS_PAGE, lambda: params_reference(ROOT)),
                                            (METRICS_PAGE, metrics_reference)], ids=["params", "metrics"])
def test_committed_page_is_what_the_code_generates(page, generate):
    assert (ROOT / page).is_file(), f"{page} is missing: run `{REGENERATE}`"
    assert (ROOT / page).read_text() == generate(), f"{page} is stale: run `{REGENERATE}` and commit it"


def test_readme_shows_the_committed_default_numbers():
    """README's block of the default run's numbers is what reports/metrics.json gives: the fused
    model, its best branch and the best baseline on validation, with their intervals."""
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    readme = (ROOT / README).read_text()
    assert readme == with_default_numbers(readme, metrics), f"README's default numbers are stale: run `{REGENERATE}`"
    block = readme.split(NUMBERS_BLOCK[0])[1].split(NUMBERS_BLOCK[1])[0]
    best = metrics["fusion"]["best_branch_on_val"]
    assert f"{metrics['fusion']['test']['acc']:.3f}" in block and f"| {best} (best branch on validation) |" in block
    moved = copy.deepcopy(metrics)
    moved["fusion"]["test"]["acc"] += 0.1
    assert with_default_numbers(readme, moved) != readme  # a moved number is seen
    with pytest.raises(ValueError, match="default-numbers:start"):
        with_default_numbers(readme.replace(NUMBERS_BLOCK[0], ""), metrics)


def test_write_docs_writes_every_page_whole(tmp_path):
    for name in ("params.yaml", "dvc.yaml", "README.md", "reports/metrics.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    written = write_docs(tmp_path)
    assert written == [tmp_path / PARAMS_PAGE, tmp_path / METRICS_PAGE, tmp_path / README]
    assert written[0].read_text() == params_reference(tmp_path) == params_reference(ROOT)
    assert written[1].read_text() == metrics_reference()
    assert written[2].read_text() == (ROOT / README).read_text()
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["metrics.md", "params.md"]  # no temporary left


def test_stages_reading_a_key_are_dvc_yamls():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    naming = {name for name, stage in stages.items() if {"fusion", "fusion.type"} & set(stage.get("params", []))}
    rows = {r.key: r for r in param_rows(ROOT)}
    assert set(rows["fusion.type"].stages) == naming == {"fuse", "final", "evaluate"}
    assert "distill" in rows["fusion.modalities"].stages  # distill names fusion.modalities alone
    assert rows["mel.n_mels"].stages == ("features_mel",)  # a mel knob never reruns an EEG stage
    assert rows["branches.eeg.lr"].stages == ("pretrain@eeg", "distill", "final")
    assert rows["compute.portable_numerics"].stages[:2] == ("synthesize", "ingest")
    assert "normalize@topo" in rows["compute.portable_numerics"].stages
    assert rows["compute.n_jobs"].stages == ()  # no DVC dependency


def test_key_matching():
    assert key_matches("data.synthetic.seed", "data")
    assert key_matches("branches.<view>.<key>", "branches.eeg")
    assert not key_matches("train.lr", "train.seeds")
    assert not key_matches("branches.eeg.lr", "branches.mel")


def dvc_metrics_paths() -> set[str]:
    """Every metrics file dvc.yaml declares, top-level and per stage (`${item}` as `<view>`)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = list(dvc.get("metrics", []))
    for stage in dvc["stages"].values():
        paths += [e if isinstance(e, str) else next(iter(e)) for e in stage.get("do", stage).get("metrics", [])]
    return {p.replace("${item}", "<view>") for p in paths}


def test_every_dvc_metrics_file_is_declared():
    assert {p for f in METRICS_FILES for p in f.paths} == dvc_metrics_paths()


def committed_metrics() -> list[tuple[str, dict]]:
    """(path, declared keys) of every committed metrics file, `<view>` as each view."""
    return [(p.replace("<view>", view), f.keys) for f in METRICS_FILES for p in f.paths
            for view in (NAMES if "<view>" in p else [""])]


@pytest.mark.parametrize("path, keys", committed_metrics(), ids=[p for p, _ in committed_metrics()])
def test_committed_metrics_file_matches_the_declaration(path, keys):
    problems = shape_problems(keys, json.loads((ROOT / path).read_text()))
    assert not problems, f"{path} and pipeline/metrics_shape.py disagree: {problems}"


def test_shape_problems_finds_undeclared_and_missing_keys():
    metrics = json.loads((ROOT / "reports/metrics.json").read_text())
    keys = METRICS_FILES[0].keys
    assert "students" not in metrics and not shape_problems(keys, metrics)  # only with students: absent is no problem
    changed = copy.deepcopy(metrics)
    changed["fusion"]["test"]["brier"] = 0.1         # undeclared, under a shared shape
    changed["branches"]["eeg"]["test"]["recall"]["fear"] = 0.5  # a placeholder matches any class
    del changed["fusion"]["type"]                    # always written
    changed["fusion"]["trained"]["test"] = None      # no fold trained one: nothing under it to check
    assert shape_problems(keys, changed) == ["fusion.type: declared, always written, missing",
                                             "fusion.test.brier: in the file, not declared"]


def _declared_mappings(keys: dict[str, Key] | Shape):
    keys = keys.keys if isinstance(keys, Shape) else keys
    yield keys
    for key in keys.values():
        yield from _declared_mappings(key.keys)


def test_placeholders_are_known_and_alone_in_their_mapping():
    for file in METRICS_FILES:
        for mapping in _declared_mappings(file.keys):
            placeholders = [name for name in mapping if is_placeholder(name)]
            assert set(placeholders) <= set(PLACEHOLDERS), placeholders
            assert not placeholders or len(mapping) == 1, f"{placeholders[0]} beside other keys: {list(mapping)}"
