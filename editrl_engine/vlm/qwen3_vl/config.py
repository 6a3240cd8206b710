"""Qwen3-VL configs: small dataclasses whose `.build()` makes what they describe.

ModelConfig defaults are Qwen3-VL-8B-Instruct's sizes; TINY_MODEL keeps every structural feature (a causal LM
with interleaved multimodal RoPE and QK-norm, a ViT with learnt position embeddings whose 2x2-merged 16-pixel
patches become image tokens, and deepstack features from inner ViT blocks added to the first LM layers) at toy
widths.
"""
from __future__ import annotations

import dataclasses

import torch

from .support import require_qwen3_vl


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Qwen3-VL: a causal LM with interleaved multimodal RoPE and a ViT whose merged patches become the prompt's
    image tokens; features of the `vision_deepstack_blocks` are added to the first LM layers' hidden states."""
    hidden_size: int = 4096
    num_layers: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 12288
    rope_theta: float = 5e6
    mrope_section: tuple[int, int, int] = (24, 20, 20)     # (t, h, w) rotary pairs; sums to head_dim / 2
    tie_word_embeddings: bool = False
    vision_depth: int = 27
    vision_hidden_size: int = 1152
    vision_heads: int = 16
    vision_intermediate_size: int = 4304
    vision_position_embeddings: int = 2304                 # a square grid (48 x 48), interpolated to each image
    vision_deepstack_blocks: tuple[int, ...] = (8, 16, 24)

    def build(self, tokenizer) -> torch.nn.Module:
        """Qwen3VLForConditionalGeneration with random weights, its special ids taken from `tokenizer`."""
        require_qwen3_vl()
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
               ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        text = dict(vocab_size=len(tokenizer), hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                    num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
                    intermediate_size=self.intermediate_size, rms_norm_eps=1e-6,
                    rope_parameters=dict(rope_type="default", rope_theta=self.rope_theta,
                                         mrope_section=list(self.mrope_section), mrope_interleaved=True),
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=self.tie_word_embeddings)
        vision = dict(depth=self.vision_depth, hidden_size=self.vision_hidden_size, num_heads=self.vision_heads,
                      intermediate_size=self.vision_intermediate_size, out_hidden_size=self.hidden_size,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=self.vision_position_embeddings,
                      deepstack_visual_indexes=list(self.vision_deepstack_blocks))
        config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                               video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                               vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=self.tie_word_embeddings)
        return Qwen3VLForConditionalGeneration(config)


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
    min_pixels: int = 256 * 256                          # the range an image is resized into (aspect ratio kept)
    max_pixels: int = 32 * 32 * 16384

    def build(self, tokenizer):
        from .processor import build_processor
        return build_processor(tokenizer, self.min_pixels, self.max_pixels)


TINY_MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64,
                         mrope_section=(2, 1, 1), vision_depth=2, vision_hidden_size=32, vision_heads=2,
                         vision_intermediate_size=64, vision_position_embeddings=64, vision_deepstack_blocks=(0, 1))
TINY_PROCESSOR = ProcessorConfig(min_pixels=32 * 32 * 4, max_pixels=128 * 128)
