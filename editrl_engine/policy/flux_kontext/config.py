"""FLUX.1-Kontext component configs: small dataclasses whose `.build()` makes the module they describe.

Presets build random weights and tokenizers made in code (byte / character level, so nothing is downloaded):
"tiny" (~0.1 M transformer parameters; for tests), "demo" (the embedded demo's 16x16 model) and
"flux.1-kontext-dev" (the released model's sizes; for benchmarks). The released weights and tokenizers load
from a local folder instead (folder.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import string

import torch


@contextlib.contextmanager
def _building(device: torch.device | str | None, dtype: torch.dtype | None):
    """Create parameters directly on `device` in `dtype` (a 12 B transformer need not pass through fp32 CPU)."""
    previous = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield
    finally:
        torch.set_default_dtype(previous)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """diffusers FluxTransformer2DModel; in_channels = 4 × VAE latent channels (2x2 packed patches)."""
    in_channels: int = 64
    num_layers: int = 19                      # double-stream blocks
    num_single_layers: int = 38
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096           # T5 hidden size
    pooled_projection_dim: int = 768          # CLIP hidden size
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)   # sums to attention_head_dim

    def build(self, device=None, dtype=None):
        from diffusers import FluxTransformer2DModel
        with _building(device, dtype):
            return FluxTransformer2DModel(patch_size=1, guidance_embeds=True, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class VaeConfig:
    """diffusers AutoencoderKL; the spatial downsampling is 2 ** (len(block_out_channels) − 1)."""
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    sample_size: int = 1024                   # the native resolution; the attention probe assumes it
    scaling_factor: float = 0.3611
    shift_factor: float = 0.1159

    def build(self, device=None, dtype=None):
        from diffusers import AutoencoderKL
        blocks = len(self.block_out_channels)
        with _building(device, dtype):
            return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                                 up_block_types=("UpDecoderBlock2D",) * blocks, use_quant_conv=False,
                                 use_post_quant_conv=False, **dataclasses.asdict(self))


def byte_level_clip_tokenizer(max_length: int, words: tuple[str, ...] = ()):
    """A CLIP BPE tokenizer over the 256 byte symbols, with merges that make each of `words` (lower-cased, as
    CLIP reads text) one token; with no words every string is spelled byte by byte."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = sorted(ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        vocab.update({s + suffix: len(vocab) + i for i, s in enumerate(symbols)})
    merges = _whole_word_merges(words)
    for pieces in merges:
        vocab.setdefault("".join(pieces), len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _whole_word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) that turn each lower-cased word of `words`, as CLIP spells it (characters, the
    last one with '</w>'), into one symbol: merge the first two symbols of the word's current segmentation until
    one is left, replaying BPE over the merges made so far."""
    from tokenizers.pre_tokenizers import ByteLevel
    encode = ByteLevel(add_prefix_space=False)
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(w.lower() for w in words):
        symbols = [piece for piece, _ in encode.pre_tokenize_str(word)][0]
        while True:
            pieces = _bpe(list(symbols[:-1]) + [symbols[-1] + "</w>"], merges)
            if len(pieces) == 1:
                break
            merges.append((pieces[0], pieces[1]))
    return merges


def _bpe(pieces: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's BPE: merge the lowest-ranked adjacent pair until none of `merges` applies."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


# Every word of the synthetic shapes task's instructions (data/synthetic.py: its phrases, colour, kind and cell
# names; tests/test_policy_flux_kontext_words.py checks the list is complete). The demo's CLIP and T5 tokenizers
# keep each one whole: from characters and bytes, its 1+1-block model did not learn which shape an instruction
# names.
SHAPES_TASK_WORDS = (
    "Change", "Delete", "Erase", "Make", "Move", "Put", "Recolor", "Remove", "Replace", "background", "black",
    "blue", "bottom", "center", "circle", "color", "cyan", "from", "gray", "green", "image", "in", "left", "of",
    "orange", "pink", "purple", "red", "right", "square", "the", "to", "top", "triangle", "white", "with", "yellow",
)


def character_t5_tokenizer(max_length: int, words: tuple[str, ...] = ()):
    """A T5 unigram tokenizer over printable ASCII characters (ids 0, 1, 2 = pad, </s>, unk as in T5), plus one
    piece per word of `words` (a word scores above its spelling, so it is one token; other text is spelled)."""
    from transformers import T5Tokenizer
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.printable.strip()]
    pieces += [("\u2581" + word, -1.0) for word in words]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


@dataclasses.dataclass(frozen=True)
class ClipTextConfig:
    """transformers CLIPTextModel (pooled output only) + its tokenizer."""
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    vocab_size: int = 49408
    max_length: int = 77
    words: tuple[str, ...] = ()                # whole-word tokens of the tokenizer made in code (else bytes)

    def build(self, device=None, dtype=None):
        from transformers import CLIPTextConfig, CLIPTextModel
        tokenizer = byte_level_clip_tokenizer(self.max_length, self.words)
        config = CLIPTextConfig(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                                num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
                                vocab_size=self.vocab_size, max_position_embeddings=self.max_length,
                                projection_dim=self.hidden_size, hidden_act="quick_gelu",
                                bos_token_id=0, eos_token_id=1, pad_token_id=1)     # the tokenizer's ids
        with _building(device, dtype):
            return CLIPTextModel(config), tokenizer


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
    """transformers T5EncoderModel (v1.1 gated-GELU) + its tokenizer."""
    d_model: int = 4096
    d_ff: int = 10240
    d_kv: int = 64
    num_heads: int = 64
    num_layers: int = 24
    vocab_size: int = 32128
    max_length: int = 512
    words: tuple[str, ...] = ()                # whole-word pieces of the tokenizer made in code (else characters)

    def build(self, device=None, dtype=None):
        from transformers import T5Config, T5EncoderModel
        tokenizer = character_t5_tokenizer(self.max_length, self.words)
        config = T5Config(d_model=self.d_model, d_ff=self.d_ff, d_kv=self.d_kv, num_heads=self.num_heads,
                          num_layers=self.num_layers, vocab_size=self.vocab_size, feed_forward_proj="gated-gelu",
                          is_encoder_decoder=False, use_cache=False)
        with _building(device, dtype):
            return T5EncoderModel(config), tokenizer


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """FlowMatchEulerDiscreteScheduler with FLUX's resolution-dependent (dynamic) shift."""
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15

    def build(self):
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                               **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class FluxKontextConfig:
    transformer: TransformerConfig = TransformerConfig()
    vae: VaeConfig = VaeConfig()
    clip: ClipTextConfig = ClipTextConfig()
    t5: T5EncoderConfig = T5EncoderConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    guidance: float = 2.5                      # distilled guidance scale

    def build(self, device=None, dtype=None):
        """All components with random weights (see model.FluxKontextComponents)."""
        from .model import FluxKontextComponents
        text_encoder, tokenizer = self.clip.build(device, dtype)
        text_encoder_2, tokenizer_2 = self.t5.build(device, dtype)
        return FluxKontextComponents(transformer=self.transformer.build(device, dtype),
                                     vae=self.vae.build(device, dtype), text_encoder=text_encoder,
                                     tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                     scheduler=self.scheduler.build(), max_sequence_length=self.t5.max_length)


