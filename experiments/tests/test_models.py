"""Evidence classifier builder (experiments/models.py): every variant builds, runs forward/backward, and
differs from LightNet exactly where its name says."""
from __future__ import annotations

import pytest
import torch

from experiments.multiscan import MultiScanDecayAttention
from experiments.models import GROUPS, VARIANTS, ModelSize, build_classifier
from lightnet.layers import LightNetAttention

SIZE = ModelSize(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_forward_backward_and_resolution_transfer(variant):
    torch.manual_seed(0)
    model = build_classifier(variant, SIZE)
    x = torch.randn(2, 1, 16, 16)
    logits = model(x)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 24, 24)).shape == (2, 5)  # larger image, no fine-tuning, nothing resampled by hand


def _mixers(model):
    return [blk.attn for blk in model.blocks]


def test_variants_differ_where_their_names_say():
    base = build_classifier("lightnet", SIZE)
    assert all(isinstance(m, LightNetAttention) and m.lrpe is not None for m in _mixers(base)) and base.tpe is not None
    assert build_classifier("pe_none", SIZE).tpe is None
    assert all(m.lrpe is None for m in _mixers(build_classifier("pe_none", SIZE)))
    assert build_classifier("pe_tpe", SIZE).tpe is not None
    assert all(m.lrpe is None for m in _mixers(build_classifier("pe_tpe", SIZE)))
    assert build_classifier("pe_lrpe", SIZE).tpe is None
    assert all(m.scale == pytest.approx(16 ** -0.5) for m in _mixers(build_classifier("scale_sqrt", SIZE)))
    assert all(m.gate is None for m in _mixers(build_classifier("no_gate", SIZE)))
    assert all(isinstance(m.out_norm, torch.nn.Identity) for m in _mixers(build_classifier("no_out_norm", SIZE)))
    assert all(m.q_act == "identity" for m in _mixers(build_classifier("q_identity", SIZE)))
    for variant, directions in (("mult_scan1", 1), ("scan2", 2), ("scan4", 4)):
        model = build_classifier(variant, SIZE)
        assert model.tpe is not None  # same MD-TPE as LightNet: only the recurrence changes
        for m in _mixers(model):
            assert isinstance(m, MultiScanDecayAttention) and m.num_directions == directions and m.lrpe is not None
    vit = build_classifier("vit", SIZE)
    assert vit.embed_dim == 32 and len(vit.blocks) == 2 and vit.patch_embed.patch_size == (4, 4)


def test_same_seed_same_shared_weights():
    """LightNet and a scan baseline built from the same seed share the patch embedding (same init stream start)."""
    torch.manual_seed(3)
    a = build_classifier("lightnet", SIZE)
    torch.manual_seed(3)
    b = build_classifier("scan2", SIZE)
    assert torch.equal(a.patch_embed.proj.weight, b.patch_embed.proj.weight)


def test_groups_and_errors():
    assert all(v in VARIANTS for members in GROUPS.values() for v in members)
    with pytest.raises(ValueError, match="unknown model variant"):
        build_classifier("mamba", SIZE)
    with pytest.raises(ValueError, match="under 'mixer' or 'model'"):
        build_classifier("scan2", SIZE, num_directions=4)
    model = build_classifier("scan2", SIZE, mixer={"decay": "mamba2"})
    assert all(m.decay == "mamba2" and m.num_directions == 2 for m in _mixers(model))


def test_variants_registered_with_timm_for_lightnet_train():
    """``lightnet train model=evidence_<variant>`` path: timm builds the same architecture from size kwargs."""
    import timm

    from experiments.models import register_timm_variants

    names = register_timm_variants()
    assert names == register_timm_variants() and "evidence_scan4" in names  # idempotent
    model = timm.create_model("evidence_scan4", pretrained=False, num_classes=5, in_chans=1, img_size=16, patch_size=4,
                              embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, drop_path_rate=0.1)
    assert all(isinstance(m, MultiScanDecayAttention) and m.num_directions == 4 for m in _mixers(model))
    assert model.blocks[0].mlp.hidden_features == 64 and model(torch.randn(1, 1, 16, 16)).shape == (1, 5)
    vit = timm.create_model("evidence_vit", num_classes=5, in_chans=1, img_size=16, patch_size=4, embed_dim=32,
                            depth=1, num_heads=2)
    assert vit(torch.randn(1, 1, 24, 24)).shape == (1, 5)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("evidence_lightnet", pretrained=True)
