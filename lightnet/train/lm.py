"""``lightnet train-lm``: train a causal or masked LightNet language model on a text corpus.

Uses the shared :class:`lightnet.train.engine.Trainer` (accelerate, checkpoints, ``--resume``, tqdm, CSV/TensorBoard
logs, curves). Default data: Debian's Python 3.11 docs (offline), byte-level tokens, held-out files for validation.
Reports validation bits per byte (causal: next-byte cross-entropy; MLM: cross-entropy at masked bytes, a different
quantity that is not comparable with causal bpb). At the end the model is saved with ``save_pretrained`` into
``<run_dir>/model`` and, for causal models, a greedy and a sampled continuation go to ``<run_dir>/samples.txt``.

Examples::

    lightnet train-lm                                   # the packaged recipe lm_causal_pydoc
    lightnet train-lm -c lm_mlm_pydoc run.max_steps=200 model.dim=128
    lightnet train-lm data.paths=[my_texts/] run.mixed_precision=bf16
    lightnet train-lm --resume                          # newest run of this recipe
    torchrun --nproc_per_node 4 -m lightnet.cli train-lm parallel.sequence=2   # 2 data x 2 sequence

``parallel.sequence=S`` (causal task only, :mod:`lightnet.train.parallel`): the ``S`` processes of a sequence group
are given the same windows and split every window's tokens (:meth:`LightNetForCausalLM.set_sequence_parallel_group`);
the loss is the mean over all tokens of the whole window, the gradients are averaged over the data-parallel ranks.
Validation runs split the same way; the final model is saved and sampled unsplit on the main process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch

from ..lm import ByteTokenizer, LightNetForCausalLM, LightNetForMaskedLM, LightNetLMConfig
from ..lm.corpus import CausalWindowDataset, MaskedWindowDataset, TextCorpus, eval_windows, load_corpus
from ..lm.masking import mask_tokens
from .engine import Trainer, start_run
from .parallel import ParallelConfig, parallel_layout
from .rng import seed_everything
from .schema import OptimConfig, RunConfig, SchedConfig

__all__ = [
    "LMDataConfig", "LMTrainConfig", "build_lm_model", "check_parallel", "evaluate_bpb", "lm_config", "train_lm",
    "train_main",
]

DEFAULT_RECIPE = "lm_causal_pydoc"


@dataclass
class LMDataConfig:
    """Corpus and windows.

    ``paths``: null = Debian ``python3.11-doc`` sources; otherwise text files / folders, or a prepared folder.
    """

    paths: Optional[List[str]] = None
    val_fraction: float = 0.05
    seq_len: int = 256
    epoch_windows: Optional[int] = None  # null: an epoch tiles the whole stream; N: an epoch is N random windows
    add_bos: bool = True  # causal: start each window with <bos>
    eval_max_bytes: Optional[int] = 262144  # validation bytes evaluated (null = all)
    eval_batch_size: int = 16


@dataclass
class LMTrainConfig:
    """Top-level ``train-lm`` config (YAML recipe + ``key=value`` overrides)."""

    name: str = "lm"
    task: Literal["causal", "mlm"] = "causal"
    batch_size: int = 16
    model: Dict[str, Any] = field(default_factory=dict)  # LightNetLMConfig fields (unknown keys are errors)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    sample_prompt: str = "The Python "
    sample_tokens: int = 160


def lm_config(cfg: LMTrainConfig) -> LightNetLMConfig:
    """``cfg.model`` as a validated :class:`LightNetLMConfig` (``causal`` follows ``cfg.task``)."""
    if cfg.task not in ("causal", "mlm"):
        raise ValueError(f"task must be 'causal' or 'mlm', got {cfg.task!r}")
    fields = dict(cfg.model)
    want_causal = cfg.task == "causal"
    if "causal" in fields and bool(fields["causal"]) != want_causal:
        raise ValueError(f"model.causal={fields['causal']} contradicts task={cfg.task!r}; drop model.causal")
    fields["causal"] = want_causal
    return LightNetLMConfig.from_dict(fields)


def check_parallel(cfg: LMTrainConfig) -> None:
    """A ValueError for a ``parallel`` section this trainer cannot run (checked before any run folder is made):
    only the causal LM splits its tokens (``parallel.sequence > 1``); whether ``sequence`` divides the process count
    is checked at launch (:func:`lightnet.train.parallel.parallel_layout`)."""
    seq = cfg.parallel.sequence
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"parallel.sequence must be an integer >= 1, got {seq!r}")
    if seq > 1 and cfg.task != "causal":
        raise ValueError(f"parallel.sequence={seq} needs task=causal: only LightNetForCausalLM splits its tokens "
                         f"over processes (task={cfg.task!r}); use parallel.sequence=1")


def build_lm_model(cfg: LMTrainConfig) -> torch.nn.Module:
    """The model named by ``cfg.task`` with ``cfg.model`` fields."""
    config = lm_config(cfg)
    return LightNetForCausalLM(config) if config.causal else LightNetForMaskedLM(config)


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, data: torch.Tensor, cfg: LMTrainConfig, device: torch.device) -> Dict[str, float]:
    """Validation bits per byte (causal) or masked-byte bits per byte and accuracy (MLM) on the held-out stream.

    Deterministic: consecutive windows; MLM masks drawn from a fixed-seed generator. Every process evaluates all
    windows; a model split over a sequence group (``parallel.sequence``) needs every rank of the group to call this.
    """
    config = getattr(model, "config", None) or model.module.config  # DDP-wrapped models
    tok = ByteTokenizer()
    bos = cfg.task == "causal" and cfg.data.add_bos
    body = cfg.data.seq_len - (1 if bos else 0)
    windows = eval_windows(data, body, cfg.data.eval_max_bytes)
    gen = torch.Generator().manual_seed(1234)
    total_nats, total_bytes, correct = 0.0, 0, 0
    for start in range(0, windows.shape[0], cfg.data.eval_batch_size):
        ids = windows[start:start + cfg.data.eval_batch_size]
        if cfg.task == "causal":
            if bos:
                ids = torch.cat([torch.full((ids.shape[0], 1), config.bos_token_id), ids], dim=1)
            ids = ids.to(device)
            n = ids[:, 1:].numel()
            # the mean next-byte loss over the whole window (under sequence parallelism the same on every rank)
            total_nats += float(model(input_ids=ids, labels=ids).loss) * n
            total_bytes += n
        else:
            corrupted, labels = mask_tokens(ids, config.mask_token_id, config.vocab_size, config.mlm_probability,
                                            generator=gen, random_token_range=(0, tok.num_bytes))
            corrupted, labels = corrupted.to(device), labels.to(device)
            logits = model(input_ids=corrupted).logits.float()
            sel = labels != -100
            nll = torch.nn.functional.cross_entropy(logits[sel], labels[sel], reduction="sum")
            total_nats += float(nll)
            total_bytes += int(sel.sum())
            correct += int((logits[sel].argmax(-1) == labels[sel]).sum())
    out = {"eval_bpb": total_nats / max(1, total_bytes) / math.log(2)}
    if cfg.task == "mlm":
        out["eval_masked_acc"] = correct / max(1, total_bytes)
    return out


def _loss_fn(task: str):
    def loss_fn(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        if task == "causal":
            out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {"bpb": float(out.loss.detach()) / math.log(2)}

    return loss_fn


def _datasets(cfg: LMTrainConfig, config: LightNetLMConfig, corpus: TextCorpus) -> torch.utils.data.Dataset:
    if cfg.task == "causal":
        return CausalWindowDataset(corpus.train, cfg.data.seq_len, config.bos_token_id if cfg.data.add_bos else None,
                                   num_windows=cfg.data.epoch_windows)
    return MaskedWindowDataset(corpus.train, cfg.data.seq_len, config.mask_token_id, config.vocab_size,
                               config.mlm_probability, random_token_range=(0, ByteTokenizer.num_bytes),
                               num_windows=cfg.data.epoch_windows)


def _write_samples(model: LightNetForCausalLM, cfg: LMTrainConfig, path: Path) -> str:
    tok = ByteTokenizer()
    prompt = tok.encode(cfg.sample_prompt, add_bos=cfg.data.add_bos)
    greedy = model.generate([prompt], max_new_tokens=cfg.sample_tokens)
    sampled = model.generate([prompt], max_new_tokens=cfg.sample_tokens, do_sample=True, temperature=0.8, top_p=0.95,
                             seed=cfg.run.seed)
    text = (f"prompt: {cfg.sample_prompt!r}\n\n--- greedy ---\n{tok.decode(greedy[0].tolist())}\n\n"
            f"--- sampled (T=0.8, top_p=0.95, seed={cfg.run.seed}) ---\n{tok.decode(sampled[0].tolist())}\n")
    path.write_text(text)
    return text


def _plain_copy(cfg: LMTrainConfig, state: Dict[str, torch.Tensor], device: torch.device,
                training: bool) -> torch.nn.Module:
    """An unsharded model with the full weights ``state`` gathered from an FSDP-sharded one, on ``device`` and in
    the trained model's mode (for ``save_pretrained`` and sample generation on the main process, as the unsharded
    trained model would be used). Building it does not disturb the global random generators."""
    with torch.random.fork_rng(devices=[]):
        model = build_lm_model(cfg)
    model.load_state_dict(state)
    return model.to(device).train(training)


def train_lm(cfg: LMTrainConfig, resume_from: Optional[Union[str, Path]] = None, run_dir: Optional[Union[str, Path]] = None):
    """Train per ``cfg``; returns the engine's ``TrainResult`` (``metrics`` holds ``eval_bpb``).

    ``resume_from`` is a checkpoint folder; ``run_dir`` overrides where the run is written.
    """
    lm_config(cfg)  # fail on bad model keys before creating a run folder
    check_parallel(cfg)
    accelerator, run_path = start_run(cfg.run, cfg.name, run_dir)
    layout = parallel_layout(accelerator, cfg.parallel)
    seed_everything(cfg.run.seed)
    model = build_lm_model(cfg)
    if layout.group is not None:
        model.set_sequence_parallel_group(layout.group)
    corpus = load_corpus(cfg.data.paths, cfg.data.val_fraction)
    train_ds = _datasets(cfg, model.config, corpus)
    if accelerator.is_main_process:
        print(f"train-lm: {cfg.task} LightNet, {model.num_parameters() / 1e6:.2f} M parameters; {corpus.describe()}; "
              f"{accelerator.num_processes} process(es) (data {layout.data_world} x sequence "
              f"{layout.sequence_world}); run folder {run_path}")
    val = corpus.val

    def evaluate(m: torch.nn.Module) -> Dict[str, float]:
        return evaluate_bpb(m, val, cfg, accelerator.device)

    trainer = Trainer(cfg.run, accelerator, model, dataset=train_ds, batch_size=cfg.batch_size,
                      loss_fn=_loss_fn(cfg.task), optim=cfg.optim, sched=cfg.sched, run_dir=run_path, config=cfg,
                      evaluate_fn=evaluate, layout=layout)
    result = trainer.fit(resume_from=resume_from)
    if layout.group is not None:  # the trained model is saved and sampled whole, on the main process alone
        trainer.unwrapped().set_sequence_parallel_group(None)
    full_state = trainer.full_model_state() if trainer.sharded else None  # FSDP: a collective on every rank
    if accelerator.is_main_process:
        if full_state is None:
            final = trainer.unwrapped()
        else:  # FSDP: save and sample from an unsharded copy holding the gathered weights
            final = _plain_copy(cfg, full_state, accelerator.device, trainer.model.training)
        final.save_pretrained(run_path / "model")
        if cfg.task == "causal" and cfg.sample_tokens > 0:
            _write_samples(final, cfg, run_path / "samples.txt")
        print(f"train-lm: validation bits/byte {result.metrics.get('eval_bpb', float('nan')):.4f}; "
              f"model saved to {run_path / 'model'} (LightNetFor{'CausalLM' if cfg.task == 'causal' else 'MaskedLM'}"
              f".from_pretrained)")
    return result


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``lightnet train-lm``; returns the exit code (see :mod:`lightnet.train.entry`)."""
    from .entry import run_trainer_cli

    return run_trainer_cli(
        argv, prog="lightnet train-lm", config_cls=LMTrainConfig, default_recipe=DEFAULT_RECIPE, train_fn=train_lm,
        description="Train a causal or masked (MLM) LightNet language model on a text corpus; reports validation "
                    "bits per byte.",
        examples=["lightnet train-lm", "lightnet train-lm -c lm_mlm_pydoc run.max_steps=200",
                  "lightnet train-lm data.paths=[my_texts/] model.dim=512 run.mixed_precision=bf16",
                  "lightnet train-lm --resume runs/20250101-120000-lm_causal_pydoc"])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(train_main())
