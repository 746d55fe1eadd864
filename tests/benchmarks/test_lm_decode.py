"""benchmarks/lm_decode.py on the CPU, and its GPT baseline's cached decoding against the full forward."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import lm_decode
from benchmarks.gpt_baseline import GPTBaseline, GPTConfig


def test_smoke_decodes_both_models_at_every_context(tmp_path: Path) -> None:
    assert lm_decode.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "lm_decode.json").read_text())["rows"]
    assert {(r["model"], r["context"]) for r in rows} == {(m, L) for m in ("lightnet", "gpt") for L in (16, 64)}
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["state_mib"] > 0 for r in rows)
    state = {r["context"]: r["state_mib"] for r in rows if r["model"] == "lightnet"}
    cache = {r["context"]: r["state_mib"] for r in rows if r["model"] == "gpt"}
    assert state[16] == state[64] and cache[64] > cache[16]  # constant state, growing KV cache
    assert "| 64 |" in (tmp_path / "lm_decode.md").read_text()
    # --cuda-graph is on with --smoke: the static-buffer steps (run eagerly on the CPU) give the eager loop's tokens
    static = [r for r in rows if r["mode"] == "static"]
    assert {(r["model"], r["context"]) for r in static} == {(m, L) for m in ("lightnet", "gpt") for L in (16, 64)}
    assert all(r["tokens_match"] == 1.0 for r in static)


def test_gpt_cached_decoding_equals_the_full_forward() -> None:
    torch.manual_seed(0)
    m = GPTBaseline(GPTConfig(dim=32, depth=2, num_heads=2)).eval()
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        full = m(ids).float()
    cache = m.new_cache(2, 64, "cpu", torch.float32)
    errs = [float((m.prefill(ids[:, :25], cache, chunk_size=10) - full[:, 24]).abs().max())]
    errs += [float((m.decode_step(ids[:, t], cache) - full[:, t]).abs().max()) for t in range(25, 40)]
    assert max(errs) < 1e-4


def test_gpt_static_decode_step_equals_the_cached_step() -> None:
    torch.manual_seed(0)
    m = GPTBaseline(GPTConfig(dim=32, depth=2, num_heads=2)).eval()
    ids = torch.randint(0, 256, (2, 30))
    a, b = m.new_cache(2, 48, "cpu", torch.float32), m.new_cache(2, 48, "cpu", torch.float32)
    m.prefill(ids[:, :20], a, chunk_size=8)
    m.prefill(ids[:, :20], b, chunk_size=8)
    position = torch.tensor(20)
    for t in range(20, 30):
        want = m.decode_step(ids[:, t], a)
        got = m.static_decode_step(ids[:, t], b, position)
        position += 1
        assert float((got - want).abs().max()) < 1e-5
