"""Causal chunked Triton kernels (work in progress)."""


def causal_forward(*args, **kwargs):
    raise NotImplementedError("additive_attention (triton): the causal kernel is not implemented yet")


def causal_backward(*args, **kwargs):
    raise NotImplementedError("additive_attention (triton): the causal kernel is not implemented yet")
