"""The demo preset's word-level tokenizers (policy/flux_kontext/config.py): SHAPES_TASK_WORDS holds every word a
synthetic shapes instruction can use, and both tokenizers turn each such word into one token of its own while any
other text is still spelled out (so nothing is ever unknown)."""
from __future__ import annotations

import re

from editrl_engine.data import synthetic
from editrl_engine.data.shapes import CELLS, PALETTE, SHAPE_KINDS
from editrl_engine.policy.flux_kontext.config import PRESETS, SHAPES_TASK_WORDS


def _task_words() -> set[str]:
    text = " ".join(p for phrases in synthetic._PHRASES.values() for p in phrases)
    text = re.sub(r"\{\w+\}", " ", text) + " ".join([*PALETTE, *SHAPE_KINDS, *CELLS])
    return set(re.findall(r"[A-Za-z]+", text))


def test_the_word_list_covers_every_instruction_word():
    assert _task_words() == set(SHAPES_TASK_WORDS)
    for index in range(200):                                    # and real instructions use nothing else
        task = synthetic.make_task(5, index, 16)
        assert set(re.findall(r"[A-Za-z]+", task.instruction)) <= set(SHAPES_TASK_WORDS)


def test_demo_tokenizers_keep_each_word_whole():
    components = PRESETS["demo"].build()
    clip, t5 = components.tokenizer, components.tokenizer_2
    for word in SHAPES_TASK_WORDS:
        clip_ids = clip(word, add_special_tokens=False).input_ids
        t5_ids = t5(word, add_special_tokens=False).input_ids
        assert len(clip_ids) == 1 and clip.convert_ids_to_tokens(clip_ids) == [word.lower() + "</w>"], word
        assert len(t5_ids) == 1 and t5.convert_ids_to_tokens(t5_ids) == ["\u2581" + word], word
    colours = {clip(c, add_special_tokens=False).input_ids[0] for c in PALETTE}
    assert len(colours) == len(PALETTE)                         # every colour its own id
    for tokenizer in (clip, t5):                                # other text is spelled, never unknown
        ids = tokenizer("a bluish one", add_special_tokens=False).input_ids
        assert len(ids) > 3 and tokenizer.unk_token_id not in ids


def test_demo_vocabularies_fit_their_embeddings():
    config = PRESETS["demo"]
    components = config.build()
    assert len(components.tokenizer) <= config.clip.vocab_size
    assert len(components.tokenizer_2) <= config.t5.vocab_size
    longest = max((synthetic.make_task(5, i, 16).instruction for i in range(400)),   # every edit kind
                  key=len)
    assert len(components.tokenizer(longest).input_ids) <= config.clip.max_length
    assert len(components.tokenizer_2(longest).input_ids) <= config.t5.max_length
