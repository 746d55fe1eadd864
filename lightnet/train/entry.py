"""The command-line shell every trainer shares: ``lightnet <trainer> [-c RECIPE] [--resume [PATH]] [key=value ...]``.

A trainer's ``train_main`` is one call::

    def train_main(argv=None) -> int:
        return run_trainer_cli(argv, prog="lightnet train-dit", config_cls=DiTTrainConfig,
                               default_recipe="dit_digits", train_fn=train_dit,
                               description="Train a class-conditional diffusion transformer.",
                               examples=["lightnet train-dit -c dit_fashion_mnist run.epochs=2"])

It parses the arguments (options and ``key=value`` overrides may be intermixed), builds the config
(recipe ← overrides; on ``--resume`` the resumed run's own ``config.yaml`` ← overrides), handles
``--print-config``, calls ``train_fn(cfg, resume_from=CHECKPOINT_DIR|None, run_dir=RUN_DIR|None)``
and maps failures to exit codes: 2 for bad input (config, dataset, checkpoint, ``ValueError``) with a
one-line message naming the problem, 3 for a non-finite loss, ``128 + signal`` when a SIGTERM/SIGINT
stopped the run after checkpointing (``train_fn`` returns the :class:`~lightnet.train.engine.TrainResult`).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .checkpoint import CheckpointError
from .config import ConfigError, build_config, config_to_dict, load_yaml
from .datasets import DatasetError

__all__ = ["HelpFormatter", "plain_text", "run_trainer_cli", "trainer_parser", "resolve_cli_config"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` of the ``lightnet`` commands: every option's default listed (unless its help already says what the
    default is), descriptions and epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.required or not action.option_strings:
            return text
        return super()._get_help_string(action)


def plain_text(rst: str) -> str:
    """A docstring paragraph as terminal text: RST literals (````x````), emphasis (``*x*``, ``**x**``) and roles
    (``:class:`x```) unmarked."""
    rst = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", rst)
    rst = re.sub(r"``([^`]+)``", r"\1", rst)
    return re.sub(r"\*{1,2}([^*\s][^*]*)\*{1,2}", r"\1", rst)

TrainFn = Callable[..., Any]


def trainer_parser(prog: str, description: str, default_recipe: str, examples: Sequence[str] = ()
                   ) -> argparse.ArgumentParser:
    """The standard trainer parser: ``-c/--config``, ``--resume [PATH]``, ``--print-config``, overrides."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                epilog=("examples:\n" + "\n".join(f"  {e}" for e in examples)) if examples else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None,
                   help=f"recipe: a YAML path, or a name in ./configs or among the packaged recipes (default: "
                        f"{default_recipe})")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: its folder, a checkpoint folder, or no value for the newest run of this name")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides with dotted keys (optim.lr=1e-3 run.epochs=5)")
    return p


def resolve_cli_config(config_cls: type, args: argparse.Namespace, default_recipe: str
                       ) -> tuple[Any, Path | None, Path | None]:
    """``(cfg, run_dir, resume_checkpoint)`` from parsed trainer arguments.

    Without ``--resume``: recipe (``-c`` or the default) ← overrides. With ``--resume``: the resumed
    run's saved ``config.yaml`` (else the checkpoint's, else the recipe) ← ``-c`` recipe if given ←
    overrides, so a resumed run keeps its settings unless told otherwise.
    """
    from .engine import resolve_resume

    if args.resume is None:
        return build_config(config_cls, args.config or default_recipe, args.overrides), None, None
    probe = build_config(config_cls, args.config or default_recipe, args.overrides)
    run_dir, ckpt = resolve_resume(args.resume, probe.run.output_dir, probe.name)
    saved = next((p for p in (run_dir / "config.yaml", ckpt / "config.yaml") if p.is_file()), None)
    if saved is None:
        return probe, run_dir, ckpt
    return build_config(config_cls, args.config, args.overrides, base=load_yaml(saved)), run_dir, ckpt


def run_trainer_cli(argv: Sequence[str] | None, *, prog: str, config_cls: type, default_recipe: str,
                    train_fn: TrainFn, description: str = "", examples: Sequence[str] = ()) -> int:
    """Parse, configure, train; returns the process exit code (see module docstring)."""
    import yaml

    from .engine import NonFiniteLossError

    args = trainer_parser(prog, description, default_recipe, examples).parse_intermixed_args(argv)
    try:
        cfg, run_dir, resume_ckpt = resolve_cli_config(config_cls, args, default_recipe)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            return 0
        result = train_fn(cfg, resume_from=resume_ckpt, run_dir=run_dir)
    except NonFiniteLossError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 3
    except (ConfigError, DatasetError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    interrupted = getattr(result, "interrupted", None)
    if interrupted:
        return 128 + int(getattr(signal.Signals, interrupted, signal.SIGTERM))
    return 0
