"""The additive linear recurrence: PyTorch reference and Triton kernels behind one dispatch point."""
from .api import BACKENDS, additive_attention, available_backends
from .reference import (
    State,
    additive_attention_torch,
    causal_attention_chunked_torch,
    causal_attention_recurrent_torch,
    noncausal_attention_torch,
)

__all__ = [
    "BACKENDS",
    "State",
    "additive_attention",
    "available_backends",
    "additive_attention_torch",
    "causal_attention_chunked_torch",
    "causal_attention_recurrent_torch",
    "noncausal_attention_torch",
]
