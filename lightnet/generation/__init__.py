"""Diffusion transformers with LightNet blocks, as diffusers models and pipelines."""
from .init import dit_paper_init
from .pipeline import LightNetDiTPipeline, null_class_of
from .transformer import DIT_PRESETS, LightNetDiTModel, list_presets
from .video_pipeline import LightNetVideoDiTPipeline, LightNetVideoPipelineOutput

__all__ = ["DIT_PRESETS", "LightNetDiTModel", "LightNetDiTPipeline", "LightNetVideoDiTPipeline",
           "LightNetVideoPipelineOutput", "dit_paper_init", "list_presets", "null_class_of"]
