"""GraphedDecoder on the CPU: its static-buffer step (the function a CUDA graph captures), run eagerly, equals the
model's decode step token by token; the step makes no host sync; generate's semantics (EOS, padding) are kept;
device sampling draws from softmax of the filtered logits; the CPU refuses capture with a clear error."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lightnet.lm import GraphedDecoder, LightNetForCausalLM, LightNetLMConfig, filter_logits, left_pad

# Tensor methods that read a tensor's value on the host (a device sync on CUDA, not allowed while capturing)
_HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.nonzero, torch.nonzero,
    torch.Tensor.any, torch.Tensor.all, torch.any, torch.all,
}


class _NoHostReads(TorchFunctionMode):
    """Raise on any tensor-to-host read, and record every op called (so the test knows the mode saw the step)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            raise AssertionError(f"host read in the captured step: {getattr(func, '__name__', func)}")
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def lm() -> LightNetForCausalLM:
    torch.manual_seed(0)
    model = LightNetForCausalLM(LightNetLMConfig(dim=32, depth=2, num_heads=2, tpe_num_decays=2,
                                                 attn_backend="torch")).eval()
    with torch.no_grad():  # a TPE away from its near-identity init, so its state matters
        for p in model.model.tpe.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _prompts():
    return left_pad([[257, 72, 105, 33, 9], [257, 65]], pad_token_id=0)


def test_eager_static_step_equals_model_decode_step(lm):
    ids, mask = _prompts()
    logits, cache = lm.prefill(ids, mask)
    dec = GraphedDecoder(lm, 2, capture=False)
    tok = dec.start(logits, cache).clone()
    ptrs = [t.data_ptr() for st in dec.states for t in st] + [dec.tpe_state.data_ptr(), dec.logits.data_ptr()]
    ref_logits, ref_cache = logits, cache
    for _ in range(12):
        ref_tok = ref_logits.argmax(-1)
        assert torch.equal(tok, ref_tok)
        ref_logits, ref_cache = lm.decode_step(ref_tok, ref_cache)
        tok = dec.step().clone()
        assert float((dec.logits - ref_logits).abs().max()) < 1e-5
    assert int(dec.position) == ref_cache.seen_tokens == ids.shape[1] + 12
    for (S, z), (S1, z1) in zip(dec.states, ref_cache.layer_states):
        assert float((S - S1).abs().max()) < 1e-5 and float((z - z1).abs().max()) < 1e-5
    assert float((dec.tpe_state - ref_cache.tpe_state).abs().max()) < 1e-5
    # the step wrote into the same buffers every time (what a replayed graph needs)
    assert ptrs == [t.data_ptr() for st in dec.states for t in st] + [dec.tpe_state.data_ptr(), dec.logits.data_ptr()]
    # the caller's cache was copied, not consumed
    again, _ = lm.decode_step(logits.argmax(-1), cache)
    assert float((again - lm.decode_step(logits.argmax(-1), lm.prefill(ids, mask)[1])[0]).abs().max()) == 0.0


@pytest.mark.parametrize("sampling", [dict(), dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)])
def test_captured_step_makes_no_host_read(lm, sampling):
    ids, mask = _prompts()
    logits, cache = lm.prefill(ids, mask)
    dec = GraphedDecoder(lm, 2, capture=False, eos_token_id=[10, 11], **sampling)
    dec.start(logits, cache, torch.Generator().manual_seed(0))
    mode = _NoHostReads()
    with torch.no_grad(), mode:
        for _ in range(3):
            dec.step_function()
    assert mode.calls > 50  # the mode saw the whole step (embedding, blocks, head, sampling)
    with pytest.raises(AssertionError, match="host read"), mode:  # and it does catch a host read
        dec.position.item()


def test_decode_equals_eager_generate_with_eos_and_padding(lm):
    ids, mask = _prompts()
    greedy = lm.generate(ids, mask, max_new_tokens=10)
    stop = int(greedy[1, ids.shape[1] + 2])  # row 1's third token: row 1 stops early, row 0 later or never
    for eos in (None, stop):
        want = lm.generate(ids, mask, max_new_tokens=10, eos_token_id=eos)
        logits, cache = lm.prefill(ids, mask)
        for check_every in (1, 4, 64):
            got = GraphedDecoder(lm, 2, capture=False, eos_token_id=eos).decode(logits, cache, 10,
                                                                               check_every=check_every)
            assert torch.equal(torch.cat([ids, got], 1), want)
    assert GraphedDecoder(lm, 2, capture=False).decode(logits, cache, 0).shape == (2, 0)


def test_device_sampling_matches_the_filtered_softmax(lm):
    B, V = 4000, lm.config.vocab_size
    dec = GraphedDecoder(lm, B, capture=False, do_sample=True, temperature=0.7, top_k=3)
    row = torch.full((V,), -5.0)
    row[[4, 7, 9, 100]] = torch.tensor([2.0, 1.5, 1.0, 0.9])
    dec.generator = torch.Generator().manual_seed(0)
    dec.logits.copy_(row.expand(B, V))
    dec._draw_noise()
    dec._emit()
    want = torch.softmax(filter_logits(row[None], 0.7, 3), -1)[0]
    freq = torch.bincount(dec.token, minlength=V).float() / B
    assert set(dec.token.unique().tolist()) <= {4, 7, 9}  # top-k respected
    assert float((freq - want).abs().max()) < 0.03
    # top_k=1 sampling is greedy
    one = GraphedDecoder(lm, 2, capture=False, do_sample=True, top_k=1)
    ids, mask = _prompts()
    logits, cache = lm.prefill(ids, mask)
    assert torch.equal(one.decode(logits, cache, 6, torch.Generator().manual_seed(1)),
                       GraphedDecoder(lm, 2, capture=False).decode(logits, cache, 6))


def test_cpu_capture_and_bad_use_are_refused(lm):
    with pytest.raises(RuntimeError, match="CUDA graphs need the model on a CUDA device"):
        GraphedDecoder(lm, 2)
    with pytest.raises(RuntimeError, match="CUDA graphs need"):
        lm.generate([[257, 1]], max_new_tokens=2, cuda_graph=True)
    ids, mask = _prompts()
    logits, cache = lm.prefill(ids, mask)
    with pytest.raises(ValueError, match="built for batch 3"):
        GraphedDecoder(lm, 3, capture=False).start(logits, cache)
    with pytest.raises(RuntimeError, match="call start"):
        GraphedDecoder(lm, 2, capture=False).step()
    with pytest.raises(ValueError, match="top_k"):
        GraphedDecoder(lm, 2, capture=False, do_sample=True, top_k=0)
