"""``lightnet sample``: images from a saved diffusion pipeline folder, as a PNG grid and individual PNGs.

``lightnet sample --pipeline RUN/pipeline [--labels 0 3 7 | --per-class 8] [--guidance 4] [--steps 50]
[--scheduler ddim|ddpm|dpm] [--height H --width W] [--seed 0] [--out DIR]``

Writes ``DIR/grid.png`` (one row per class when sampling per class) and ``DIR/images/<i>_class<c>.png``. For a video
pipeline (:class:`~lightnet.generation.LightNetVideoDiTPipeline`, ``[--frames T]``) it writes ``DIR/grid.png`` (one row
of frames per clip) and ``DIR/clips/<i>_class<c>.gif``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

__all__ = ["AUTOCAST_DTYPES", "SCHEDULERS", "autocast_dtype", "is_video_pipeline", "load_pipeline", "sample_clips",
           "sample_images", "sample_main", "save_gif", "save_grid", "save_clip_grid", "set_scheduler"]

SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


def set_scheduler(pipe, name: str) -> None:
    """Swap ``pipe.scheduler`` for the named one (``ddpm``, ``ddim``, ``dpm``, ``euler``) with the same betas."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def load_pipeline(path: str | Path, device: str | torch.device = "cpu"):
    """Load a :class:`~lightnet.generation.LightNetDiTPipeline` (or, for a video model, a
    :class:`~lightnet.generation.LightNetVideoDiTPipeline`) folder written by ``lightnet train-dit`` or
    ``save_pretrained``."""
    from lightnet.generation import LightNetDiTPipeline, LightNetVideoDiTPipeline
    from lightnet.generation.pipeline import saved_pipeline_class_name

    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a saved pipeline folder (no model_index.json); pass the 'pipeline' "
                                f"folder of a train-dit run")
    name = saved_pipeline_class_name(path)
    cls = LightNetVideoDiTPipeline if name == LightNetVideoDiTPipeline.__name__ else LightNetDiTPipeline
    return cls.from_pretrained(path).to(device)


def is_video_pipeline(pipe) -> bool:
    """True for a pipeline whose transformer samples clips (``config.num_frames`` set)."""
    return getattr(pipe.transformer.config, "num_frames", None) is not None


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """``'bf16'`` / ``'fp16'`` → the torch dtype; ``None`` / ``'no'`` → None (full precision)."""
    if name in (None, "no"):
        return None
    if name not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown autocast dtype {name!r}; choose one of {sorted(AUTOCAST_DTYPES)} or 'no'")
    return AUTOCAST_DTYPES[name]


