"""`python -m pipeline profile` (`make profile`): where a forced default run spends its time.

Every stage command of `dvc repro -f` runs as its own process, in DVC's order, as DVC runs it,
under GNU time: its wall time, CPU time (user + system, of the process and of the children it
waited for: joblib's workers where they exit first) and peak resident memory of its largest
process (GNU time's %M; workers' memory is not summed). Its start-up is measured apart: the wall time of a process that only imports
what the stage command imports before its work begins (`pipeline.cli` and the stage's module),
the best of three, and whether torch is among those imports. Outputs are rewritten with the
same bytes (every stage is deterministic), so `dvc status` stays clean; nothing is committed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError

TIME = "/usr/bin/time"
# stage commands say `python` and `dvc`: this interpreter's, as under `make`
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
PROBE = ("import sys, time; t = time.perf_counter(); import pipeline.cli, pipeline.stages.{module}; "
         "print(time.perf_counter() - t, 'torch' in sys.modules)")


def stage_commands(project: Path) -> list[tuple[str, str]]:
    """(stage, command) of every stage of a forced run, in the order `dvc repro -f` runs them."""
    out = subprocess.run(["dvc", "repro", "-f", "--dry"], cwd=project, capture_output=True, text=True, env=ENV)
    if out.returncode != 0:
        raise PipelineError(f"profile: `dvc repro -f --dry` failed: {out.stderr.strip().splitlines()[-1:]}")
    return re.findall(r"Running stage '([^']+)':\n> (.+)", out.stdout)


def stage_module(command: str) -> str:
    """The pipeline.stages module a `python -m pipeline <command> ...` line runs."""
    words = shlex.split(command)
    return words[words.index("pipeline") + 1]


def startup(module: str, project: Path, repeats: int = 3) -> tuple[float, bool]:
    """Seconds a fresh interpreter takes to start and import the stage (best of `repeats`), and
    whether torch is then loaded."""
    best, torch = float("inf"), False
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=project,
                             capture_output=True, text=True, check=True, env=ENV)
        best = min(best, time.perf_counter() - start)
        torch = out.stdout.split()[-1] == "True"
    return best, torch


def run_measured(command: str, project: Path) -> dict:
    """Run one stage command under GNU time: wall, CPU (s) and peak RSS (MB)."""
    result = subprocess.run([TIME, "-f", "PROFILE %e %U %S %M", "sh", "-c", command], cwd=project,
                            capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise PipelineError(f"profile: `{command}` failed: {result.stderr.strip().splitlines()[-2:]}")
    wall, user, system, rss_kb = re.findall(r"PROFILE (\S+) (\S+) (\S+) (\S+)", result.stderr)[-1]
    return {"wall_s": float(wall), "cpu_s": float(user) + float(system), "peak_rss_mb": int(rss_kb) / 1024}


def profile(project: Path = Path(".")) -> list[dict]:
    """One row a stage: stage, command, wall_s, cpu_s, peak_rss_mb, startup_s, torch_at_start."""
    if not Path(TIME).exists():
        raise PipelineError(f"profile: {TIME} (GNU time) is missing; install the 'time' package")
    rows = []
    for stage, command in stage_commands(project):
        start, torch = startup(stage_module(command), project)
        rows.append({"stage": stage, "command": command, **run_measured(command, project),
                     "startup_s": start, "torch_at_start": torch})
        print(f"profile: {stage}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """The markdown table of an evidence page, with the total."""
    total = sum(r["wall_s"] for r in rows)
    lines = ["| stage | wall (s) | share | CPU (s) | start-up (s) | torch at start | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['wall_s']:.1f} | {r['wall_s'] / total:.0%} | {r['cpu_s']:.1f} | "
              f"{r['startup_s']:.2f} | {'yes' if r['torch_at_start'] else 'no'} | {r['peak_rss_mb']:.0f} |" for r in rows]
    lines.append(f"| **total** | **{total:.1f}** | | {sum(r['cpu_s'] for r in rows):.1f} | "
                 f"{sum(r['startup_s'] for r in rows):.1f} | | {max(r['peak_rss_mb'] for r in rows):.0f} (max) |")
    return "\n".join(lines)


def write(rows: list[dict], out: Path) -> None:
    """The rows as JSON (what an evidence page's before and after are computed from)."""
    out.write_text(json.dumps(rows, indent=1) + "\n")
