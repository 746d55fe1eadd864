"""Initialisation of diffusers' ``DiTTransformer2DModel`` (the softmax-attention baseline) as the DiT paper does."""
from __future__ import annotations

from diffusers.models.normalization import AdaLayerNormZero
from torch import nn

__all__ = ["dit_paper_init"]


def dit_paper_init(model: nn.Module, class_embed_init_std: float = 0.02) -> None:
    """Initialise diffusers' ``DiTTransformer2DModel`` as the DiT paper does, with class embeddings
    N(0, ``class_embed_init_std``) (``LightNetDiTModel``'s scheme: the same with its own ``class_embed_init_std``).

    Xavier-uniform linears and patch projection with zero biases; the timestep MLP N(0, 0.02);
    every adaLN-Zero modulation and the output layers zero, so each block starts as the identity and the model
    predicts zero. diffusers leaves PyTorch's defaults (N(0, 1) class embeddings, a random adaLN modulation).
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    proj = model.pos_embed.proj
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)
    for m in model.modules():
        if isinstance(m, AdaLayerNormZero):
            if m.emb is not None:
                nn.init.normal_(m.emb.class_embedder.embedding_table.weight, std=class_embed_init_std)
                nn.init.normal_(m.emb.timestep_embedder.linear_1.weight, std=0.02)
                nn.init.normal_(m.emb.timestep_embedder.linear_2.weight, std=0.02)
            nn.init.zeros_(m.linear.weight)
            nn.init.zeros_(m.linear.bias)
    for layer in (model.proj_out_1, model.proj_out_2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
