"""`python -m pipeline export --format onnx`: the final fused network (models/final/, the final
stage's) as ONNX -> models/final.onnx: one input per view (its normalised features, any batch
size), one output, every task's class probabilities side by side. Checked with onnxruntime
against torch on real trials. Feature extraction and normalisation stay in Python (`predict`
runs them; the normalisers are in models/final/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.fusion import FusionModel, load_fusion
from pipeline.training import task_softmax

ONNX_FILE = io.MODELS / "final.onnx"
TOLERANCE = 1e-5  # largest probability difference between onnxruntime and torch that passes


class Probabilities(nn.Module):
    """A fused model as ONNX sees it: the views' tensors in order in, probabilities out."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model, self.views = model, list(model.branches)
        self.temperature = model.output_temperature

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        return task_softmax(self.model(dict(zip(self.views, views))), self.model.task_sizes, self.temperature)


def export_onnx(model: FusionModel, example: dict[str, torch.Tensor], path: Path) -> None:
    """Write `model` in eval mode (BatchNorm on its running statistics, no dropout) as ONNX with a
    dynamic batch axis, through torch's default exporter. nn.MultiheadAttention's fast path
    (a fused kernel the exporter does not know) is off while it traces."""
    wrapper = Probabilities(model.eval()).eval()
    batch = torch.export.Dim("batch", min=1)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with io.atomic_path(path) as tmp:
            torch.onnx.export(wrapper, tuple(example[m] for m in wrapper.views), str(tmp), input_names=wrapper.views,
                              output_names=["probabilities"], dynamic_shapes=(tuple({0: batch} for _ in example),),
                              external_data=False, verbose=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def onnx_difference(path: Path, model: FusionModel, inputs: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between onnxruntime's probabilities and torch's on `inputs`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = Probabilities(model.eval()).eval()
    got = session.run(None, {m: inputs[m].numpy() for m in wrapper.views})[0]
    with torch.no_grad():
        expected = wrapper(*(inputs[m] for m in wrapper.views)).numpy()
    return float(np.abs(got - expected).max())


def final_inputs(n: int = 64) -> dict[str, torch.Tensor]:
    """The project's first `n` trials of each final view, normalised with the final model's statistics."""
    from pipeline.dataset import load_features
    from pipeline.normalize import apply_normalizer

    meta = io.read_json(io.FINAL_DIR / "meta.json")
    out = {}
    for m in meta["views"]:
        stats = np.load(io.FINAL_DIR / f"{m}.npz")
        out[m] = torch.from_numpy(apply_normalizer(np.asarray(load_features(m, mmap=True)[:n]), stats["mean"], stats["std"]))
    return out


def export(fmt: str) -> str:
    """Export the final model; returns what to print."""
    if fmt != "onnx":
        raise PipelineError(f"export: --format {fmt!r} is not allowed; allowed: onnx")
    meta_file = io.FINAL_DIR / "meta.json"
    if not meta_file.is_file() or not io.read_json(meta_file).get("enabled"):
        raise PipelineError(f"export: no final model in {io.FINAL_DIR} (final.enabled is false, or the final stage "
                            "has not run); `dvc exp run -S final.enabled=true` builds it")
    model = load_fusion(io.FINAL_DIR / "fusion.pt")
    inputs = final_inputs()
    export_onnx(model, inputs, ONNX_FILE)
    difference = onnx_difference(ONNX_FILE, model, inputs)
    if difference > TOLERANCE:
        ONNX_FILE.unlink()
        raise PipelineError(f"export: onnxruntime's probabilities differ from torch's by {difference:.2g} "
                            f"(> {TOLERANCE:g}) on real trials; nothing written")
    return (f"export: {ONNX_FILE} ({', '.join(model.branches)} in, probabilities out); onnxruntime agrees with "
            f"torch within {difference:.1g} on {len(next(iter(inputs.values())))} real trials")
