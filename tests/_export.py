"""Helpers of the export tests: ``torch.export`` / ONNX (dynamo) export with a dynamic batch, onnxruntime on the CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import torch


def export_and_compare(model: torch.nn.Module, inputs: Dict[str, torch.Tensor], dynamic: Dict[str, Dict[int, object]],
                       other_inputs: Sequence[Dict[str, torch.Tensor]], tmp_path: Path, rtol: float = 1e-4) -> None:
    """``torch.export.export`` then ``torch.onnx.export(dynamo=True)`` of ``model`` (keyword inputs, ``dynamic``
    shapes); the exported program and onnxruntime (CPU) must equal eager PyTorch within ``rtol`` of the output's
    largest magnitude, on ``inputs`` and on every ``other_inputs`` (e.g. another batch size)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = model.eval()
    names = list(inputs)
    args = tuple(inputs[n] for n in names)
    shapes = tuple(dynamic.get(n) for n in names)
    program = torch.export.export(model, args, dynamic_shapes=shapes)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=shapes, input_names=names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in session.get_inputs()]
    for case in (inputs, *other_inputs):
        case_args = tuple(case[n] for n in names)
        with torch.no_grad():
            want = _tensor(model(*case_args))
            got_export = _tensor(program.module()(*case_args))
        scale = want.abs().max().item()
        assert scale > 0
        assert (got_export - want).abs().max().item() <= rtol * scale
        feed = {n: case[n].numpy() for n in feed_names}
        got_onnx = session.run(None, feed)[0]
        assert got_onnx.shape == tuple(want.shape)
        assert np.abs(got_onnx - want.numpy()).max() <= rtol * scale


def _tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    return out[0]
