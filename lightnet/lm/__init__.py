"""LightNet language models: causal LM with constant-memory decoding, masked LM, sequence classification."""
from .cache import LightNetCache
from .config import MODEL_TYPE, LightNetLMConfig
from .generation import filter_logits, generate, left_pad, sample_next_token
from .graphs import GraphedDecoder
from .masking import MLMCollator, mask_tokens
from .modeling import (
    CausalLMOutput,
    LightNetForCausalLM,
    LightNetForMaskedLM,
    LightNetForSequenceClassification,
    LightNetModel,
    LightNetPreTrainedModel,
    MaskedLMOutput,
    SequenceClassifierOutput,
)
from .tokenizer import ByteTokenizer, decode_ids, encode_text

__all__ = [
    "ByteTokenizer",
    "GraphedDecoder",
    "CausalLMOutput",
    "LightNetCache",
    "LightNetForCausalLM",
    "LightNetForMaskedLM",
    "LightNetForSequenceClassification",
    "LightNetLMConfig",
    "LightNetModel",
    "LightNetPreTrainedModel",
    "MLMCollator",
    "MODEL_TYPE",
    "MaskedLMOutput",
    "SequenceClassifierOutput",
    "decode_ids",
    "encode_text",
    "filter_logits",
    "generate",
    "left_pad",
    "mask_tokens",
    "sample_next_token",
]
