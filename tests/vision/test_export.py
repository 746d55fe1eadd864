"""Export of the timm LightNet classifiers: ``torch.export`` and ONNX (``torch.onnx.export(dynamo=True)``) with a
dynamic batch and, with ``dynamic_img_size=True``, dynamic height / width; onnxruntime on the CPU equals PyTorch
(<= 1e-4 relative). The ONNX side needs the ``export`` extra (onnx, onnxscript, onnxruntime); skipped without it.

Dynamic sizes: the exported programs hold for 3-64 patches per side (torch.export specialises sizes 0 and 1 and the
contiguity checks of a 2-patch axis; see docs/models.md)."""
from __future__ import annotations

import pytest
import timm
import torch
from torch.export import Dim

import lightnet  # noqa: F401  (registers the timm models)

from tests._export import export_and_compare

LIGHTNET_MODELS = sorted(timm.list_models(module="lightnet_vit"))
PATCH = 8


def _small(name: str, **kw) -> torch.nn.Module:
    """The registered variant at a small image (patch 8 at 32 x 32: 16 tokens) so export stays quick."""
    torch.manual_seed(0)
    return timm.create_model(name, img_size=32, patch_size=PATCH, num_classes=5, **kw).eval()


def _image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _dynamic_size() -> dict:
    return {"x": {0: Dim("batch", min=1, max=64), 2: PATCH * Dim("h", min=3, max=64),
                  3: PATCH * Dim("w", min=3, max=64)}}


def _check(model: torch.nn.Module, tmp_path, size=(32, 32)) -> None:
    export_and_compare(model, {"x": _image(2, 3, *size)}, {"x": {0: Dim("batch", min=1, max=64)}},
                       [{"x": _image(5, 3, *size, seed=1)}], tmp_path)


# sizes a dynamic-size program must serve: other batches, non-square grids, the nominal 4 x 4 grid (where the
# positional references are the identity) and the smallest one (3 x 3)
OTHER_SIZES = [(1, 3, 24, 24), (3, 3, 32, 32), (2, 3, 48, 88)]


def test_torch_export_dynamic_batch_and_img_size():
    """torch.export alone (no extra needed): one program serves other batches and image sizes."""
    model = _small("test_lightnet", depth=2, dynamic_img_size=True)
    program = torch.export.export(model, (_image(2, 3, 40, 56),), dynamic_shapes=_dynamic_size())
    for i, shape in enumerate(OTHER_SIZES):
        x = _image(*shape, seed=i + 1)
        with torch.no_grad():
            want, got = model(x), program.module()(x)
        assert got.shape == (shape[0], 5)
        assert (got - want).abs().max() <= 1e-5 * want.abs().max(), shape


def test_export_dynamic_batch_test_lightnet(tmp_path):
    _check(_small("test_lightnet", depth=1), tmp_path)


@pytest.mark.slow
def test_export_dynamic_batch_and_img_size_onnx(tmp_path):
    model = _small("test_lightnet", depth=1, dynamic_img_size=True)
    export_and_compare(model, {"x": _image(2, 3, 40, 56)}, _dynamic_size(),
                       [{"x": _image(*s, seed=i + 1)} for i, s in enumerate(OTHER_SIZES)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHTNET_MODELS)
def test_export_dynamic_batch_every_registered_model(name, tmp_path):
    _check(_small(name, depth=2), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHTNET_MODELS)
def test_export_dynamic_img_size_every_registered_model(name, tmp_path):
    model = _small(name, depth=2, dynamic_img_size=True)
    export_and_compare(model, {"x": _image(2, 3, 40, 56)}, _dynamic_size(),
                       [{"x": _image(*s, seed=i + 1)} for i, s in enumerate(OTHER_SIZES)], tmp_path)
