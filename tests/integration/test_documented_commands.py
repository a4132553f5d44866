"""Every `dvc exp run` command that README.md (and docs/) shows, on the tiny project: its `-S`
overrides applied to params.yaml by DVC's own code (what `dvc exp run -S` does; a `--queue`
sweep expanded into its experiments), then validated as every stage validates before any work.
One section's default must never break another (the EEG-only study's command once stopped on
`distill.students`). Commands with placeholders (`...`, `<key>=<value>`) are prose, not commands.

Each experiment a command makes on the default data then runs: on a copy of the shared tiny
project (tests/dvc_project.py), its final, distill and explain switched as on main (the tiny
project is a release; main's params, which the commands change, are not), `dvc repro --dry`
names the stages whose own deps changed, and those and every stage that reads them (`dvc dag`)
run as DVC runs them (in one process, as the shared build does: a `dvc exp run` per command
would cost each stage an interpreter start-up). Commands that point at the user's own
data or cluster (`/path/to/...`, `tcp://...`) are validated only; `dvc exp run` itself (-S,
--queue, --run-all) is run in tests/integration/test_queue.py and test_experiments.py."""
from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from pipeline.params import load_params

from dvc_project import (ROOT, TINY, built_project, copy_project, downstream, merge, named_stage_commands, ran, run,
                         run_stages, set_params)


def shown_commands() -> list[str]:
    """The `dvc exp run` commands of README.md and docs/: code-block lines (with their `\\`
    continuations, comments cut) and inline code spans with arguments (which may wrap over
    lines; a bare one names the command in prose)."""
    commands = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        joined = re.sub(r"\\\n\s*", " ", text)
        for line in joined.splitlines():
            if line.startswith("    ") and line.strip().startswith("dvc exp run"):
                commands.append(line.split(" #")[0].strip())
        commands += [" ".join(span.split()) for span in re.findall(r"`(dvc exp run\s[^`]+)`", text)]  # bare: prose
    return [c for c in dict.fromkeys(commands) if "..." not in c and "<" not in c]


def experiments(command: str) -> list[list[str]]:
    """The `-S` overrides of each experiment a command makes (a `--queue` sweep: one per value)."""
    from dvc.utils.hydra import get_hydra_sweeps

    words = shlex.split(command)
    overrides = [words[i + 1] for i, w in enumerate(words) if w in ("-S", "--set-param")]
    if "--queue" not in words:
        return [overrides]
    return [sweep["params.yaml"] for sweep in get_hydra_sweeps({"params.yaml": overrides})]


COMMANDS = shown_commands()


def test_the_pages_show_the_commands_this_test_runs():
    """The parser finds the EEG-only and BIDS study commands and the sweep (a parser that found
    nothing would pass every case below)."""
    assert len(COMMANDS) >= 6, COMMANDS
    assert any("'fusion.modalities=[eeg,topo]'" in c and "data.source=manifest" in c for c in COMMANDS)
    assert any("data.source=bids" in c for c in COMMANDS) and any("--queue" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_shown_dvc_exp_run_command_gives_valid_params(tmp_path, command):
    from dvc.utils.hydra import apply_overrides

    tiny = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    for overrides in experiments(command):
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(tiny, sort_keys=False))
        apply_overrides(params, overrides)
        load_params(params)  # raises ParamsError, one line naming the key, as the stages would


USERS_OWN = ("/path/to/", "tcp://")  # the user's data or cluster: validated above, not run


def runnable_experiments() -> list[tuple[tuple[str, ...], bool]]:
    """Each distinct experiment of the commands that run on the default data: (its `-S`
    overrides, forced with `-f`). `--run-all` runs the queue (its experiments are the sweep's)."""
    found = {}
    for command in COMMANDS:
        words = shlex.split(command)
        if any(place in command for place in USERS_OWN) or "--run-all" in words:
            continue
        for overrides in experiments(command):
            found[(tuple(overrides), "-f" in words or "--force" in words)] = None
    return list(found)


EXPERIMENTS = runnable_experiments()

# The tiny project is a release; a shown command changes main's params, where these are off
MAIN = yaml.safe_load((ROOT / "params.yaml").read_text())
MAIN_SWITCHES = {section: {"enabled": MAIN[section]["enabled"]} for section in ("final", "distill", "explain")}
RELEASE = ("final.enabled=true", "distill.enabled=true", "explain.enabled=true")


def test_the_shown_experiments_include_the_sweep_and_the_cleaning_runs():
    assert len(EXPERIMENTS) >= 8, EXPERIMENTS
    assert (("fusion.type=film",), False) in EXPERIMENTS  # one of the --queue sweep's
    assert any("eeg.artifacts.ica=true" in o for o, _ in EXPERIMENTS)
    assert ((), True) in EXPERIMENTS  # dvc exp run -f
    assert (RELEASE, False) in EXPERIMENTS  # make release's command, as README shows it


@pytest.mark.slow
@pytest.mark.shared_project
@pytest.mark.parametrize("overrides,force", EXPERIMENTS, ids=[" ".join(o) or ("-f" if f else "") for o, f in EXPERIMENTS])
def test_a_shown_experiment_runs_on_the_tiny_project(tmp_path_factory, tmp_path, overrides, force):
    from dvc.utils.hydra import apply_overrides

    workspace = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    set_params(workspace, MAIN_SWITCHES)  # as on main's params, which the commands change
    apply_overrides(workspace / "params.yaml", list(overrides))
    changed = ran(run(["dvc", "repro", "--dry", *(["--force"] if force else [])], workspace))
    stale = changed | downstream(workspace, *changed)
    if not stale:  # the release command: the tiny project's own run, DVC reruns nothing
        assert overrides and not json.loads(run(["dvc", "status", "--json"], workspace)), overrides
        return
    assert "evaluate" in stale, f"{overrides}: DVC would rerun {sorted(stale)}, not evaluate"
    run_stages(workspace, commands=[c for name, c in named_stage_commands(workspace).items() if name in stale])
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["fusion"]["test"]["acc"] <= 1.0
