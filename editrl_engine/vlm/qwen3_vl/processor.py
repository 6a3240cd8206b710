"""The Qwen3-VL processor for image + text prompts, without the video processor.

Qwen3VLProcessor also wants a video processor, which needs torchvision; our prompts hold images and no video, so
this subclass leaves it out. Images go through the PIL image processor (no torchvision either) with Qwen3-VL's
16-pixel patches, 2x2 merge and mean/std of 0.5.
"""
from __future__ import annotations

from transformers import Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class ImageTextProcessor(Qwen3VLProcessor):
    """Qwen3VLProcessor(image_processor, tokenizer): tokenises prompts (with mm_token_type_ids) and patchifies
    their images."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    @classmethod
    def load(cls, folder: str) -> "ImageTextProcessor":
        """From a folder with preprocessor_config.json (or processor_config.json) and tokenizer files."""
        from transformers import AutoTokenizer
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
        return cls(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(folder,
                                                                                           local_files_only=True))


def build_processor(tokenizer, min_pixels: int, max_pixels: int) -> ImageTextProcessor:
    """Qwen3-VL's image processing resized into [min_pixels, max_pixels]."""
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=16,
                                               merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5],
                                               image_std=[0.5, 0.5, 0.5])
    return ImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer)
