"""Qwen-Image-Edit model configs: small dataclasses whose `.build()` makes what they describe.

The defaults are the published Qwen-Image-Edit sizes (a 60-layer MMDiT of 20B parameters, the Wan-style video
VAE with 16 latent channels, Qwen2.5-VL-7B-Instruct as the text encoder); those weights load from a local
diffusers folder (components.py). PRESETS["tiny"] keeps every structural feature (2x2 packing to 64 channels,
16-channel VAE with its latent statistics, Qwen2.5-VL with a vision tower, multimodal RoPE) at toy widths, with
random weights and a tokenizer made in code.
"""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    num_layers: int = 60
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    joint_attention_dim: int = 3584                     # = the text encoder's hidden size
    in_channels: int = 64                               # 4 x VAE z_dim (2x2 patches)
    out_channels: int = 16                              # VAE z_dim
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)     # (frame, height, width); sums to attention_head_dim

    def build(self) -> torch.nn.Module:
        from diffusers import QwenImageTransformer2DModel
        return QwenImageTransformer2DModel(
            patch_size=2, in_channels=self.in_channels, out_channels=self.out_channels, num_layers=self.num_layers,
            attention_head_dim=self.attention_head_dim, num_attention_heads=self.num_attention_heads,
            joint_attention_dim=self.joint_attention_dim, guidance_embeds=False, axes_dims_rope=self.axes_dims_rope)


@dataclasses.dataclass(frozen=True)
class VaeConfig:
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)   # 3 stages: 8x spatial compression

    def build(self) -> torch.nn.Module:
        from diffusers import AutoencoderKLQwenImage           # latents_mean / latents_std: the published values
        return AutoencoderKLQwenImage(base_dim=self.base_dim, z_dim=self.z_dim, dim_mult=list(self.dim_mult),
                                      num_res_blocks=self.num_res_blocks,
                                      temperal_downsample=list(self.temporal_downsample))


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
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
    min_pixels: int = 56 * 56                            # the source image's size range as the VLM sees it
    max_pixels: int = 28 * 28 * 16384

    def build(self, tokenizer):
        from .processor import build_processor
        return build_processor(tokenizer, self.min_pixels, self.max_pixels)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Flow-matching Euler schedule with resolution-dependent (exponential) time shift mu, interpolated from
    base_shift at base_image_seq_len tokens to max_shift at max_image_seq_len, and the last step stretched so
    the final non-zero sigma is shift_terminal."""
    base_image_seq_len: int = 256
    max_image_seq_len: int = 8192
    base_shift: float = 0.5
    max_shift: float = 0.9
    shift_terminal: float = 0.02

    def build(self):
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, time_shift_type="exponential",
            base_image_seq_len=self.base_image_seq_len, max_image_seq_len=self.max_image_seq_len,
            base_shift=self.base_shift, max_shift=self.max_shift, shift_terminal=self.shift_terminal)


@dataclasses.dataclass(frozen=True)
class QwenImageEditConfig:
    transformer: TransformerConfig = TransformerConfig()
    vae: VaeConfig = VaeConfig()
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    processor: ProcessorConfig = ProcessorConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    target_area: int = 1024 * 1024          # pixels of the edited image (aspect ratio from the source)
    seed: int = 0                           # random weights of a preset

    def build(self):
        """Components with random weights (made on the CPU in float32, so every machine gets the same ones)."""
        from .components import Components
        from .tokenizer import build_tokenizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            tokenizer = build_tokenizer()
            return Components(transformer=self.transformer.build(), vae=self.vae.build(),
                              text_encoder=self.text_encoder.build(tokenizer), tokenizer=tokenizer,
                              processor=self.processor.build(tokenizer), scheduler=self.scheduler.build())


TINY = QwenImageEditConfig(
    transformer=TransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, joint_attention_dim=32,
                                  axes_dims_rope=(4, 6, 6)),
    vae=VaeConfig(base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
    text_encoder=TextEncoderConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                                   mrope_section=(1, 1, 2), vision_depth=2, vision_hidden_size=32, vision_heads=2,
                                   vision_intermediate_size=64, vision_window_size=56,
                                   vision_full_attention_blocks=(1,)),
    processor=ProcessorConfig(min_pixels=28 * 28 * 4, max_pixels=112 * 112),
    target_area=64 * 64,
)
PRESETS: dict[str, QwenImageEditConfig] = {"tiny": TINY}
