"""Data sources: name -> class. A source turns params into a manifest CSV on disk.

Adding a source is one class with `prepare(params) -> Path` plus one line in SOURCES.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import io
from pipeline.data.manifest import read_manifest
from pipeline.data.synthetic import generate
from pipeline.params import Params


class SyntheticSource:
    """The embedded default: writes real FIF/WAV recordings under data/raw, then a manifest."""

    def prepare(self, params: Params) -> Path:
        with io.atomic_path(io.RAW) as tmp:
            generate(tmp, params.data.synthetic)
        return io.RAW / "manifest.csv"


SOURCES = {"synthetic": SyntheticSource}


def ingest(params: Params):
    """Run the configured source and read its manifest back through the common reader path.

    Returns the trial table (one row per trial) and the sorted class list.
    """
    manifest_path = SOURCES[params.data.source]().prepare(params)
    trials = read_manifest(manifest_path)
    classes = sorted(trials["label"].unique())
    return trials, classes
