"""``config.json`` files exactly as lightnet 0.1.0 wrote them before the option renames (``attention_backend``,
``backend``), and the state-dict keys of that version's models: the loaders' backward-compatibility tests read these.

Written by the base commit's ``LightNetDiTModel(..., attention_backend='torch', tpe_num_decays=2).save_pretrained``,
``LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2, backend='torch', tpe_num_decays=2))
.save_pretrained`` and ``LightNetHFForCausalLM`` of the same config (transformers 5.25).
"""
from __future__ import annotations

DIT_CONFIG_JSON = '''{
  "_class_name": "LightNetDiTModel",
  "_diffusers_version": "0.42.1",
  "attention_backend": "torch",
  "class_dropout_prob": 0.1,
  "class_embed_init_std": 1.0,
  "gate_rank": null,
  "hidden_size": 32,
  "in_channels": 1,
  "lrpe_base": 10000.0,
  "mlp_ratio": 2.6666666666666665,
  "mlp_type": "glu",
  "norm_eps": 1e-06,
  "num_attention_heads": 2,
  "num_classes": 3,
  "num_layers": 1,
  "out_channels": 1,
  "patch_size": 2,
  "q_act": "silu",
  "sample_size": 8,
  "tpe_num_decays": 2,
  "use_lrpe": true,
  "use_tpe": true
}
'''

LM_CONFIG_JSON = '''{
  "model_type": "lightnet_yoso",
  "architectures": [
    "LightNetForCausalLM"
  ],
  "vocab_size": 260,
  "dim": 16,
  "depth": 1,
  "num_heads": 2,
  "mlp_ratio": 2.6666666666666665,
  "causal": true,
  "use_tpe": true,
  "tpe_num_decays": 2,
  "use_lrpe": true,
  "lrpe_base": 10000.0,
  "q_act": "silu",
  "scale": "none",
  "gate_rank": null,
  "gate_act": "sigmoid",
  "norm": "rmsnorm",
  "mlp_act": "silu",
  "dropout": 0.0,
  "drop_path": 0.0,
  "init_std": 0.02,
  "tie_word_embeddings": true,
  "pad_token_id": 256,
  "bos_token_id": 257,
  "eos_token_id": 258,
  "mask_token_id": 259,
  "num_labels": 2,
  "classifier_pooling": "mean",
  "mlm_probability": 0.15,
  "backend": "torch",
  "extra": {}
}
'''

HF_CONFIG_JSON = '''{
  "architectures": [
    "LightNetHFForCausalLM"
  ],
  "backend": "torch",
  "bos_token_id": 257,
  "causal": true,
  "classifier_pooling": "mean",
  "depth": 1,
  "dim": 16,
  "drop_path": 0.0,
  "dropout": 0.0,
  "dtype": "float32",
  "eos_token_id": 258,
  "extra": {},
  "gate_act": "sigmoid",
  "gate_rank": null,
  "init_std": 0.02,
  "lrpe_base": 10000.0,
  "mask_token_id": 259,
  "mlm_probability": 0.15,
  "mlp_act": "silu",
  "mlp_ratio": 2.6666666666666665,
  "model_type": "lightnet-yoso",
  "norm": "rmsnorm",
  "num_heads": 2,
  "pad_token_id": 256,
  "q_act": "silu",
  "scale": "none",
  "tie_word_embeddings": true,
  "tpe_num_decays": 2,
  "transformers_version": "5.25.0",
  "use_lrpe": true,
  "use_tpe": true,
  "vocab_size": 260
}
'''

#: ``timm.create_model('test_lightnet').state_dict()`` keys outside the blocks, and those of ``blocks.0``
TIMM_TEST_LIGHTNET_KEYS = [
    "patch_embed.proj.weight", "patch_embed.proj.bias",
    "tpe.axes.0.w0", "tpe.axes.0.fwd_logit", "tpe.axes.0.fwd_weight", "tpe.axes.0.bwd_logit", "tpe.axes.0.bwd_weight",
    "tpe.axes.1.w0", "tpe.axes.1.fwd_logit", "tpe.axes.1.fwd_weight", "tpe.axes.1.bwd_logit", "tpe.axes.1.bwd_weight",
    "norm.weight", "head.weight", "head.bias",
]
TIMM_BLOCK_KEYS = [
    "norm1.weight", "attn.qkv.weight", "attn.out_norm.weight", "attn.gate.0.weight", "attn.gate.1.weight",
    "attn.gate.1.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "mlp.fc1.weight", "mlp.fc2.weight",
]
#: the DiT of ``DIT_CONFIG_JSON`` (one block)
DIT_KEYS = [
    "patch_embed.proj.weight", "patch_embed.proj.bias",
    "tpe.axes.0.w0", "tpe.axes.0.fwd_logit", "tpe.axes.0.fwd_weight", "tpe.axes.0.bwd_logit", "tpe.axes.0.bwd_weight",
    "tpe.axes.1.w0", "tpe.axes.1.fwd_logit", "tpe.axes.1.fwd_weight", "tpe.axes.1.bwd_logit", "tpe.axes.1.bwd_weight",
    "embedding.timestep_embedder.linear_1.weight", "embedding.timestep_embedder.linear_1.bias",
    "embedding.timestep_embedder.linear_2.weight", "embedding.timestep_embedder.linear_2.bias",
    "embedding.class_embedder.embedding_table.weight",
    "transformer_blocks.0.attn.qkv.weight", "transformer_blocks.0.attn.out_norm.weight",
    "transformer_blocks.0.attn.gate.0.weight", "transformer_blocks.0.attn.gate.1.weight",
    "transformer_blocks.0.attn.gate.1.bias", "transformer_blocks.0.attn.proj.weight",
    "transformer_blocks.0.attn.proj.bias", "transformer_blocks.0.mlp.fc1.weight", "transformer_blocks.0.mlp.fc2.weight",
    "transformer_blocks.0.adaLN_modulation.1.weight", "transformer_blocks.0.adaLN_modulation.1.bias",
    "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias", "final_layer.linear.weight",
    "final_layer.linear.bias",
]
#: the causal LM of ``LM_CONFIG_JSON`` (``lm_head.weight`` is tied to the embedding and not saved)
LM_KEYS = [
    "model.embed.weight", "model.tpe.axes.0.w0", "model.tpe.axes.0.fwd_logit", "model.tpe.axes.0.fwd_weight",
    "model.blocks.0.norm1.weight", "model.blocks.0.attn.qkv.weight", "model.blocks.0.attn.out_norm.weight",
    "model.blocks.0.attn.gate.0.weight", "model.blocks.0.attn.gate.1.weight", "model.blocks.0.attn.gate.1.bias",
    "model.blocks.0.attn.proj.weight", "model.blocks.0.attn.proj.bias", "model.blocks.0.norm2.weight",
    "model.blocks.0.mlp.fc1.weight", "model.blocks.0.mlp.fc2.weight", "model.norm.weight", "lm_head.weight",
]
