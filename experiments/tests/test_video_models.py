"""Video study variants (experiments/video_models.py): shapes at any clip size, gradients, matched sizes, timm names."""
from __future__ import annotations

import pytest
import timm
import torch

from experiments.models import count_parameters
from experiments.video_models import (VIDEO_VARIANTS, SpaceTimeViT, VideoSize, build_video_classifier,
                                      register_timm_video_variants)

SIZE = VideoSize(img_size=16, num_frames=4, patch_size=4, tubelet_size=2, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("variant", VIDEO_VARIANTS)
def test_forward_backward_at_two_clip_sizes(variant):
    torch.manual_seed(0)
    overrides = {"attn_backend": "torch"} if variant == "lightnet" else {}
    model = build_video_classifier(variant, SIZE, **overrides)
    for shape in [(2, 1, 4, 16, 16), (1, 1, 6, 8, 12)]:
        x = torch.randn(*shape)
        assert model(x).shape == (shape[0], 4)
        assert model.forward_features(x).shape == (shape[0], shape[2] // 2, shape[3] // 4, shape[4] // 4, 32)
    model.zero_grad()
    model(torch.randn(2, 1, 4, 16, 16)).logsumexp(-1).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, dead
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 1, 5, 16, 16))


def test_sizes_are_matched():
    counts = {v: count_parameters(build_video_classifier(v, SIZE)) for v in VIDEO_VARIANTS}
    assert abs(counts["vit"] - counts["lightnet"]) / counts["lightnet"] < 0.1, counts
    assert counts["scan6"] > counts["lightnet"]  # + six decay projections per block


def test_scan6_uses_six_scans_and_sees_time_order():
    torch.manual_seed(0)
    model = build_video_classifier("scan6", SIZE).eval()
    assert all(b.attn.num_directions == 6 for b in model.blocks)
    x = torch.randn(1, 1, 4, 16, 16)
    assert not torch.allclose(model.forward_features(x), model.forward_features(x.flip(2)).flip(1), atol=1e-4)


def test_vit_position_table_resizes():
    vit = SpaceTimeViT(img_size=16, num_frames=4, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    assert vit._pos((2, 4, 4)) is vit.pos_embed and vit._pos((3, 2, 5)).shape == (1, 3, 2, 5, 32)


def test_timm_names_build_every_variant():
    names = register_timm_video_variants()
    assert names == [f"evidence_video_{v}" for v in VIDEO_VARIANTS]
    for name in names:
        m = timm.create_model(name, pretrained=False, img_size=16, num_frames=4, patch_size=4, embed_dim=32, depth=1,
                              num_heads=2, num_classes=3, attn_backend="torch")
        assert m(torch.randn(1, 1, 4, 16, 16)).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown video variant"):
        build_video_classifier("scan4")
