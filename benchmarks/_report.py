"""Shared pieces of the sweep / comparison scripts: the error measure of their checks, and their output (the rows as
JSON and the markdown table, side by side)."""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Sequence, Tuple

import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-relative error ``‖a − b‖ / ‖b‖`` in fp64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def write_report(out_dir: str, stem: str, rows: List[Dict[str, object]], markdown: str) -> None:
    """Write ``<out_dir>/<stem>.json`` (the rows) and ``<out_dir>/<stem>.md`` (the table), creating the folder."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(markdown + "\n")


def two_path_table(rows: List[Dict[str, object]], group: Sequence[str], paths: Sequence[str], names: Sequence[str],
                   label: Callable[[Dict[str, object]], str], extra: Sequence[Tuple[str, str, str]] = ()) -> str:
    """Markdown comparing two paths per problem: ``| problem | A ms | B ms | A / B | extra… | max err (A, B) |``.

    ``rows`` carry ``path`` (one of ``paths``), the ``group`` keys naming the problem, ``status``, ``err_*`` values
    and, when timed, ``fwd_bwd_ms``; ``names`` are the two column names, ``label(row)`` the problem's cell and
    ``extra`` ``(key, header, format)`` columns shown for both paths (e.g. memory). A / B > 1: B is faster.
    """
    a_name, b_name = names
    head = [f"{a_name} ms", f"{b_name} ms", f"{a_name} / {b_name}"]
    head += [f"{n} {h}" for _, h, _ in extra for n in names] + [f"max err ({a_name}, {b_name})"]
    lines = ["| problem | " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1) + "---|"]
    for key in dict.fromkeys(tuple(r[k] for k in group) for r in rows):
        a, b = (next(r for r in rows if tuple(r[k] for k in group) == key and r["path"] == p) for p in paths)
        errs = ", ".join(f"{max(v for k, v in r.items() if k.startswith('err_')):.1e}" for r in (a, b))
        if "fwd_bwd_ms" in a and "fwd_bwd_ms" in b:
            cells = [f"{a['fwd_bwd_ms']:.3f}", f"{b['fwd_bwd_ms']:.3f}", f"**{a['fwd_bwd_ms'] / b['fwd_bwd_ms']:.2f}×**"]
            cells += [format(r[k], fmt) for k, _, fmt in extra for r in (a, b)]
        else:
            cells = [str(a["status"]), str(b["status"]), "—"] + ["—"] * (2 * len(extra))
        lines.append(f"| {label(a)} | " + " | ".join(cells + [errs]) + " |")
    return "\n".join(lines)