def sample_images(pipe, labels: Sequence[int], batch_size: int = 256, seed: int = 0, guidance_scale: float = 4.0,
                  num_inference_steps: int = 50, height: Optional[int] = None, width: Optional[int] = None,
                  progress: bool = True, autocast: Optional[str] = None) -> torch.Tensor:
    """Generate one image per label in batches: ``[N, C, H, W]`` float in [0, 1] on the CPU.

    Batch ``b`` uses a generator seeded with ``seed + b``, so results do not depend on anything else drawn before.
    ``autocast`` (``'bf16'`` / ``'fp16'``) runs the transformer under ``torch.autocast`` (weights, noise and the
    scheduler's update stay in full precision); ``None`` runs everything in the pipeline's dtype.
    """
    from tqdm.auto import tqdm

    dtype = autocast_dtype(autocast)
    device = pipe._execution_device
    out = []
    pipe.set_progress_bar_config(disable=True)
    chunks = [list(labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]
    for b, chunk in enumerate(tqdm(chunks, desc="sampling", disable=not progress or len(chunks) < 2)):
        gen = torch.Generator(device=device).manual_seed(seed + b)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            images = pipe(chunk, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                          height=height, width=width, generator=gen, output_type="pt").images
        out.append(images.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def sample_clips(pipe, labels: Sequence[int], batch_size: int = 64, seed: int = 0, guidance_scale: float = 4.0,
                 num_inference_steps: int = 50, num_frames: Optional[int] = None, height: Optional[int] = None,
                 width: Optional[int] = None) -> torch.Tensor:
    """One clip per label in batches: ``[N, T, C, H, W]`` float in [0, 1] on the CPU (batch ``b`` seeded with
    ``seed + b``)."""
    device = pipe._execution_device
    pipe.set_progress_bar_config(disable=True)
    out = []
    for b, i in enumerate(range(0, len(labels), batch_size)):
        gen = torch.Generator(device=device).manual_seed(seed + b)
        frames = pipe(list(labels[i:i + batch_size]), guidance_scale=guidance_scale,
                      num_inference_steps=num_inference_steps, num_frames=num_frames, height=height, width=width,
                      generator=gen, output_type="pt").frames
        out.append(frames.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def save_clip_grid(clips: torch.Tensor, path: str | Path) -> Path:
    """Save clips ``[N, T, C, H, W]`` in [0, 1] as one PNG: row ``i`` holds the ``T`` frames of clip ``i``."""
    return save_grid(clips.flatten(0, 1), path, nrow=clips.shape[1])


def save_gif(clip: torch.Tensor, path: str | Path, fps: float = 4.0, scale: int = 1) -> Path:
    """Save one clip ``[T, C, H, W]`` in [0, 1] as a looping GIF (frames enlarged ``scale`` times, nearest)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [T, H, W, C]
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    frames = [Image.fromarray(f[..., 0] if mode == "L" else f, mode=mode) for f in arr]
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """Save ``[N, C, H, W]`` images in [0, 1] as one PNG grid with ``nrow`` images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=max(1, nrow), padding=2, pad_value=1.0)
    return path


def _labels(args: argparse.Namespace, num_classes: int) -> list[int]:
    if args.labels:
        return list(args.labels)
    return [c for c in range(num_classes) for _ in range(args.per_class)]


def sample_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet sample``."""
    from torchvision.utils import save_image

    from .entry import HelpFormatter

    p = argparse.ArgumentParser(prog="lightnet sample", formatter_class=HelpFormatter,
                                description="Sample images from a saved LightNet-DiT pipeline folder.")
    p.add_argument("--pipeline", "-p", required=True, help="pipeline folder (RUN_DIR/pipeline of lightnet train-dit)")
    p.add_argument("--labels", type=int, nargs="*", default=None, help="class labels to sample (default: all classes)")
    p.add_argument("--per-class", type=int, default=8, help="images per class when --labels is not given")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (<= 1: off)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps")
    p.add_argument("--scheduler", default="ddim", choices=sorted(SCHEDULERS), help="sampling scheduler")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (default: the training size)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (default: the training size)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=256, help="images per sampling batch")
    p.add_argument("--frames", type=int, default=None, help="clip length of a video pipeline (default: the training one)")
    p.add_argument("--fps", type=float, default=4.0, help="GIF frame rate of a video pipeline")
    p.add_argument("--autocast", default="no", choices=["no", *AUTOCAST_DTYPES],
                   help="run the transformer under torch.autocast in this dtype (meant for GPUs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--out", default="samples", help="output folder (grid.png and images/)")
    args = p.parse_args(argv)
    try:
        pipe = load_pipeline(args.pipeline, args.device)
        set_scheduler(pipe, args.scheduler)
        labels = _labels(args, pipe.num_classes)
        if is_video_pipeline(pipe):
            clips = sample_clips(pipe, labels, args.batch_size, args.seed, args.guidance, args.steps, args.frames,
                                 args.height, args.width)
            return _write_clips(clips, labels, Path(args.out), args.fps)
        if args.frames is not None:
            raise ValueError("--frames applies to video pipelines; this one samples images")
        images = sample_images(pipe, labels, args.batch_size, args.seed, args.guidance, args.steps, args.height,
                               args.width, autocast=args.autocast)
    except (FileNotFoundError, ValueError) as e:
        print(f"lightnet sample: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        save_image(img, str(out / "images" / f"{i:05d}_class{label}.png"))
    nrow = args.per_class if not args.labels else min(len(labels), 10)
    grid = save_grid(images, out / "grid.png", nrow)
    print(f"wrote {len(labels)} images to {out / 'images'} and the grid {grid}")
    return 0


def _write_clips(clips: torch.Tensor, labels: Sequence[int], out: Path, fps: float) -> int:
    for i, (clip, label) in enumerate(zip(clips, labels)):
        save_gif(clip, out / "clips" / f"{i:05d}_class{label}.gif", fps=fps, scale=max(1, 64 // clip.shape[-1]))
    grid = save_clip_grid(clips, out / "grid.png")
    print(f"wrote {len(labels)} clips ({clips.shape[1]} frames) to {out / 'clips'} and the frame grid {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(sample_main())
