"""The non-causal (single order-free scan) op: Triton kernels and launch heuristics (:mod:`.kernels`), custom ops and
autograd (:mod:`.op`). Entry point: :func:`noncausal_attention`."""
from .kernels import (
    NonCausalLaunch, in_kernel_layout, kernel_layout, noncausal_backward, noncausal_forward, noncausal_state,
)
from .op import NonCausalFn, noncausal_attention, noncausal_bwd, noncausal_fwd

__all__ = [
    "NonCausalLaunch",
    "NonCausalFn",
    "in_kernel_layout",
    "kernel_layout",
    "noncausal_attention",
    "noncausal_backward",
    "noncausal_bwd",
    "noncausal_forward",
    "noncausal_fwd",
    "noncausal_state",
]
