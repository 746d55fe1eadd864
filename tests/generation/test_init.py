"""``dit_paper_init``: diffusers' ``DiTTransformer2DModel`` initialised as the DiT paper does (the scheme
LightNet-DiT is built with)."""
from __future__ import annotations

import torch
from diffusers.models import DiTTransformer2DModel

from lightnet.generation import dit_paper_init


def _baseline() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(num_layers=2, num_attention_heads=2, attention_head_dim=16, in_channels=1,
                                 out_channels=1, patch_size=2, sample_size=8, num_embeds_ada_norm=10)


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g)
    return model(x, timestep=torch.tensor([1, 400, 999]), class_labels=torch.tensor([0, 4, 9])).sample


def test_zero_output_and_class_table_std():
    model = _baseline()
    assert float(_outputs(model).abs().max()) > 0.1  # diffusers' own init: random adaLN, non-zero output
    for std in (0.02, 1.0):
        dit_paper_init(model, class_embed_init_std=std)
        table = model.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.detach()
        assert 0.5 * std < float(table.std()) < 1.5 * std
        assert float(_outputs(model).abs().max()) == 0.0
        for block in model.transformer_blocks:
            assert not block.norm1.linear.weight.any() and not block.norm1.linear.bias.any()
        assert not model.pos_embed.proj.bias.any()
