"""benchmarks/count_ops.py: the op counter sees forward and backward ops and attributes them to source lines."""
from __future__ import annotations

from benchmarks.count_ops import build_model, count_step, main


def test_count_step_counts_forward_and_backward_with_sites():
    model = build_model("test_lightnet", 32, "torch")
    res = count_step(model, 32, 1, where=True)
    fwd, bwd = sum(res["forward"].values()), sum(res["backward"].values())
    assert fwd > 50 and bwd > 50
    assert res["forward"].get("mm", 0) + res["forward"].get("addmm", 0) >= 4 * 4  # 4 blocks × (qkv, gate, fc1, fc2)
    assert sum(res["sites"]["forward"].values()) == fwd
    assert any(site.startswith("lightnet/layers/") for site in res["sites"]["forward"])
    assert res["launches"] == {"forward": 0, "backward": 0}


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert main(["--models", "test_lightnet", "--img-size", "32", "--batch", "1", "--json", str(out)]) == 0
    assert '"forward"' in out.read_text()
    assert "total aten ops" in capsys.readouterr().out
