"""ONNX export (pipeline/export.py) of the fusion heads that trip exporters: attention
(nn.MultiheadAttention's fast path), a token expanded to the batch (transformer) and per-task
layers (late); onnxruntime must agree with torch on a batch size other than the traced one."""
from __future__ import annotations

import pytest
import torch

from pipeline.export import TOLERANCE, export_onnx, onnx_difference
from pipeline.fusion import build_fusion
from pipeline.nets import BranchClassifier


@pytest.mark.parametrize("fusion_type", ["cross_attention", "transformer", "late"])
def test_exported_heads_agree_with_torch_at_any_batch_size(params, tmp_path, fusion_type):
    torch.manual_seed(0)
    branches = {"eeg": BranchClassifier("eeg", (4, 64), 3, 8, 0.5, "log_power", tasks={"level": ["lo", "hi"]}),
                "acoustic": BranchClassifier("acoustic", (12,), 3, 8, 0.2, "mlp", tasks={"level": ["lo", "hi"]})}
    fp = params.fusion.model_copy(update={"type": fusion_type, "modalities": ("eeg", "acoustic"), "hidden": 8,
                                          "heads": 2})
    model = build_fusion(branches, fp).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, {m: torch.randn(3, *b.in_shape) for m, b in branches.items()}, path)
    other = {m: torch.randn(7, *b.in_shape) for m, b in branches.items()}
    assert onnx_difference(path, model, other) < TOLERANCE
