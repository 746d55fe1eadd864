"""benchmarks/block_profile.py on the CPU: every piece of both blocks timed at every size, the tables written."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import block_profile


def test_smoke_times_every_piece(tmp_path: Path) -> None:
    assert block_profile.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "block_profile.json").read_text())["rows"]
    assert all(r["status"] == "ok" for r in rows)
    for model, pieces in (("lightnet", {"norms (2)", "qkv projection", "recurrence kernel (with MD-LRPE)",
                                        "MD-LRPE (kernel with − without)", "MLP (GLU)", "whole block",
                                        "MD-TPE (once per model)", "MD-TPE, FFT on every axis",
                                        "MD-TPE, direct product up to 64 tokens per axis"}),
                          ("vit", {"norms (2)", "qkv projection", "attention (SDPA)", "MLP", "whole block"})):
        for N in (16, 64):
            got = {r["piece"] for r in rows if r["model"] == model and r["N"] == N}
            assert pieces <= got
    assert all(r["us_per_token"] > 0 for r in rows if not r["piece"].startswith("MD-LRPE"))
    assert {r["B"] for r in rows if r["N"] == 16} == {8} and {r["B"] for r in rows if r["N"] == 64} == {2}
    md = (tmp_path / "block_profile.md").read_text()
    assert md.startswith("block_profile: ") and "N = 64" in md and "whole block" in md