PRESETS: dict[str, FluxKontextConfig] = {
    "flux.1-kontext-dev": FluxKontextConfig(),
    "tiny": FluxKontextConfig(
        transformer=TransformerConfig(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                      axes_dims_rope=(4, 6, 6)),
        vae=VaeConfig(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
                      sample_size=32),
        clip=ClipTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=514, max_length=77),
        t5=T5EncoderConfig(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=1, vocab_size=128, max_length=32),
    ),
    # the embedded demo (engine/demo): 16x16 images; a VAE with 3 latent channels and no downsampling, which
    # engine/demo/vae.py sets to an exact identity autoencoder (latent = pixels; the demo's warm-up checkpoint
    # carries those weights), so 64 tokens of 2x2 patches;
    # ~0.27 M transformer parameters; word-level CLIP and T5 tokenizers over the shapes task's words (the longest
    # shapes instruction is 14 CLIP tokens with its start and end tokens)
    "demo": FluxKontextConfig(
        transformer=TransformerConfig(in_channels=12, num_layers=1, num_single_layers=1, attention_head_dim=32,
                                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                      axes_dims_rope=(8, 12, 12)),
        vae=VaeConfig(latent_channels=3, block_out_channels=(8,), layers_per_block=1, norm_num_groups=1,
                      sample_size=16, scaling_factor=1.0, shift_factor=0.0),
        clip=ClipTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=647, max_length=16, words=SHAPES_TASK_WORDS),
        t5=T5EncoderConfig(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=1, vocab_size=160, max_length=16,
                           words=SHAPES_TASK_WORDS),
    ),
}


def preset(name: str) -> FluxKontextConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown flux-kontext preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
