"""The command line's own description of itself."""
from __future__ import annotations

import typer

from pipeline.cli import TOOLS, app

from dvc_project import ROOT, stage_commands


def test_every_command_is_a_stage_of_dvc_yaml_or_a_listed_tool_as_the_help_says():
    """`python -m pipeline --help` says the commands up to `explain` are the stages of dvc.yaml
    and names the rest as tools: each command is one or the other, and the stages come first."""
    commands = list(typer.main.get_command(app).commands)
    staged = {command[3] for command in stage_commands(ROOT)}
    assert staged.isdisjoint(TOOLS) and set(commands) == staged | set(TOOLS), (commands, staged)
    assert commands.index("explain") == len(staged) - 1 and set(commands[:len(staged)]) == staged
