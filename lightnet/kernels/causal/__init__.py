"""The causal (prefix) op: Triton kernels (:mod:`.kernels`, chunk-step helpers in :mod:`.chunk`, segment scans in
:mod:`.scan`) with their launch heuristics, custom ops and autograd (:mod:`.op`). Entry point:
:func:`causal_attention`; one-token decoding is :func:`lightnet.kernels.decode.causal_decode`."""
from .kernels import CausalLaunch, causal_backward, causal_forward, chunk_size, saved_specs, segment_chunks
from .op import CausalFn, causal_attention, causal_bwd, causal_fwd

__all__ = [
    "CausalLaunch",
    "CausalFn",
    "causal_attention",
    "causal_backward",
    "causal_bwd",
    "causal_forward",
    "causal_fwd",
    "chunk_size",
    "saved_specs",
    "segment_chunks",
]
