"""FLUX.2 model configs: small dataclasses whose `.build()` makes what they describe.

Presets (random weights; the released weights load from a local folder, components.py):
  tiny          klein at toy widths (Qwen3 text encoder, true CFG): every structural feature kept: 2x2-patchified
                VAE latents with batch-norm statistics, 4-axis RoPE ids with a time offset per reference image,
                double- and single-stream blocks, the stacked hidden states of three text-encoder layers
  tiny-dev      dev at toy widths (Mistral3 text encoder with a Pixtral vision tower; distilled guidance)
  flux.2-klein-4b, flux.2-dev   the released models' transformer and VAE sizes (for benchmarks) with the same
                text encoder sizes; their tokenizers are the tiny ones (the vocabulary only sizes the embedding)
"""
from __future__ import annotations

import dataclasses

import torch

from .components import TEXT_LAYERS, Components


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """diffusers Flux2Transformer2DModel; in_channels = 4 x VAE latent channels (2x2 patches)."""
    in_channels: int = 128
    num_layers: int = 8                      # double-stream blocks
    num_single_layers: int = 48
    attention_head_dim: int = 128
    num_attention_heads: int = 48
    joint_attention_dim: int = 15360         # 3 stacked text-encoder layers x hidden size
    axes_dims_rope: tuple[int, ...] = (32, 32, 32, 32)

    def build(self, guidance_embeds: bool) -> torch.nn.Module:
        from diffusers import Flux2Transformer2DModel
        return Flux2Transformer2DModel(patch_size=1, guidance_embeds=guidance_embeds, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class VaeConfig:
    """diffusers AutoencoderKLFlux2: 2 ** (len(block_out_channels) - 1) spatial downsampling, then 2x2 patches."""
    latent_channels: int = 32
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    sample_size: int = 1024
    random_batch_norm: bool = False          # tiny: draw the latent statistics (the released VAE has learnt ones)

    def build(self) -> torch.nn.Module:
        from diffusers import AutoencoderKLFlux2
        blocks = len(self.block_out_channels)
        vae = AutoencoderKLFlux2(
            latent_channels=self.latent_channels, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups, sample_size=self.sample_size,
            down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks)
        if self.random_batch_norm:
            vae.bn.running_mean.copy_(torch.randn_like(vae.bn.running_mean) * 0.1)
            vae.bn.running_var.copy_(torch.rand_like(vae.bn.running_var) + 0.5)
        return vae


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Qwen3ForCausalLM (klein) or Mistral3ForConditionalGeneration's language model (dev), with a tiny Pixtral
    vision tower for dev (the pipeline encodes text only)."""
    hidden_size: int = 2560
    num_layers: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 9728

    def build(self, variant: str, vocab_size: int) -> torch.nn.Module:
        text = dict(vocab_size=vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                    num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
                    head_dim=self.head_dim, intermediate_size=self.intermediate_size, max_position_embeddings=4096)
        if variant == "klein":
            from transformers import Qwen3Config, Qwen3ForCausalLM
            return Qwen3ForCausalLM(Qwen3Config(**text))
        from transformers import Mistral3Config, Mistral3ForConditionalGeneration
        vision = dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
                      intermediate_size=32, image_size=32, patch_size=8, num_channels=3)
        config = Mistral3Config(text_config=dict(model_type="mistral", sliding_window=None, bos_token_id=2,
                                                 eos_token_id=3, pad_token_id=4, **text),
                                vision_config=vision, image_token_index=1, vision_feature_layer=-1)
        return Mistral3ForConditionalGeneration(config)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """FlowMatchEulerDiscreteScheduler with dynamic (exponential) shift: the pipelines pass mu from the image
    token count and the step count (compute_empirical_mu)."""
    use_dynamic_shifting: bool = True
    time_shift_type: str = "exponential"

    def build(self):
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(**dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class Flux2Config:
    variant: str = "klein"
    is_distilled: bool = False                      # klein: step-distilled (no CFG)
    transformer: TransformerConfig = TransformerConfig()
    vae: VaeConfig = VaeConfig()
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    text_layers: tuple[int, ...] = ()               # () = the pipeline's (dev 10, 20, 30; klein 9, 18, 27)
    max_sequence_length: int = 512
    guidance: float = 4.0                           # dev: distilled guidance; klein: CFG scale (the pipelines')
    seed: int = 0

    def build(self) -> Components:
        """Random weights drawn from `seed` on the CPU in float32, tokenizers made in code."""
        from .tokenizer import mistral_tokenizer, qwen3_tokenizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            tokenizer = qwen3_tokenizer() if self.variant == "klein" else mistral_tokenizer()
            return Components(
                transformer=self.transformer.build(guidance_embeds=self.variant == "dev"), vae=self.vae.build(),
                text_encoder=self.text_encoder.build(self.variant, len(tokenizer)), tokenizer=tokenizer,
                scheduler=self.scheduler.build(), variant=self.variant, is_distilled=self.is_distilled,
                text_layers=self.text_layers or TEXT_LAYERS[self.variant],
                max_sequence_length=self.max_sequence_length)


TINY_TEXT = TextEncoderConfig(hidden_size=16, num_layers=3, num_heads=2, num_kv_heads=1, head_dim=8,
                              intermediate_size=32)
TINY_TRANSFORMER = TransformerConfig(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                     num_attention_heads=2, joint_attention_dim=48, axes_dims_rope=(4, 4, 4, 4))
TINY_VAE = VaeConfig(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                     sample_size=64, random_batch_norm=True)
PRESETS = {
    "tiny": Flux2Config(variant="klein", transformer=TINY_TRANSFORMER, vae=TINY_VAE, text_encoder=TINY_TEXT,
                        text_layers=(1, 2, 3), max_sequence_length=64),
    "tiny-dev": Flux2Config(variant="dev", transformer=TINY_TRANSFORMER, vae=TINY_VAE, text_encoder=TINY_TEXT,
                            text_layers=(1, 2, 3), max_sequence_length=256),
    "flux.2-klein-4b": Flux2Config(
        variant="klein", transformer=TransformerConfig(num_layers=5, num_single_layers=20, num_attention_heads=24,
                                                       joint_attention_dim=3 * 2560)),
    "flux.2-dev": Flux2Config(
        variant="dev", text_encoder=TextEncoderConfig(hidden_size=5120, num_layers=40, num_heads=32, num_kv_heads=8,
                                                      head_dim=128, intermediate_size=32768)),
}
