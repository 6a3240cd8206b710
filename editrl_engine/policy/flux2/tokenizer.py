"""Tokenizers made in code for the tiny FLUX.2 presets, each with a chat template that renders as its real
counterpart does for the pipelines' messages (nothing is downloaded).

klein: the shared tiny Qwen2 tokenizer with Qwen3's template for one user turn, the generation prompt and
       enable_thinking=False (an empty think block), as Flux2KleinPipeline asks for it.
dev:   a byte-level BPE with Mistral's control tokens and a template writing [SYSTEM_PROMPT]…[/SYSTEM_PROMPT]
       [INST]…[/INST] from text content parts, as Flux2Pipeline's messages carry them.
"""
from __future__ import annotations

QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['content'] is string %}"
    "{% set text = message['content'] %}{% else %}"
    "{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif %}{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
MISTRAL_SPECIAL = ("<unk>", "[IMG]", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")


def qwen3_tokenizer():
    """The tiny Qwen2 tokenizer (vlm/qwen2_5_vl) with Qwen3's chat template for the klein prompt."""
    from editrl_engine.vlm.qwen2_5_vl.tokenizer import build_tokenizer
    tokenizer = build_tokenizer(("a photo of an edit", "<think>", "</think>"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = QWEN3_TEMPLATE
    return tokenizer


def mistral_tokenizer():
    """A byte-level BPE over the 256 byte symbols (every text is spelled byte by byte) with Mistral's control
    tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast
    vocab = {token: i for i, token in enumerate(MISTRAL_SPECIAL)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>",
                                        additional_special_tokens=list(MISTRAL_SPECIAL[5:]))
    tokenizer.chat_template = MISTRAL_TEMPLATE
    return tokenizer
