"""experiments/lm_scaling.py: the tiny run writes one row per size x family, a table, fits and a plot; a second run
skips finished rows; malformed sizes are refused; the power-law fit recovers a known law."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments import lm_scaling


def test_tiny_run_writes_rows_table_plot_and_resumes(tmp_path: Path):
    out = tmp_path / "scaling"
    lm_scaling.main(["--tiny", "--out", str(out), "--threads", "1"])
    rows = lm_scaling.read_rows(out / "runs.csv")
    assert {(r["size"], r["family"]) for r in rows} == {(s, f) for s in ("16x1x2", "32x1x2") for f in ("lightnet", "gpt")}
    for r in rows:
        assert float(r["flops"]) == pytest.approx(6 * int(r["non_embedding_params"]) * int(r["tokens"]))
        assert 0 < float(r["val_bpb"]) < 9  # bytes: at most log2(259) bits before training
    small = {r["family"]: r for r in rows if r["size"] == "16x1x2"}
    assert small["lightnet"]["tokens"] == small["gpt"]["tokens"]  # the same tokens for both families
    table = (out / "table.md").read_text()
    assert "| 32x1x2 | lightnet |" in table and "Fits `bpb = a · C^(−b)`" in table
    assert (out / "scaling.png").stat().st_size > 1000 and "lightnet" in (out / "fits.json").read_text()
    lm_scaling.main(["--tiny", "--out", str(out), "--threads", "1"])
    assert len(lm_scaling.read_rows(out / "runs.csv")) == len(rows)  # finished rows skipped


@pytest.mark.parametrize("bad", ["64x2", "64x0x2", "64x2x3", "ax2x2"])
def test_malformed_sizes_are_refused(bad: str):
    with pytest.raises(ValueError, match="size"):
        lm_scaling.parse_size(bad)


def test_power_law_fit_recovers_a_known_law():
    flops = [1e9, 1e10, 1e11, 1e12]
    a, b = lm_scaling.fit_power_law(flops, [3.0 * c ** -0.07 for c in flops])
    assert a == pytest.approx(3.0, rel=1e-9) and b == pytest.approx(0.07, rel=1e-9)
    with pytest.raises(ValueError, match="two or more"):
        lm_scaling.fit_power_law([1e9, 1e9], [2.0, 2.1])
    assert math.isfinite(a)


def test_variants_change_the_model_or_the_optimizer_and_bad_ones_are_refused(tmp_path: Path):
    import torch

    model, _, _ = lm_scaling.build("lightnet[use_tpe=false,gate_rank=0]", (16, 1, 2), 0, torch.device("cpu"))
    assert model.config.use_tpe is False and model.config.gate_rank == 0
    assert lm_scaling.variant_of("lightnet[lr=0.004]") == {"lr": 0.004}
    for bad in ("lightnet[nope=1]", "lightnet[]", "transformer"):
        with pytest.raises(ValueError):
            lm_scaling.variant_of(bad)
    out = tmp_path / "ablation"
    lm_scaling.main(["--tiny", "--out", str(out), "--threads", "1", "--families", "lightnet", "lightnet[lr=0.02]"])
    rows = lm_scaling.read_rows(out / "runs.csv")
    assert {r["family"] for r in rows} == {"lightnet", "lightnet[lr=0.02]"}
    by = {(r["size"], r["family"]): float(r["val_bpb"]) for r in rows}
    assert by[("32x1x2", "lightnet")] != by[("32x1x2", "lightnet[lr=0.02]")]  # the learning rate reached the trainer


def test_short_conv_variant_wraps_every_mixer_and_stays_causal():
    import torch

    from experiments.short_conv import CausalShortConv, add_short_conv

    model, loss_fn, logits_fn = lm_scaling.build("lightnet[short_conv=4]", (16, 2, 2), 0, torch.device("cpu"))
    convs = [m for m in model.modules() if isinstance(m, CausalShortConv)]
    assert len(convs) == 2 and all(c.conv.in_channels == 48 and c.kernel_size == 4 for c in convs)
    ids = torch.randint(0, 256, (2, 12))
    later = ids.clone()
    later[:, 7:] = (later[:, 7:] + 1) % 256  # change tokens 7.. only
    a, b = logits_fn(model, ids), logits_fn(model, later)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6) and not torch.allclose(a[:, 7:], b[:, 7:])
    assert torch.isfinite(loss_fn(model, ids))
    conv = CausalShortConv(3, 2)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[[1.0, 2.0]]]).expand(3, 1, 2))  # y_t = 2 x_t + x_{t-1}
    x = torch.arange(12.0).view(1, 4, 3)
    want = x + 2 * x + torch.cat([torch.zeros(1, 1, 3), x[:, :-1]], 1)
    assert torch.allclose(conv(x), want)
    with pytest.raises(ValueError, match="no mixer"):
        add_short_conv(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"expected \[B, N, 3\]"):
        conv(torch.zeros(4, 3))
