"""docs/params.md and docs/metrics.md, generated from the code so that they cannot go stale
(`python -m pipeline docs`; tests/unit/test_reference.py fails when a committed page differs).

The params reference reads each section of pipeline/params.py (a key's type, its attribute
docstring, and what `allowed` and `Literal` say is allowed), params.yaml (a key's value there
is its default) and dvc.yaml (the stages whose `params:` name the key or a section above it).
The metrics reference renders the declaration in pipeline/metrics_shape.py. The CLI imports
this module by name, so no DVC stage depends on it.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic.fields import FieldInfo

from pipeline import io
from pipeline.metrics_shape import METRICS_FILES, PLACEHOLDERS, Key, Shape, is_placeholder
from pipeline.modalities import MODALITIES
from pipeline.params import Params, Section, TrainParams, allowed_text, parse_params, read_params_yaml

PARAMS_PAGE = Path("docs/params.md")
METRICS_PAGE = Path("docs/metrics.md")
README = Path("README.md")
NUMBERS_BLOCK = ("<!-- default-numbers:start -->", "<!-- default-numbers:end -->")  # README's generated lines
BRANCH_ONLY = ("encoder",)   # train keys only branches.<view> sets (parse_params refuses train.encoder)
TRAIN_ONLY = ("seeds",)      # train keys no branch overrides (parse_params refuses branches.<view>.seeds)
TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", Any: "any"}
REGENERATE = "python -m pipeline docs"


class ParamRow(NamedTuple):
    """One key of the params reference, named as `dvc exp run -S` takes it; `default` is
    Markdown (a value in backticks, or words)."""

    key: str
    type: str
    default: str
    allowed: str
    description: str
    stages: tuple[str, ...]


def key_matches(key: str, other: str) -> bool:
    """Whether dotted keys agree as far as both go, a `<placeholder>` part matching any name:
    one is the other, or a section above it (so a stage listing `data` reads `data.root`)."""
    return all(a == b or is_placeholder(a) or is_placeholder(b) for a, b in zip(key.split("."), other.split(".")))


def stage_params(root: Path) -> dict[str, tuple[str, ...]]:
    """dvc.yaml's stages, with the params.yaml keys each lists; a foreach stage once per item
    under DVC's own name (`pretrain@eeg`, as `dvc repro` and `dvc status` name it)."""
    out = {}
    for name, stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                out[f"{name}@{item}"] = tuple(k.replace("${item}", item) for k in _listed_keys(name, stage["do"]))
        else:
            out[name] = _listed_keys(name, stage)
    return out


def _listed_keys(name: str, stage: dict) -> tuple[str, ...]:
    """The params.yaml keys a dvc.yaml stage lists."""
    keys = tuple(stage.get("params", []))
    other = [k for k in keys if not isinstance(k, str)]
    if other:
        raise ValueError(f"dvc.yaml stage {name}: params entry {other[0]!r} is not a params.yaml key, "
                         "the only kind pipeline/reference.py reads")
    return keys


