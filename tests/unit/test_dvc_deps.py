"""dvc.yaml lists, for every stage, exactly the package modules that stage imports (its import
closure inside pipeline/, from the CLI down), so no cached result can outlive a change to the
code that made it, and no stage reruns for code it never runs."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.modalities import MODALITIES

from dvc_project import ROOT, dvc_stages

PACKAGE = ROOT / "pipeline"


def _module_file(name: str) -> Path | None:
    """The file of module `name` (pipeline.x.y) inside the package, or None if it is not one."""
    if name != "pipeline" and not name.startswith("pipeline."):
        return None
    path = ROOT.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _has_code(init: Path) -> bool:
    """An __init__.py counts only when it holds more than a docstring."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


TASK_NAME = re.compile(r"(pipeline(?:\.\w+)+):\w+")  # a worker task named "module:function" (parallel.stream)


def imported_files(path: Path) -> set[Path]:
    """Package files imported anywhere in `path` (module level or inside functions, or as the
    module of a task named "module:function", which its workers import), with the package
    __init__ files that importing them runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and TASK_NAME.fullmatch(node.value):
            names = [TASK_NAME.fullmatch(node.value).group(1)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline.x import y`: y may be a submodule or a name inside pipeline.x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # parent packages run their __init__ first
                file = _module_file(".".join(parts[:k]))
                if file is not None:
                    found.add(file)
    return {f for f in found if f.name != "__init__.py" or _has_code(f)}


def closure(roots: list[Path]) -> set[Path]:
    todo, seen = list(roots), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported_files(path) - seen)
    return seen


def stage_roots(cmd: str) -> list[Path]:
    """Entry files of `python -m pipeline <stage> [modality]`: the CLI, the stage module it
    imports by name, and for `features` the module the modality registry names."""
    match = re.fullmatch(r"python -m pipeline (\w+)(?: (\w+))?", cmd.strip())
    assert match, f"unexpected stage command {cmd!r}"
    stage, modality = match.groups()
    roots = [PACKAGE / "__main__.py", PACKAGE / "cli.py", PACKAGE / "stages" / f"{stage}.py"]
    if stage == "features":
        roots.append(_module_file(MODALITIES[modality].features))
    return roots


def listed_code(stage: dict) -> set[Path]:
    """Package files a stage lists as deps (a folder stands for every .py file under it)."""
    files = set()
    for dep in stage.get("deps", []):
        path = ROOT / dep
        if not path.resolve().is_relative_to(PACKAGE):
            continue
        assert path.exists(), f"dvc.yaml lists {dep}, which does not exist"
        files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return {f for f in files if f.name != "__init__.py" or _has_code(f)}


STAGES = dvc_stages(ROOT)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_lists_exactly_its_import_closure(name):
    stage = STAGES[name]
    needed, listed = closure(stage_roots(stage["cmd"])), listed_code(stage)
    missing = sorted(str(p.relative_to(ROOT)) for p in needed - listed)
    extra = sorted(str(p.relative_to(ROOT)) for p in listed - needed)
    assert not missing, f"dvc.yaml stage {name} runs code it does not list as deps: {missing}"
    assert not extra, f"dvc.yaml stage {name} lists code it never imports: {extra}"


def test_closure_follows_function_level_and_from_imports(tmp_path):
    """The analysis itself: a lazily imported module and `from pipeline import x` both count."""
    (tmp_path / "m.py").write_text("from pipeline import io\n\ndef f():\n    import pipeline.split\n")
    files = imported_files(tmp_path / "m.py")
    assert {PACKAGE / "io.py", PACKAGE / "split.py"} <= files
    assert PACKAGE / "params.py" in closure([PACKAGE / "split.py"])  # split imports params


def test_nothing_waits_for_explain():
    """explain reads the trained models and writes reports only: no stage depends on an output of
    it, so evaluate (and `dvc repro evaluate`) never waits for explanations."""
    stages = dvc_stages(ROOT)
    written = [next(iter(out)) if isinstance(out, dict) else out for out in stages["explain"]["outs"]]
    readers = {name for name, stage in stages.items() for dep in stage.get("deps", [])
               if any(dep == out or dep.startswith(out.rstrip("/") + "/") for out in written)}
    assert readers == set()
    assert {"models/fusion", "models/eeg", "data/features/eeg_channels.json"} <= set(stages["explain"]["deps"])
