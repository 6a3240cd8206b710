"""The Qwen2.5-VL processor for image + text prompts, without the video processor.

Qwen2VLProcessor also wants a video processor, which needs torchvision; our prompts hold images and no
video, so this subclass leaves it out. Images go through the PIL image processor (no torchvision either).
"""
from __future__ import annotations

from transformers import Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class ImageTextProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor(image_processor, tokenizer): tokenises prompts and patchifies their images."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    @classmethod
    def load(cls, folder: str) -> "ImageTextProcessor":
        """From a folder with preprocessor_config.json and tokenizer files (a diffusers processor/ or a
        transformers model folder)."""
        from transformers import AutoTokenizer
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
        return cls(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(folder,
                                                                                           local_files_only=True))


def build_processor(tokenizer, min_pixels: int, max_pixels: int) -> ImageTextProcessor:
    """Qwen2.5-VL's image processing (14-pixel patches, 2x2 merge, CLIP mean/std) resized into
    [min_pixels, max_pixels]."""
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    return ImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer)
