"""Errors the CLI turns into one line on stderr and a non-zero exit, with no traceback, and
warnings: one line on stderr that does not stop the stage."""
import sys


class PipelineError(Exception):
    """Bad input: the message names the file or key and what is allowed."""


def warn(message: str) -> None:
    """One 'warning: ...' line on stderr, written so that tqdm progress bars stay intact."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)
