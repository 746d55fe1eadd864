"""Mean ± std over seeds of the generation (FID proxy) and LM (bits per byte) comparisons.

The comparison scripts write one JSON per run:
``experiments/dit_compare.py`` (``runs.<model>.eval_loss``, ``fid.pipelines[i].fid_proxy`` /
``label_acc``) and ``experiments/lm_quality.py`` (``quality.<model>.val_bpb`` / ``train_seconds``). Run each script
once per seed into its own folder, then

    python -m experiments.aggregate_seeds lm  runs/lm_s0/lm_compare.json runs/lm_s1/... runs/lm_s2/...
    python -m experiments.aggregate_seeds dit runs/dit_s0/results.json runs/dit_s1/results.json ...

prints a markdown table (mean ± sample std, number of runs) for ``docs/evidence.md``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .make_tables import format_mean_std

__all__ = ["collect_lm", "collect_dit", "render", "main"]


def collect_lm(docs: Sequence[dict]) -> Dict[str, Dict[str, List[float]]]:
    """``{model: {"val_bpb": [...], "train_seconds": [...], "steps": [...], "params": [...]}}`` from lm_compare JSONs."""
    out: Dict[str, Dict[str, List[float]]] = {}
    for doc in docs:
        if "quality" not in doc:
            raise ValueError("not an lm_compare JSON (no 'quality' section)")
        for model, q in doc["quality"].items():
            m = out.setdefault(model, {})
            for key in ("val_bpb", "train_seconds", "steps", "params"):
                if key in q:
                    m.setdefault(key, []).append(float(q[key]))
    return out


def collect_dit(docs: Sequence[dict]) -> Dict[str, Dict[str, List[float]]]:
    """``{model: {"fid_proxy": [...], "label_acc": [...], "eval_loss": [...], "params": [...]}}`` from DiT JSONs.

    FID rows are matched to runs by transformer class: ``LightNetDiTModel`` ↔ run ``lightnet``, others ↔ ``dit``.
    """
    out: Dict[str, Dict[str, List[float]]] = {}
    for doc in docs:
        if "runs" not in doc:
            raise ValueError("not a dit_fashion_mnist_compare JSON (no 'runs' section)")
        for model, r in doc["runs"].items():
            m = out.setdefault(model, {})
            for key in ("eval_loss", "params", "step"):
                if key in r:
                    m.setdefault(key, []).append(float(r[key]))
        for p in doc.get("fid", {}).get("pipelines", []):
            model = "lightnet" if p.get("transformer") == "LightNetDiTModel" else "dit"
            m = out.setdefault(model, {})
            for key in ("fid_proxy", "label_acc"):
                if key in p:
                    m.setdefault(key, []).append(float(p[key]))
    return out


_COLUMNS = {
    "lm": [("val_bpb", "val bits/byte", 1.0, 3), ("train_seconds", "train s", 1.0, 1), ("steps", "steps", 1.0, 0)],
    "dit": [("fid_proxy", "FID proxy", 1.0, 1), ("eval_loss", "held-out ε-MSE", 1.0, 4),
            ("label_acc", "samples classified as label (%)", 100.0, 1), ("step", "steps", 1.0, 0)],
}


def render(kind: str, table: Dict[str, Dict[str, List[float]]]) -> str:
    """Markdown: one row per model, mean ± std per metric, and the number of runs."""
    cols = _COLUMNS[kind]
    lines = ["| model | params | " + " | ".join(c[1] for c in cols) + " | runs |",
             "|---|---:|" + "---:|" * len(cols) + "---:|"]
    for model, m in table.items():
        params = m.get("params", [float("nan")])[0] / 1e6
        cells = [format_mean_std(m.get(key, []), scale=scale, digits=digits) for key, _, scale, digits in cols]
        n = max((len(v) for v in m.values()), default=0)
        lines.append(f"| {model} | {params:.2f}M | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Mean ± std over seeds of LM / DiT comparison JSONs.")
    p.add_argument("kind", choices=sorted(_COLUMNS))
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    docs = [json.loads(f.read_text()) for f in args.files]
    table = collect_lm(docs) if args.kind == "lm" else collect_dit(docs)
    print(render(args.kind, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
