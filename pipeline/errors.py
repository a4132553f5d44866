"""Errors the CLI turns into one line on stderr and a non-zero exit, with no traceback."""


class PipelineError(Exception):
    """Bad input: the message names the file or key and what is allowed."""