def readers(key: str, stages: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The stages that read `key`: their params name it or a section above it (or, for a
    placeholder key, any key it stands for)."""
    return tuple(name for name, keys in stages.items() if any(key_matches(key, k) for k in keys))


def type_name(annotation) -> str:
    """A field's type in words: `list of number`, `mapping of string to [number, number]`,
    `number or null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is Literal:
        return " or ".join(dict.fromkeys(TYPE_NAMES[type(v)] for v in args))
    if origin is tuple:
        if args[-1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return TYPE_NAMES[annotation]


def allowed_words(info: FieldInfo) -> str:
    """What a field allows, as params.py says it: `allowed`'s words for the field and for its
    items, and a Literal's values (the same words a wrong value's error message gives)."""
    return "; ".join(filter(None, [allowed_text(info), *_allowed_in(info.annotation, "")]))


def _allowed_in(annotation, role: str) -> list[str]:
    """`allowed`'s words and Literal values inside an annotation; `role` names what they are
    of (`each: ` for a list's items, `values: ` for a mapping's)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return [role + words for m in args[1:] if (words := allowed_text(m))] + _allowed_in(args[0], role)
    if origin in (Union, UnionType):
        return [words for a in args for words in _allowed_in(a, role)]
    if origin is Literal:
        return [role + ", ".join(str(v) for v in args)]
    if origin is tuple:
        items = dict.fromkeys(args[:1] if args[-1] is Ellipsis else args)
        return [words for a in items for words in _allowed_in(a, role or "each: ")]
    if origin is dict:
        return _allowed_in(args[1], "values: ")
    return []


def description(info: FieldInfo) -> str:
    """A field's attribute docstring on one line."""
    return " ".join((info.description or "").split())


def inline_yaml(value) -> str:
    """`value` as one line of YAML, as `dvc exp run -S key=value` takes it."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10 ** 9).strip()
    return text.removesuffix("...").strip()


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def _fields(model: type[Section], prefix: str) -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) of every field under `model`, sections included, in declaration order."""
    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, info))
        if _is_section(info.annotation):
            out += _fields(info.annotation, f"{prefix}{name}.")
    return out


def _lookup(mapping: dict, key: str):
    """The value at dotted `key`; KeyError when a part is absent."""
    for part in key.split("."):
        mapping = mapping[part]
    return mapping


def _default(raw: dict, parsed: dict, key: str) -> str:
    """A key's value in params.yaml, else (a key with a default in params.py) the value it parses to."""
    try:
        return f"`{inline_yaml(_lookup(raw, key))}`"
    except KeyError:
        return f"`{inline_yaml(_lookup(parsed, key))}` (not in params.yaml: params.py's default)"


def _row(key: str, info: FieldInfo, default: str, stages: dict, allowed: str | None = None,
         said: str = "") -> ParamRow:
    """A field's row; `allowed` replaces what params.py says is allowed, `said` prefixes its description."""
    return ParamRow(key, type_name(info.annotation), default, allowed_words(info) if allowed is None else allowed,
                    said + description(info), readers(key, stages))


def section_rows(name: str, raw: dict, parsed: dict, stages: dict) -> list[ParamRow]:
    """One row per leaf of a section (a mapping-valued key such as `topo.bands` is one leaf),
    in declaration order; `train` without the keys only a branch sets."""
    skip = {f"train.{k}" for k in BRANCH_ONLY}
    return [_row(key, info, _default(raw, parsed, key), stages)
            for key, info in _fields(Params.model_fields[name].annotation, f"{name}.")
            if not _is_section(info.annotation) and key not in skip]


def branch_rows(raw: dict, stages: dict) -> list[ParamRow]:
    """`branches` as it is set: any train key per view (`branches.<view>.<key>`), each view's
    encoder, then one row per override params.yaml sets."""
    train = TrainParams.model_fields
    views = ", ".join(MODALITIES)
    overridable = ", ".join(k for k in train if k not in TRAIN_ONLY)
    generic, encoder = "branches.<view>.<key>", "branches.<view>.encoder"
    rows = [
        ParamRow(generic, "as `train.<key>`", "`train.<key>`'s value", f"<view>: {views}; <key>: {overridable}",
                 description(Params.model_fields["branches"]), readers(generic, stages)),
        _row(encoder, train["encoder"], "; ".join(f"{m}: `{spec.encoders[0]}`" for m, spec in MODALITIES.items()),
             stages, allowed="; ".join(f"{m}: {', '.join(spec.encoders)}" for m, spec in MODALITIES.items())),
    ]
    overrides = raw.get("branches") or {}
    for view in (m for m in MODALITIES if overrides.get(m)):
        for key in (k for k in train if k in overrides[view]):
            allowed = ", ".join(MODALITIES[view].encoders) if key == "encoder" else None  # the view's own
            rows.append(_row(f"branches.{view}.{key}", train[key], f"`{inline_yaml(overrides[view][key])}`", stages,
                             allowed=allowed, said=f"{view} branch: "))
    return rows


def param_rows(root: Path = Path(".")) -> list[ParamRow]:
    """Every key of the params reference, section by section in params.py's order."""
    raw = read_params_yaml(root / "params.yaml")
    parsed = parse_params(raw).model_dump(mode="json")
    stages = stage_params(root)
    return [row for name in Params.model_fields
            for row in (branch_rows(raw, stages) if name == "branches" else section_rows(name, raw, parsed, stages))]


def cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, and outside code spans a `<` that would
    open an HTML tag (`<view>`) written &lt;, so that a renderer shows it."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else re.sub(r"<(?=[A-Za-z/!?])", "&lt;", p) for i, p in enumerate(parts))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)]


PARAMS_INTRO = f"""# Params reference

Generated from pipeline/params.py (each key's type, what is allowed and its description),
params.yaml (a key's value there is its default here) and dvc.yaml (the stages that read it).
Do not edit by hand: run `{REGENERATE}`; tests/unit/test_reference.py fails when this page
differs from what the code generates.

Set a key for one experiment with `dvc exp run -S <key>=<value>`, by the full dotted names
below; a key params.yaml does not hold yet (another branch override) takes a leading `+`:
`dvc exp run -S '+branches.mel.lr=0.001'`. A key whose value is a mapping
(`eeg.artifacts.iclabel_reject`, `topo.bands`) is one row. A stage reads a key when its
`params:` in dvc.yaml name the key or a section above it, so changing the key reruns that stage
and what depends on it; a foreach stage appears once per item under DVC's name
(`pretrain@eeg`), and `none` means that changing the key reruns nothing. Rules that tie keys
together (`eeg.l_freq` < `eeg.h_freq`) are checked by params.py and said in the descriptions.
"""


def params_reference(root: Path = Path(".")) -> str:
    """docs/params.md: per top-level section, its description, its subsections and a table of
    its keys, from params.py, `root`'s params.yaml and dvc.yaml."""
    rows = param_rows(root)
    lines = [PARAMS_INTRO]
    for name, info in Params.model_fields.items():
        lines += [f"## {name}", "", description(info), ""]
        if _is_section(info.annotation):
            sections = [(key, sub) for key, sub in _fields(info.annotation, f"{name}.") if _is_section(sub.annotation)]
            lines += [*(f"- `{key}`: {cell(description(sub))}" for key, sub in sections), *([""] if sections else [])]
        mine = [r for r in rows if r.key.split(".")[0] == name]
        lines += table(("key", "type", "default", "allowed", "description", "stages"),
                       [(f"`{r.key}`", r.type, r.default, r.allowed, r.description, ", ".join(r.stages) or "none")
                        for r in mine])
        lines.append("")
    return "\n".join(lines)


def _key_rows(keys: dict[str, Key] | Shape, prefix: str) -> list[tuple[str, ...]]:
    """(key, when written, meaning) of every key under `keys`, depth first; a key whose keys are
    a shared Shape links to its table instead of repeating it."""
    rows = []
    for name, key in (keys.keys if isinstance(keys, Shape) else keys).items():
        dotted = prefix + name
        link = f" Its keys: [{key.keys.title}](#{key.keys.title.lower().replace(' ', '-')})." \
            if isinstance(key.keys, Shape) else ""
        rows.append((f"`{dotted}`", key.only or "always", key.means + link))
        if not isinstance(key.keys, Shape):
            rows += _key_rows(key.keys, dotted + ".")
    return rows


def _shapes(keys: dict[str, Key] | Shape) -> list[Shape]:
    """The shared Shapes used under `keys`, each once, in order of first use."""
    found = []
    for key in (keys.keys if isinstance(keys, Shape) else keys).values():
        for shape in ([key.keys] if isinstance(key.keys, Shape) else []) + _shapes(key.keys):
            if shape not in found:
                found.append(shape)
    return found


METRICS_INTRO = f"""# Metric keys

Generated from the declaration in pipeline/metrics_shape.py. Do not edit by hand: run
`{REGENERATE}`; tests/unit/test_reference.py fails when this page differs from what the code
generates, and when a committed metrics file has a key the declaration lacks or lacks one it
always holds.

Every metrics file dvc.yaml declares, key by key, under the dotted names `dvc metrics show`,
`dvc metrics diff` and `dvc exp show` give them (`fusion.test.acc`). `written` says when a key
is there: always, or only under some params or data (a key under another is there when its
parent is). A name in angle brackets stands for any name of its kind:
"""


def metrics_reference() -> str:
    """docs/metrics.md: every key of every DVC metrics file, from METRICS_FILES."""
    lines = [METRICS_INTRO, *(f"- `{name}`: {meaning}" for name, meaning in PLACEHOLDERS.items()), ""]
    shapes = []
    for file in METRICS_FILES:
        lines += [f"## {', '.join(f'`{p}`' for p in file.paths)}", "",
                  f"Written by {file.written_by}. {file.means}", "",
                  *table(("key", "written", "meaning"), _key_rows(file.keys, "")), ""]
        shapes += [s for s in _shapes(file.keys) if s not in shapes]
    for shape in shapes:
        lines += [f"## {shape.title}", "", "The keys of every value that links here, named below it "
                  "(`fusion.test.acc`, `branches.<view>.test.recall.<class>`).", "",
                  *table(("key", "written", "meaning"), _key_rows(shape, "")), ""]
    return "\n".join(lines)


def default_numbers(metrics: dict) -> str:
    """README's block of the default run's numbers, from reports/metrics.json: summary.md's
    table rows of the fused model, its best branch on validation and the baseline best on
    validation (no row chosen on test), and the fusion's gain over that branch."""
    from pipeline.report import gain_line, results_table

    fusion, baselines = metrics["fusion"], metrics.get("baselines", {})
    best = fusion["best_branch_on_val"]
    rows = [(f"**fusion ({fusion['type']})**", fusion), (f"{best} (best branch on validation)", metrics["branches"][best])]
    if baselines:
        name = max(baselines, key=lambda n: baselines[n]["val_acc"])
        rows.append((f"_baseline: {name}_ (best on validation)", baselines[name]))
    return "\n".join([*results_table(metrics, [], rows), "", gain_line(fusion)])


def with_default_numbers(readme: str, metrics: dict) -> str:
    """`readme` with the lines between NUMBERS_BLOCK's markers replaced by `default_numbers`."""
    start, end = NUMBERS_BLOCK
    if readme.count(start) != 1 or readme.count(end) != 1 or readme.index(start) > readme.index(end):
        raise ValueError(f"{README}: needs one '{start}' line and one '{end}' line after it, around the default "
                         "run's numbers")
    return readme[:readme.index(start) + len(start)] + "\n" + default_numbers(metrics) + "\n" + readme[readme.index(end):]


def write_docs(root: Path = Path(".")) -> list[Path]:
    """Write docs/params.md and docs/metrics.md under `root`, and the default run's numbers into
    its README (from reports/metrics.json), each atomically (a temporary sibling renamed into
    place); returns their paths."""
    metrics = io.read_json(root / io.REPORTS / "metrics.json")
    pages = {root / PARAMS_PAGE: params_reference(root), root / METRICS_PAGE: metrics_reference(),
             root / README: with_default_numbers((root / README).read_text(), metrics)}
    for path, text in pages.items():
        with io.atomic_path(path) as tmp:
            tmp.write_text(text)
    return list(pages)
