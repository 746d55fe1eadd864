"""Export of the timm LightNet classifiers: ``torch.export`` and ONNX (``torch.onnx.export(dynamo=True)``) with a
dynamic batch; onnxruntime on the CPU equals PyTorch (<= 1e-4 relative). Needs the ``export`` extra (onnx,
onnxscript, onnxruntime); skipped without it."""
from __future__ import annotations

import pytest
import timm
import torch
from torch.export import Dim

import lightnet  # noqa: F401  (registers the timm models)

from tests._export import export_and_compare

LIGHTNET_MODELS = sorted(timm.list_models(module="lightnet_vit"))


def _small(name: str, **kw) -> torch.nn.Module:
    """The registered variant at a small image (patch 8 at 32 x 32: 16 tokens) so export stays quick."""
    torch.manual_seed(0)
    return timm.create_model(name, img_size=32, patch_size=8, num_classes=5, **kw).eval()


def _check(model: torch.nn.Module, tmp_path, size=(32, 32)) -> None:
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    export_and_compare(model, {"x": x}, {"x": {0: Dim("batch", min=1, max=64)}},
                       [{"x": torch.randn(5, 3, *size, generator=torch.Generator().manual_seed(1))}], tmp_path)


def test_export_dynamic_batch_test_lightnet(tmp_path):
    _check(_small("test_lightnet", depth=1), tmp_path)


@pytest.mark.slow
def test_export_dynamic_img_size_model_at_another_resolution(tmp_path):
    """A ``dynamic_img_size=True`` model exported at a size other than its nominal one (dynamic batch; the size is
    fixed in the exported graph, see docs/models.md)."""
    _check(_small("test_lightnet", dynamic_img_size=True), tmp_path, size=(24, 40))


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHTNET_MODELS)
def test_export_dynamic_batch_every_registered_model(name, tmp_path):
    _check(_small(name, depth=2), tmp_path)
