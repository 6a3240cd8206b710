"""Qwen2.5-VL configs: small dataclasses whose `.build()` makes what they describe.

ModelConfig defaults are Qwen2.5-VL-7B-Instruct's sizes; TINY_MODEL keeps every structural feature (a causal
LM with multimodal RoPE, a windowed-attention ViT whose 2x2-merged patches become image tokens) at toy widths.
"""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Qwen2.5-VL: a causal LM with multimodal RoPE and a windowed-attention ViT whose 2x2-merged patches
    become the prompt's image tokens."""
    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    intermediate_size: int = 18944
    mrope_section: tuple[int, int, int] = (16, 24, 24)     # (t, h, w) rotary pairs; sums to head_dim / 2
    vision_depth: int = 32
    vision_hidden_size: int = 1280
    vision_heads: int = 16
    vision_intermediate_size: int = 3420
    vision_window_size: int = 112
    vision_full_attention_blocks: tuple[int, ...] = (7, 15, 23, 31)

    def build(self, tokenizer) -> torch.nn.Module:
        """Qwen2_5_VLForConditionalGeneration with random weights, its special ids taken from `tokenizer`."""
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
               ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        text = dict(vocab_size=len(tokenizer), hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                    num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
                    intermediate_size=self.intermediate_size, rms_norm_eps=1e-6,
                    rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=list(self.mrope_section)),
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"])
        vision = dict(depth=self.vision_depth, hidden_size=self.vision_hidden_size, num_heads=self.vision_heads,
                      intermediate_size=self.vision_intermediate_size, out_hidden_size=self.hidden_size,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=self.vision_window_size,
                      fullatt_block_indexes=list(self.vision_full_attention_blocks))
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                                  video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                                  vision_end_token_id=ids["<|vision_end|>"])
        return Qwen2_5_VLForConditionalGeneration(config)


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
    min_pixels: int = 56 * 56                            # the range an image is resized into (aspect ratio kept)
    max_pixels: int = 28 * 28 * 16384

    def build(self, tokenizer):
        from .processor import build_processor
        return build_processor(tokenizer, self.min_pixels, self.max_pixels)


TINY_MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                         mrope_section=(1, 1, 2), vision_depth=2, vision_hidden_size=32, vision_heads=2,
                         vision_intermediate_size=64, vision_window_size=56, vision_full_attention_blocks=(1,))
TINY_PROCESSOR = ProcessorConfig(min_pixels=28 * 28 * 4, max_pixels=112 * 112)
