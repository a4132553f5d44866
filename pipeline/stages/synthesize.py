"""synthesize: the embedded default data's recordings and manifest -> data/synthetic/."""
from __future__ import annotations

from pipeline import io
from pipeline.data.synthetic import generate
from pipeline.params import Params


def run(params: Params) -> None:
    with io.atomic_path(io.SYNTHETIC) as tmp:
        generate(tmp, params.data.synthetic)
