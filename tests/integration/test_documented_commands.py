"""Every `dvc exp run` command that README.md (and docs/) shows, on the tiny project: its `-S`
overrides applied to params.yaml by DVC's own code (what `dvc exp run -S` does; a `--queue`
sweep expanded into its experiments), then validated as every stage validates before any work.
One section's default must never break another (the EEG-only study's command once stopped on
`distill.students`). Commands with placeholders (`...`, `<key>=<value>`) are prose, not commands."""
from __future__ import annotations

import re
import shlex

import pytest
import yaml

from pipeline.params import load_params

from dvc_project import ROOT, TINY, merge


def shown_commands() -> list[str]:
    """The `dvc exp run` commands of README.md and docs/: code-block lines (with their `\\`
    continuations, comments cut) and inline code spans (which may wrap over lines)."""
    commands = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        joined = re.sub(r"\\\n\s*", " ", text)
        for line in joined.splitlines():
            if line.startswith("    ") and line.strip().startswith("dvc exp run"):
                commands.append(line.split(" #")[0].strip())
        commands += [" ".join(span.split()) for span in re.findall(r"`(dvc exp run[^`]*)`", text)]
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
