"""Hub-id loading, tested offline on a hand-populated Hugging Face cache (no network)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lightnet.hub import looks_like_hub_id, resolve_pretrained_dir
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig


def _populate_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> None:
    """Lay out ``folder`` the way huggingface_hub caches a downloaded snapshot of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def _tiny_lm() -> LightNetForCausalLM:
    torch.manual_seed(0)
    return LightNetForCausalLM(LightNetLMConfig(dim=32, depth=1, num_heads=2))


def test_lm_from_hub_id_via_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _tiny_lm()
    saved = model.save_pretrained(tmp_path / "saved")
    _populate_cache(tmp_path / "cache", "lightnet-test/tiny-lm", Path(saved))
    loaded = LightNetForCausalLM.from_pretrained("lightnet-test/tiny-lm", cache_dir=tmp_path / "cache",
                                                 local_files_only=True)
    ids = torch.randint(0, 256, (1, 7))
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_unknown_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="cannot resolve hub repo 'nobody/nothing'"):
        LightNetForCausalLM.from_pretrained("nobody/nothing", cache_dir=tmp_path, local_files_only=True)


def test_not_a_folder_nor_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder nor"):
        resolve_pretrained_dir(tmp_path / "missing" / "deeper" / "x", ["config.json"])
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor"):
        resolve_pretrained_dir(f, ["config.json"])


def test_hub_id_shape():
    assert looks_like_hub_id("org/name") and looks_like_hub_id("a-b/c.d_e")
    assert not looks_like_hub_id("name") and not looks_like_hub_id("a/b/c") and not looks_like_hub_id("/abs/path")


def test_timm_hf_hub_id_loads_a_lightnet_model_offline(tmp_path):
    """``timm.create_model('hf-hub:org/name', pretrained=True)`` finds our architecture once lightnet is imported."""
    import os
    import subprocess
    import sys

    import timm
    from timm.models import save_for_hf

    import lightnet  # noqa: F401  registers the architectures

    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", num_classes=7).eval()
    save_for_hf(model, str(tmp_path / "src"), safe_serialization=True)
    _populate_cache(tmp_path / "cache", "lightnet-test/tiny-vit", tmp_path / "src")
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "io.pt")
    script = (
        "import sys, torch, timm, lightnet\n"
        "io = torch.load(sys.argv[1], weights_only=True)\n"
        "m = timm.create_model('hf-hub:lightnet-test/tiny-vit', pretrained=True).eval()\n"
        "with torch.no_grad(): d = (m(io['x']) - io['y']).abs().max().item()\n"
        "print(type(m).__name__, m.num_classes, d)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "io.pt")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name, num_classes, diff = out.stdout.split()[-3:]
    assert name == "LightNet" and num_classes == "7" and float(diff) == 0.0
