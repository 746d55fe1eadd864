"""Named video models: ``lightnet_video_{tiny,small,base}`` in timm's registry (``timm.create_model``, registered on
``import lightnet``) and :func:`create_video_model`, which needs no timm registry lookup."""
from __future__ import annotations

from typing import Any, Callable, Dict

from timm.models import generate_default_cfgs, register_model

from ..vision.lightnet_vit import pretrained_cfg
from .model import LightNetVideo

__all__ = ["VIDEO_MODELS", "create_video_model"]

#: name → architecture arguments (tubelet 2 × 16 × 16 at 16 × 224², as ViViT / VideoMAE; heads of 64)
VIDEO_MODELS: Dict[str, Dict[str, Any]] = {
    "lightnet_video_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "lightnet_video_small": dict(embed_dim=384, depth=12, num_heads=6),
    "lightnet_video_base": dict(embed_dim=768, depth=12, num_heads=12),
    "test_lightnet_video": dict(img_size=32, num_frames=4, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                                mlp_ratio=2.0, num_classes=10),
}


def create_video_model(name: str, **kwargs: Any) -> LightNetVideo:
    """``LightNetVideo`` of a named size; ``kwargs`` override its arguments (``num_classes``, ``img_size``, ...)."""
    if name not in VIDEO_MODELS:
        import difflib

        close = difflib.get_close_matches(name, VIDEO_MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown LightNet video model {name!r}{hint}; choose one of {list(VIDEO_MODELS)}")
    return LightNetVideo(**{**VIDEO_MODELS[name], **kwargs})


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """timm pretrained config of an (untrained) video model: ``input_size`` is ``(C, T, H, W)``."""
    video = dict(num_classes=400, input_size=(3, 16, 224, 224), pool_size=None, crop_pct=0.875,
                 fixed_input_size=False)  # any T, H, W that are multiples of the tubelet
    return pretrained_cfg(**{**video, **kwargs})


#: read by timm's ``register_model`` (``timm.get_pretrained_cfg(name)``, ``model.pretrained_cfg``)
default_cfgs = generate_default_cfgs({
    "lightnet_video_tiny.untrained": _cfg(),
    "lightnet_video_small.untrained": _cfg(),
    "lightnet_video_base.untrained": _cfg(),
    "test_lightnet_video.untrained": _cfg(input_size=(3, 4, 32, 32), num_classes=10),
})


def _timm_entrypoint(name: str) -> Callable[..., LightNetVideo]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> LightNetVideo:
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        if pretrained:
            raise ValueError(f"{name}: no pretrained weights are published; load a saved folder with "
                             "LightNetVideo.from_pretrained(path) or inflate an image model with "
                             "LightNetVideo.from_image_checkpoint(...)")
        return create_video_model(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"LightNet video classifier {name}: {VIDEO_MODELS[name]}."
    entrypoint.__module__ = __name__
    return entrypoint


for _name in VIDEO_MODELS:
    globals()[_name] = register_model(_timm_entrypoint(_name))
