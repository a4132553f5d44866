"""Data sources: name -> class. A source turns params into candidate trials: a table of the
manifest columns plus `where` (for messages), checked afterwards by pipeline.data.ingest.

Adding a source is one class with `trials(params, bad) -> (table, extras)` plus one line in
SOURCES (`bad` takes the problems a source finds itself, under `data.on_error`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.data.bids import BIDSSource
from pipeline.data.eav import EAVSource
from pipeline.data.manifest import BadInput, read_manifest_csv
from pipeline.params import Params


class ManifestSource:
    """A user CSV (`data.root`/`data.manifest`) pointing at any MNE-readable EEG and any
    soundfile-readable audio. The synthetic source is this too: the synthesize stage writes
    real FIF/WAV recordings and their manifest into data/synthetic."""

    def trials(self, params: Params, bad: BadInput) -> tuple[pd.DataFrame, dict]:
        return read_manifest_csv(Path(params.data.root) / params.data.manifest,
                                 params.data.secondary_tasks), {}


SOURCES = {"synthetic": ManifestSource, "manifest": ManifestSource, "eav": EAVSource, "bids": BIDSSource}
