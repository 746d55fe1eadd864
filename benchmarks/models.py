"""Models end to end, LightNet beside its peer in one process: training throughput, inference latency, memory.

``vision``: timm ``lightnet_small`` vs ``vit_small_patch16_224`` (both ``dynamic_img_size=True``): images/s of a
training step (forward + backward + fused AdamW, bf16 autocast) and its peak memory at 224 / 512 / 1024 / 2048 px,
then inference latency at batch 1 and 64 (224 px), for every ``--compile-mode`` (``eager``; a ``torch.compile``
mode, each model compiled the same way with static shapes).
``dit``: LightNet-DiT-B/2 vs diffusers' ``DiTTransformer2DModel`` B/2 on SD-VAE latents (image / 8, 4 channels,
learned sigma, 1000 classes): a training step (ε-MSE, AdamW, bf16) and one denoising step with classifier-free
guidance (batch 2, inference mode) at 256 / 512 / 1024 px.
``seg``: smp's DPT decoder (its default widths, 11 classes) on ``lightnet_small`` vs ``vit_small_patch16_224``
encoders (:func:`lightnet.vision.segmentation.create_segmentation_model`, same decoder for both): a training step
(per-pixel cross-entropy, AdamW, bf16 autocast) and its peak memory at 512 / 1024 px (1,024 / 4,096 tokens).
``video``: clip classifiers ``[B, 3, T, 224, 224]`` (tubelet 2 × 16 × 16, width 384, depth 12, 6 heads, 400 classes;
:mod:`experiments.video_models`): LightNet video (``lightnet_video_small``: one scan over T·H·W) vs a joint
space-time ViT-S (timm blocks) vs the 6-scan multiplicative-decay model (± along T, H, W; PyTorch chunked scan, chunk
64): a training step (cross-entropy, AdamW, bf16 autocast) and its peak memory at 8 and 16 frames (784 / 1,568 tokens).
``stats``: parameters and forward FLOPs (``torch.utils.flop_counter``, batch 1; ViT's attention products counted
through timm's explicit attention; norms, activations and MD-TPE's FFT not counted), CPU.
``--profile`` adds, per model and size, the GPU time of one training step by kernel category (torch.profiler).

    python benchmarks/models.py vision --compile-mode reduce-overhead --fullgraph --out $OUT/vision
    python benchmarks/models.py vision --compile-mode eager default --out $OUT/vision_eager
    python benchmarks/models.py dit --compile-mode reduce-overhead --out $OUT/dit
    python benchmarks/models.py seg --compile-mode eager default --out $OUT/seg
    python benchmarks/models.py video --compile-mode eager --out $OUT/video
    python benchmarks/models.py stats --img-size 224 512 1024
    python benchmarks/models.py vision --smoke                      # CPU, seconds (also: dit --smoke)
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import (  # noqa: E402
    COMPILE_MODES, Row, cell, compile_model, environment, log, md_table, parser, peak_gib, pick, ratio, reset_peak,
    step_begin, time_calls, write_result,
)

VISION = ("lightnet_small", "vit_small_patch16_224")
SEG_CLASSES = 11
DIT = ("LightNet-DiT-B/2", "DiT-B/2")
VIDEO = ("lightnet", "vit", "scan6")  # experiments.video_models variants
VIDEO_CLASSES = 400
STATS_MODELS = ("lightnet_tiny", "vit_tiny_patch16_224", "lightnet_small", "vit_small_patch16_224", "lightnet_base",
                "vit_base_patch16_224", "lightnet_small_patch8", "vit_small_patch8_224")
VAE_FACTOR, LATENT_CHANNELS, NUM_CLASSES = 8, 4, 1000
# kernel name → category (first match wins); inductor names its kernels after the aten ops they fuse
CATEGORIES: Tuple[Tuple[str, str], ...] = (
    ("LightNet recurrence", r"^_(nc|c|z)_|lightnet|additive"), ("softmax attention", r"flash|fmha|attention|sdpa"),
    ("GEMM", r"gemm|cutlass|nvjet|cublas|xmma|wgmma|sm\d+_|_mm_|^triton_tem_fused_(mm|addmm|bmm)"), ("FFT", r"fft"),
    ("optimizer", r"adam|foreach|multi_tensor"), ("normalisation", r"rms_norm|layer_norm|rmsnorm|layernorm"),
    ("fused elementwise (inductor)", r"^triton_(poi|red|per)_"),
    ("copies / layout", r"copy|cat|transpose|permute|contiguous|memcpy|memset|fill"),
    ("elementwise (aten)", r"elementwise|vectorized|unrolled|reduce"),
)


def categorize(name: str) -> str:
    return next((c for c, pattern in CATEGORIES if re.search(pattern, name if pattern[1] == "_" else name.lower())),
                "other")


def profile_step(step: Callable[[], None]) -> Dict[str, float]:
    """GPU ms of one call of ``step`` by kernel category (after the caller's warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    out: Dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", 0.0) or 0.0
        if us > 0:
            out[categorize(evt.key)] += us / 1e3
    return dict(out)


def measure(row: Row, build: Callable[[], torch.nn.Module], make_step: Callable, device: torch.device,
            args, train: bool) -> Row:
    """Time ``make_step(model, mode)`` (a zero-argument step) for the row's mode; OOM is a status, not a crash."""
    model = None
    try:
        reset_peak(device)
        model = compile_model(build().to(device).train(train), row["mode"], args.fullgraph, args.compile_backend)
        step = make_step(model, row["mode"])
        first, median = time_calls(step, device, args.warmup, args.iters)
        row.update(ms=1e3 * median, first_s=first, peak_gib=peak_gib(device), status="ok")
        if args.profile and device.type == "cuda":
            row["gpu_ms_by_category"] = profile_step(step)
    except torch.OutOfMemoryError:
        row.update(status="OOM")
    finally:
        del model
        reset_peak(device)
    log(row)
    return row


def train_step(model: torch.nn.Module, mode: str, inputs: Tuple, loss_fn: Callable, device: torch.device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step() -> None:
        step_begin(mode)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model, *inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def infer_step(model: torch.nn.Module, mode: str, call: Callable, device: torch.device):
    def step() -> None:
        step_begin(mode)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            call(model)
    return step


def measure_classifier_train(row: Row, build: Callable[[], torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                             device: torch.device, args, per_s: str) -> Row:
    """:func:`measure` of a cross-entropy training step on ``(x, y)`` (logits in fp32; per-pixel targets too), with
    the samples per second under ``row[per_s]`` (NaN unless the step ran)."""
    loss = lambda m_, x_, y_: F.cross_entropy(m_(x_).float(), y_)  # noqa: E731
    row = measure(row, build, lambda m, md: train_step(m, md, (x, y), loss, device), device, args, True)
    row[per_s] = x.shape[0] / row["ms"] * 1e3 if row["status"] == "ok" else float("nan")
    return row


def run_vision(args, device: torch.device) -> List[Row]:
    import timm

    import lightnet  # noqa: F401  registers the lightnet_* models with timm

    rows = []
    build = lambda name: lambda: timm.create_model(name, dynamic_img_size=True, num_classes=1000,  # noqa: E731
                                                   **args.model_kwargs)
    for mode in args.compile_mode:
        for size, batch in zip(args.sizes, args.batches):
            x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 1000, (batch,), device=device)
            for name in args.models:
                rows.append(measure_classifier_train(dict(kind="train", model=name, size=size, batch=batch, mode=mode),
                                                     build(name), x, y, device, args, "img_per_s"))
        for batch in args.latency_batches:
            x = torch.randn(batch, 3, args.latency_size, args.latency_size, device=device)
            for name in args.models:
                rows.append(measure(dict(kind="latency", model=name, size=args.latency_size, batch=batch, mode=mode),
                                    build(name), lambda m, md: infer_step(m, md, lambda m_: m_(x), device), device,
                                    args, False))
    return rows


def build_dit(name: str, latent: int, **overrides: int) -> torch.nn.Module:
    """``LightNet-DiT-{S,B,L,XL}/p`` or diffusers' ``DiT-{S,B,L,XL}/p`` of the same shape, on 4-channel latents
    (``overrides``: preset fields, e.g. ``num_layers``)."""
    from lightnet.generation import DIT_PRESETS, LightNetDiTModel

    preset = dict(DIT_PRESETS[name if name.startswith("LightNet-") else f"LightNet-{name}"], **overrides)
    common = dict(in_channels=LATENT_CHANNELS, out_channels=2 * LATENT_CHANNELS, sample_size=latent)
    if name.startswith("LightNet-"):
        return LightNetDiTModel(**preset, **common, num_classes=NUM_CLASSES)
    from diffusers.models import DiTTransformer2DModel

    return DiTTransformer2DModel(num_layers=preset["num_layers"], num_attention_heads=preset["num_attention_heads"],
                                 attention_head_dim=preset["hidden_size"] // preset["num_attention_heads"],
                                 patch_size=preset["patch_size"], num_embeds_ada_norm=NUM_CLASSES, **common)


def dit_loss(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x, timestep=t, class_labels=y).sample
    return F.mse_loss(out[:, :LATENT_CHANNELS].float(), x.float())


def run_seg(args, device: torch.device) -> List[Row]:
    from lightnet.vision.segmentation import create_segmentation_model

    rows = []
    for mode in args.compile_mode:
        for size, batch in zip(args.sizes, args.batches):
            g = torch.Generator(device=device).manual_seed(size)
            x = torch.randn(batch, 3, size, size, device=device, generator=g)
            y = torch.randint(0, SEG_CLASSES, (batch, size, size), device=device, generator=g)
            for name in args.models:
                build = lambda name=name: create_segmentation_model(  # noqa: E731
                    name, SEG_CLASSES, 3, encoder_kwargs=args.model_kwargs, decoder_kwargs=args.decoder_kwargs)
                rows.append(measure_classifier_train(dict(kind="train", model=name, size=size, batch=batch, mode=mode),
                                                     build, x, y, device, args, "img_per_s"))
    return rows


def run_video(args, device: torch.device) -> List[Row]:
    """Training steps of the video variants at ``args.sizes`` frames of ``args.video_px`` px (rows keyed by frames)."""
    from experiments.video_models import VideoSize, build_video_classifier

    rows = []
    for mode in args.compile_mode:
        for frames, batch in zip(args.sizes, args.batches):
            geometry = VideoSize(img_size=args.video_px, num_frames=frames, in_chans=3, num_classes=VIDEO_CLASSES,
                                 **args.video_size)
            tokens = (frames // geometry.tubelet_size) * (args.video_px // geometry.patch_size) ** 2
            g = torch.Generator(device=device).manual_seed(frames)
            x = torch.randn(batch, 3, frames, args.video_px, args.video_px, device=device, generator=g)
            y = torch.randint(0, VIDEO_CLASSES, (batch,), device=device, generator=g)
            for name in args.models:
                options = dict(backend="torch", chunk_size=args.scan_chunk) if name == "scan6" else {}
                build = lambda name=name, options=options: build_video_classifier(  # noqa: E731
                    name, geometry, **options)
                row = dict(kind="train", model=name, size=frames, px=args.video_px, tokens=tokens, batch=batch,
                           mode=mode)
                rows.append(measure_classifier_train(row, build, x, y, device, args, "clips_per_s"))
    return rows


def render_video(rows: List[Row], args) -> str:
    """One table per mode: clips/s and peak GiB of every variant, and LightNet's speed over each peer's."""
    ours, peers = args.models[0], args.models[1:]
    parts = []
    for mode in args.compile_mode:
        at = [r for r in rows if r["mode"] == mode]
        lines = []
        for frames, batch in dict.fromkeys((r["size"], r["batch"]) for r in at):
            got = {m: pick(at, model=m, size=frames, batch=batch) for m in args.models}
            lines.append((frames, got[ours].get("tokens", "—"), batch,
                          *[cell(got[m], "clips_per_s", ".1f") for m in args.models],
                          *[ratio(got[ours].get("clips_per_s", float("nan")), got[p].get("clips_per_s", float("nan")))
                            for p in peers],
                          *[cell(got[m], "peak_gib", ".2f") for m in args.models]))
        parts.append(f"### video training step, {mode}, bf16 autocast ({args.video_px} px)\n\n" + md_table(
            ["frames", "tokens", "batch", *[f"{m} clips/s" for m in args.models],
             *[f"{ours} / {p} speed" for p in peers], *[f"{m} GiB" for m in args.models]], lines))
    return "\n\n".join(parts)


def run_dit(args, device: torch.device) -> List[Row]:
    rows = []
    for mode in args.compile_mode:
        for size, batch in zip(args.sizes, args.batches):
            latent = size // VAE_FACTOR
            g = torch.Generator(device=device).manual_seed(size)
            for kind, b in (("train", batch), ("denoise", 2)):
                x = torch.randn(b, LATENT_CHANNELS, latent, latent, device=device, generator=g)
                t = torch.randint(0, 1000, (b,), device=device, generator=g)
                y = torch.randint(0, NUM_CLASSES, (b,), device=device, generator=g)
                for name in args.models:
                    make = ((lambda m, md: train_step(m, md, (x, t, y), dit_loss, device)) if kind == "train" else
                            (lambda m, md: infer_step(m, md, lambda m_: m_(x, timestep=t, class_labels=y), device)))
                    rows.append(measure(dict(kind=kind, model=name, size=size, latent=latent, batch=b, mode=mode),
                                        lambda: build_dit(name, latent, **args.model_kwargs), make, device, args, kind == "train"))
    return rows


def run_stats(args) -> List[Row]:
    import timm
    from timm.layers import set_fused_attn
    from torch.utils.flop_counter import FlopCounterMode

    import lightnet  # noqa: F401

    set_fused_attn(False)  # count the ViT peers' attention products (the CPU SDPA kernel is invisible to the counter)
    rows = []
    for size in args.img_size:
        for name in args.models:
            model = timm.create_model(name, img_size=size).eval()
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(torch.randn(1, 3, size, size))
            rows.append(dict(kind="stats", model=name, size=size, params_m=sum(p.numel() for p in model.parameters())
                             / 1e6, gmacs=counter.get_total_flops() / 2e9))
            log(rows[-1])
    return rows


def render(rows: List[Row], args) -> str:
    if args.part == "video":
        return render_video(rows, args)
    if args.part == "stats":
        return md_table(["model", "image px", "params (M)", "GMACs"],
                        [(r["model"], r["size"], f"{r['params_m']:.2f}", f"{r['gmacs']:.2f}") for r in rows])
    ours, peer = args.models
    parts = []
    for mode in args.compile_mode:
        for kind in dict.fromkeys(r["kind"] for r in rows):
            at = [r for r in rows if r["mode"] == mode and r["kind"] == kind]
            lines = []
            for size, batch in dict.fromkeys((r["size"], r["batch"]) for r in at):
                a, b = (pick(at, model=m, size=size, batch=batch) for m in (ours, peer))
                speed = (cell(a, "img_per_s", ".1f"), cell(b, "img_per_s", ".1f"),
                         ratio(a.get("img_per_s", float("nan")), b.get("img_per_s", float("nan")))) \
                    if "img_per_s" in a or "img_per_s" in b else ()
                lines.append((size, batch, cell(a, "ms", ".2f"), cell(b, "ms", ".2f"),
                              ratio(a.get("ms", float("nan")), b.get("ms", float("nan"))), *speed,
                              cell(a, "peak_gib", ".2f"), cell(b, "peak_gib", ".2f"),
                              ratio(a.get("peak_gib", float("nan")), b.get("peak_gib", float("nan")))))
            speed_head = ([f"{ours} img/s", f"{peer} img/s", "speed ratio"]
                          if kind == "train" and args.part in ("vision", "seg") else [])
            parts.append(f"### {kind} step, {mode}, bf16 autocast\n\n" + md_table(
                ["image px", "batch", f"{ours} ms", f"{peer} ms", "time ratio", *speed_head, f"{ours} GiB",
                 f"{peer} GiB", "memory ratio"], lines))
    profiled = [r for r in rows if "gpu_ms_by_category" in r]
    if profiled:
        cats = sorted({c for r in profiled for c in r["gpu_ms_by_category"]})
        parts.append("### GPU ms per step by kernel category (torch.profiler, one step)\n\n" + md_table(
            ["category"] + [f"{r['model']} {r['kind']} {r['size']} {r['mode']}" for r in profiled],
            [[c] + [f"{r['gpu_ms_by_category'].get(c, 0.0):.2f}" for r in profiled] for c in cats]
            + [["**GPU busy**"] + [f"**{sum(r['gpu_ms_by_category'].values()):.2f}**" for r in profiled]]))
    return "\n\n".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("part", choices=("vision", "seg", "dit", "video", "stats"))
    p.add_argument("--models", nargs="+", default=None,
                   help="LightNet model, then its peer (video: variants of experiments.video_models, LightNet first)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (px); video: frames per clip")
    p.add_argument("--video-px", type=int, default=224, help="video: frame size (px)")
    p.add_argument("--scan-chunk", type=int, default=64, help="video: the 6-scan model's chunk length")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="training batch per size")
    p.add_argument("--compile-mode", nargs="+", choices=COMPILE_MODES, default=None,
                   help="eager and/or torch.compile modes, each runs every row (default: eager default; smoke: eager)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager': dynamo alone)")
    p.add_argument("--fullgraph", action="store_true", help="a graph break is an error instead of a split")
    p.add_argument("--latency-size", type=int, default=224)
    p.add_argument("--latency-batches", type=int, nargs="*", default=[1, 64])
    p.add_argument("--img-size", type=int, nargs="+", default=[224], help="stats: image sizes")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="GPU time of one step by kernel category")
    args = p.parse_args(argv)
    vision, seg, video = args.part == "vision", args.part == "seg", args.part == "video"
    args.models = args.models or (list(VISION) if vision or seg else list(DIT) if args.part == "dit"
                                  else list(VIDEO) if video else list(STATS_MODELS))
    if args.part in ("vision", "seg", "dit") and len(args.models) != 2:
        p.error(f"{args.part}: --models takes two names (LightNet, then its peer), got {args.models}")
    if video and (args.models[0] != "lightnet" or not set(args.models) <= set(VIDEO)):
        p.error(f"video: --models are variants of {list(VIDEO)} with 'lightnet' first, got {args.models}")
    args.sizes = args.sizes or ([224, 512, 1024, 2048] if vision else [512, 1024] if seg else [8, 16] if video
                                else [256, 512, 1024])
    args.batches = args.batches or ([128, 32, 8, 2] if vision else [16, 4] if seg else [16, 8] if video
                                    else [32, 8, 2])
    args.video_size = dict(patch_size=16, tubelet_size=2, embed_dim=384, depth=12, num_heads=6, mlp_ratio=8 / 3)
    args.compile_mode = args.compile_mode or (["eager"] if args.smoke else ["eager", "default"])
    args.model_kwargs, args.decoder_kwargs = {}, {}
    if args.smoke and seg:  # 4 narrow blocks (DPT reads 4), a narrow decoder, 64 px
        args.model_kwargs = dict(depth=4, embed_dim=64, num_heads=2)
        args.decoder_kwargs = dict(decoder_intermediate_channels=(16, 32, 32, 32), decoder_fusion_channels=16)
        args.device, args.warmup, args.iters = "cpu", 1, 1
        args.sizes, args.batches = [64], [2]
    elif args.smoke and video:  # 2 narrow blocks, 4 frames of 32 px (tubelet 2 × 8 × 8: 32 tokens)
        args.video_size = dict(patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
        args.device, args.warmup, args.iters, args.video_px, args.scan_chunk = "cpu", 1, 1, 32, 8
        args.sizes, args.batches = [4], [2]
    elif args.smoke:  # small models (2 blocks) at a tiny size: the script's plumbing, not its numbers
        args.model_kwargs = dict(depth=2) if vision else dict(num_layers=2, hidden_size=64, num_attention_heads=2)
        args.device, args.warmup, args.iters, args.latency_batches = "cpu", 1, 1, [1]
        args.sizes, args.batches, args.img_size = [32 if vision else 64], [2], [32]
        args.latency_size = 32
        if args.part == "dit":
            args.models = ["LightNet-DiT-S/2", "DiT-S/2"]
        if args.part == "stats":
            args.models = ["lightnet_tiny", "vit_tiny_patch16_224"]
    if len(args.batches) == 1:
        args.batches *= len(args.sizes)
    if len(args.batches) != len(args.sizes):
        p.error(f"--batches needs one value or one per size ({len(args.sizes)}), got {len(args.batches)}")
    if args.part == "dit" and any(s % (VAE_FACTOR * 2) for s in args.sizes):
        p.error(f"dit: image sizes must be multiples of {VAE_FACTOR} × the patch (2), got {args.sizes}")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    env = environment(device)
    rows = (run_stats(args) if args.part == "stats" else run_vision(args, device) if vision
            else run_seg(args, device) if seg else run_video(args, device) if video else run_dit(args, device))
    write_result(args.out, f"models_{args.part}", env, args, rows, render(rows, args))
    return 0 if all(r.get("status", "ok") in ("ok", "OOM") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
