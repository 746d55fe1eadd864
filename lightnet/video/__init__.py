"""LightNet video models: :class:`LightNetVideo` (clips ``[B, C, T, H, W]``, one scan over ``(T, H, W)``), named sizes
(``create_video_model('lightnet_video_small')`` or ``timm.create_model('lightnet_video_small')``) and inflation from
image checkpoints."""
from .inflate import INFLATE_MODES, inflate_image_state_dict, inflate_patch_kernel
from .model import LightNetVideo
from .registry import VIDEO_MODELS, create_video_model

__all__ = ["INFLATE_MODES", "LightNetVideo", "VIDEO_MODELS", "create_video_model", "inflate_image_state_dict",
           "inflate_patch_kernel"]
