"""benchmarks/plot_speed_history.py: ratios from bench_models.json files, the table, the plot and bad specs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import plot_speed_history as psh  # noqa: E402


def _fake(path: Path, ours: dict, peer: dict, mode: str = "reduce-overhead") -> str:
    rows = [dict(model=m, size=s, img_per_s=v, status="ok", mode=mode)
            for m, d in (("lightnet_small", ours), ("vit_small_patch16_224", peer)) for s, v in d.items()]
    rows.append(dict(model="lightnet_small", size=2048, img_per_s=0.0, status="OOM", mode=mode))
    path.write_text(json.dumps({"args": {"models": ["lightnet_small", "vit_small_patch16_224"]}, "train": rows}))
    return str(path)


def test_ratios_table_and_plot(tmp_path: Path):
    a = _fake(tmp_path / "a.json", {224: 50.0, 1024: 30.0}, {224: 100.0, 1024: 10.0})
    b = _fake(tmp_path / "b.json", {224: 80.0}, {224: 100.0})
    assert psh.load_ratios(a) == {224: 0.5, 1024: 3.0}  # the OOM row is left out
    out = tmp_path / "p.png"
    assert psh.main([f"old={a}", f"new={b}", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    md = psh.table([("old", psh.load_ratios(a)), ("new", psh.load_ratios(b))])
    assert "| old | 0.50× | 3.00× |" in md and "| new | 0.80× | — |" in md and "≥ 0.9×" in md


def test_bad_inputs_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="LABEL=path"):
        psh.parse_run("no-label.json")
    empty = tmp_path / "e.json"
    empty.write_text(json.dumps({"args": {"models": ["a", "b"]}, "train": []}))
    with pytest.raises(ValueError, match="no successful"):
        psh.load_ratios(str(empty))
