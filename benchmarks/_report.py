"""Shared output of the sweep / comparison scripts: the rows as JSON and the markdown table, side by side."""
from __future__ import annotations

import json
import os
from typing import Dict, List


def write_report(out_dir: str, stem: str, rows: List[Dict[str, object]], markdown: str) -> None:
    """Write ``<out_dir>/<stem>.json`` (the rows) and ``<out_dir>/<stem>.md`` (the table), creating the folder."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(markdown + "\n")
