"""LM training: MLM masking statistics, corpus split, a short CPU run lowers the loss, `lightnet train-lm` end to end."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from lightnet.lm import LightNetForCausalLM, LightNetForMaskedLM, LightNetLMConfig, MLMCollator, mask_tokens
from lightnet.lm.corpus import CausalWindowDataset, MaskedWindowDataset, eval_windows, load_corpus

TEXT = (
    "The quick brown fox jumps over the lazy dog. Python is a programming language that lets you work quickly "
    "and integrate systems more effectively. "
)


def test_mlm_masking_statistics():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (64, 512), generator=g)
    ids[:, 0] = 257  # <bos> is special: never selected
    attn = torch.ones_like(ids)
    attn[:, -12:] = 0  # padding: never selected
    corrupted, labels = mask_tokens(ids, mask_token_id=259, vocab_size=260, mlm_probability=0.15,
                                    special_ids=(256, 257, 258), attention_mask=attn, generator=g,
                                    random_token_range=(0, 256))
    sel = labels != -100
    maskable = attn.bool().clone()
    maskable[:, 0] = False
    rate = sel.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.01
    assert not sel[:, 0].any() and not sel[:, -12:].any()
    assert torch.equal(labels[sel], ids[sel])  # labels are the original ids
    assert torch.equal(corrupted[~sel], ids[~sel])  # unselected tokens untouched
    n = sel.sum().item()
    is_mask = (corrupted[sel] == 259).sum().item() / n
    unchanged = (corrupted[sel] == ids[sel]).sum().item() / n
    replaced = 1 - is_mask - unchanged
    assert abs(is_mask - 0.8) < 0.02
    # a random replacement hits the original byte with prob 1/256, so "unchanged" is 10 % + 0.04 %
    assert abs(unchanged - 0.1) < 0.015 and abs(replaced - 0.1) < 0.015
    assert corrupted[sel].max() < 260 and (corrupted[sel][corrupted[sel] != 259] < 256).all()


def test_mlm_collator_never_masks_padding():
    ids = torch.randint(0, 256, (8, 40))
    ids[:, 30:] = 256
    out = MLMCollator(mask_token_id=259, vocab_size=260, pad_token_id=256, generator=torch.Generator().manual_seed(1))(ids)
    assert torch.equal(out["attention_mask"], (ids != 256).long())
    assert (out["labels"][:, 30:] == -100).all() and (out["input_ids"][:, 30:] == 256).all()
    assert (out["labels"] != -100).any()


def _write_corpus(tmp_path, n_files=8):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    for i in range(n_files):
        folder = root / "sub" if i % 2 else root
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + TEXT * 12)
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


def test_corpus_split_by_file_and_windows(tmp_path):
    root = _write_corpus(tmp_path)
    corpus = load_corpus([str(root)], val_fraction=0.2)
    tr, va = corpus.num_files
    assert tr + va == 8 and va >= 1 and tr >= 1
    assert corpus.train.dtype == torch.uint8 and corpus.val.numel() > 0
    for i in range(8):  # every document sits in exactly one split
        marker = f"Document {i}.".encode()
        in_train = marker in bytes(corpus.train.numpy())
        in_val = marker in bytes(corpus.val.numpy())
        assert in_train != in_val
    again = load_corpus([str(root)], val_fraction=0.2)
    assert torch.equal(again.train, corpus.train)  # deterministic
    ds = CausalWindowDataset(corpus.train, seq_len=33, bos_token_id=257)
    item = ds[0]["input_ids"]
    assert item.shape == (33,) and item[0] == 257 and item[1:].max() < 256
    w = eval_windows(corpus.val, 16)
    assert w.shape[1] == 16 and w.shape[0] == corpus.val.numel() // 16
    rnd = CausalWindowDataset(corpus.train, seq_len=33, num_windows=5)
    assert len(rnd) == 5 and rnd[4]["input_ids"].shape == (33,)
    mds = MaskedWindowDataset(corpus.train, 64, mask_token_id=259, vocab_size=260)
    m = mds[1]
    assert set(m) == {"input_ids", "labels", "attention_mask"} and m["input_ids"].shape == (64,)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_corpus([str(tmp_path / "nope")])


def test_single_file_corpus_split(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text(TEXT * 20)
    corpus = load_corpus(str(f), val_fraction=0.1)
    total = len(f.read_bytes())
    assert corpus.train.numel() + corpus.val.numel() == total
    assert abs(corpus.val.numel() - 0.1 * total) <= 1


@pytest.mark.parametrize("task", ["causal", "mlm"])
def test_short_cpu_training_lowers_the_loss(task):
    torch.manual_seed(0)
    cfg = LightNetLMConfig(dim=32, depth=1, num_heads=2, tpe_num_decays=2, causal=task == "causal", attn_backend="torch")
    model = LightNetForCausalLM(cfg) if task == "causal" else LightNetForMaskedLM(cfg)
    data = torch.tensor(list(TEXT.encode()) * 4, dtype=torch.uint8)
    ds = CausalWindowDataset(data, 32, 257) if task == "causal" else MaskedWindowDataset(data, 32, 259, 260, 0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(25):
        idx = torch.randint(0, len(ds), (8,), generator=g).tolist()
        items = [ds[i] for i in idx]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        if task == "causal":
            loss = model(batch["input_ids"], labels=batch["input_ids"]).loss
        else:
            loss = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.log(260) - 0.3 < losses[0] < math.log(260) + 0.5  # starts near uniform
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0  # and learns the byte statistics


def test_train_lm_cli_end_to_end(tmp_path):
    from lightnet.cli import main

    root = _write_corpus(tmp_path)
    run_dir = tmp_path / "run"
    args = ["train-lm", f"data.paths=[{root}]", f"run.run_dir={run_dir}", "run.epochs=2", "data.epoch_windows=12",
            "run.log_every=2",
            "run.tensorboard=false", "run.plot=false", "run.progress=false", "batch_size=4", "data.seq_len=32",
            "data.eval_max_bytes=512", "model.dim=16", "model.depth=1", "model.num_heads=2", "model.attn_backend=torch",
            "sample_tokens=8", "data.val_fraction=0.3"]
    assert main(args) == 0
    steps = list(csv.DictReader(open(run_dir / "steps.csv")))
    assert steps and "bpb" in steps[0] and int(steps[-1]["step"]) == 6  # 2 epochs x 12 windows / batch 4
    epochs = list(csv.DictReader(open(run_dir / "epochs.csv")))
    assert len(epochs) == 2 and all(0 < float(e["eval_bpb"]) < 12 for e in epochs)
    model = LightNetForCausalLM.from_pretrained(run_dir / "model")
    assert model.config.dim == 16
    assert "--- greedy ---" in (run_dir / "samples.txt").read_text()
    # unknown model key: clear error and exit code 2
    assert main(["train-lm", "model.dimm=8", f"run.run_dir={tmp_path / 'bad'}"]) == 2
    assert not (tmp_path / "bad").exists()  # rejected before any run folder is made


def test_train_lm_rejects_contradicting_causal_flag():
    from lightnet.train.lm import LMTrainConfig, build_lm_model

    cfg = LMTrainConfig(task="mlm", model={"dim": 16, "depth": 1, "num_heads": 2, "causal": True})
    with pytest.raises(ValueError, match="contradicts task"):
        build_lm_model(cfg)
    cfg = LMTrainConfig(task="mlm", model={"dim": 16, "depth": 1, "num_heads": 2})
    assert isinstance(build_lm_model(cfg), LightNetForMaskedLM)
