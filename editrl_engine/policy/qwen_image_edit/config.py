"""Qwen-Image-Edit model configs: small dataclasses whose `.build()` makes what they describe.

The defaults are the published Qwen-Image-Edit sizes (a 60-layer MMDiT of 20B parameters, the Wan-style video
VAE with 16 latent channels, Qwen2.5-VL-7B-Instruct as the text encoder); those weights load from a local
diffusers folder (components.py). PRESETS["tiny"] keeps every structural feature (2x2 packing to 64 channels,
16-channel VAE with its latent statistics, Qwen2.5-VL with a vision tower, multimodal RoPE) at toy widths, with
random weights and a tokenizer made in code. The Qwen2.5-VL pieces are shared (editrl_engine.vlm.qwen2_5_vl).
"""
from __future__ import annotations

import dataclasses

import torch

from editrl_engine.vlm.qwen2_5_vl.config import TINY_MODEL, TINY_PROCESSOR, ProcessorConfig
from editrl_engine.vlm.qwen2_5_vl.config import ModelConfig as TextEncoderConfig


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
        from diffusers import AutoencoderKLQwenImage  # latents_mean / latents_std: the published values
        return AutoencoderKLQwenImage(base_dim=self.base_dim, z_dim=self.z_dim, dim_mult=list(self.dim_mult),
                                      num_res_blocks=self.num_res_blocks,
                                      temperal_downsample=list(self.temporal_downsample))


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
        Components, build_tokenizer = self.family_parts()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            tokenizer = build_tokenizer()
            return Components(transformer=self.transformer.build(), vae=self.vae.build(),
                              text_encoder=self.text_encoder.build(tokenizer), tokenizer=tokenizer,
                              processor=self.processor.build(tokenizer), scheduler=self.scheduler.build())

    def family_parts(self):
        """(the family's Components class, its tokenizer builder): what build() assembles."""
        from .components import Components
        from .tokenizer import build_tokenizer
        return Components, build_tokenizer


TINY = QwenImageEditConfig(
    transformer=TransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, joint_attention_dim=32,
                                  axes_dims_rope=(4, 6, 6)),
    vae=VaeConfig(base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
    text_encoder=TINY_MODEL,
    processor=TINY_PROCESSOR,
    target_area=64 * 64,
)
PRESETS: dict[str, QwenImageEditConfig] = {"tiny": TINY}
