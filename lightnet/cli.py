"""The ``lightnet`` console script: a dispatch table of subcommands, each loaded lazily.

To add a subcommand, add one line to :data:`COMMANDS`::

    "train-dit": ("lightnet.train.dit", "train_main", "train a LightNet diffusion transformer"),

The function receives the remaining command-line arguments (``list[str]``) and returns an exit code.
Importing this module imports nothing heavy; the subcommand's module is imported only when it runs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Sequence

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("lightnet.train.classify", "train_main", "train an image classifier (default recipe: digits)"),
    "eval": ("lightnet.train.classify", "eval_main", "evaluate a classifier checkpoint (top-1/top-5)"),
    "train-dit": ("lightnet.train.dit", "train_main", "train a diffusion transformer (default recipe: dit_digits)"),
    "sample": ("lightnet.train.sample", "sample_main", "sample a PNG grid + images from a saved diffusion pipeline"),
    "fid": ("lightnet.train.fid", "fid_main", "FID proxy (own classifier's features) of diffusion pipelines"),
    "train-seg": ("lightnet.train.segment", "train_main", "train a segmentation model, timm encoder + smp DPT (default recipe: seg_fashion_mosaic)"),
    "train-lm": ("lightnet.train.lm", "train_main", "train a causal or masked LightNet LM (default recipe: lm_causal_pydoc)"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: lightnet <command> [options]   (lightnet <command> --help for a command's options)", "",
             "LightNet (You Only Scan Once): training and evaluation entry points.", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _load(name: str) -> Callable[[Sequence[str]], int | None]:
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightnet <command> ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from lightnet import __version__

        print(f"lightnet {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"lightnet: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    rc = _load(name)(args[1:])
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
