"""Export of LightNetDiTModel's forward: ``torch.export`` and ONNX (dynamo) with a dynamic batch; onnxruntime on the
CPU equals PyTorch (<= 1e-4 relative). Needs the ``export`` extra; skipped without it."""
from __future__ import annotations

import torch
from torch.export import Dim

from lightnet.generation import LightNetDiTModel

from tests._export import export_and_compare


class _Denoiser(torch.nn.Module):
    """``(x, t, y) -> ε`` as plain tensors (the exported signature; ``return_dict=False``)."""

    def __init__(self, model: LightNetDiTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, timestep=t, class_labels=y, return_dict=False)[0]


def _randomised_tiny() -> LightNetDiTModel:
    torch.manual_seed(0)
    model = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=1,
                             num_attention_heads=2, num_classes=10)
    with torch.no_grad():  # the adaLN-Zero init predicts zeros; randomise so the comparison means something
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0, 0.05)
    return model.eval()


def _inputs(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(batch, 4, 8, 8, generator=g), "t": torch.randint(0, 1000, (batch,), generator=g),
            "y": torch.randint(0, 11, (batch,), generator=g)}


def test_export_dit_forward_dynamic_batch(tmp_path):
    batch = Dim("batch", min=1, max=64)
    export_and_compare(_Denoiser(_randomised_tiny()), _inputs(2, 0), {"x": {0: batch}, "t": {0: batch}, "y": {0: batch}},
                       [_inputs(5, 1)], tmp_path)
