"""Shared-prefix group scoring of the editscore reward (tiny Qwen2.5-VL, fp32): the SC prompt splits into a prefix
and a suffix that tokenize as the whole, greedy score_groups() equals score() on the flattened triples (texts,
rewards, and the generation logits to 1e-5), sampled passes are reproducible, and the prefix (source image
included) is computed once per group, not per candidate or pass."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.reward import editscore_prompts as prompts
from editrl_engine.reward import load_reward
from editrl_engine.reward.editscore import EditScoreReward

from .judge_groups import GROUPS, INSTRUCTIONS, SOURCES, cached_generate_calls, step_logits


def flat(groups=GROUPS):
    return ([s for s, group in zip(SOURCES, groups) for _ in group],
            [i for i, group in zip(INSTRUCTIONS, groups) for _ in group], [e for group in groups for e in group])


def texts(batch) -> list[tuple[str, str]]:
    return [(p["sc_text"], p["pq_text"]) for d in batch.details for p in d["passes"]]


@pytest.fixture(scope="module")
def tiny():
    return load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=8, batch_size=4)


def test_the_sc_prefix_and_suffix_tokenize_as_the_whole_prompt(tiny):
    tokenizer = tiny.vlm.tokenizer
    for instruction in INSTRUCTIONS + ["", "ends with a space ", "quotes {x} and \"y\"\n"]:
        whole = prompts.sc_prompt(instruction, 25)
        assert whole == prompts.sc_prefix(instruction) + prompts.sc_suffix(25) and whole.count("<|image_pad|>") == 2
        assert whole.index(instruction) < whole.index("<|image_pad|>")        # the instruction is in the prefix
        split = tokenizer.encode(prompts.sc_prefix(instruction)) + tokenizer.encode(prompts.sc_suffix(25))
        assert split == tokenizer.encode(whole)


def test_greedy_group_scoring_equals_flat_scoring(tiny):
    grouped = tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    flat_batch = tiny.score(*flat())
    assert grouped.reward.shape == (8,) and texts(grouped) == texts(flat_batch)
    torch.testing.assert_close(grouped.reward, flat_batch.reward, equal_nan=True)
    assert grouped.failures == flat_batch.failures
    assert len({pq for _, pq in texts(grouped)}) > 1                     # the answers do depend on the images


def test_the_cached_generation_logits_match_the_whole_prompt(tiny, monkeypatch):
    """Each generate call on the prefix cache, replayed with its step logits, against the whole SC prompts."""
    model = tiny.vlm.model
    with cached_generate_calls(model, monkeypatch) as seen:
        tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    assert len(seen) == 2                                               # 8 candidates in chunks of 4
    sources, instructions, edited = flat()
    cached = torch.cat([step_logits(model, **kwargs) for kwargs in seen])                 # [8, steps, V]
    calls = [c for c in tiny.calls(sources, instructions, edited) if c.kind == "sc"]
    whole = []
    for start in range(0, 8, 4):
        part = calls[start:start + 4]
        inputs = tiny.vlm.processor(text=[c.text for c in part], images=[im for c in part for im in c.images],
                                    padding=True, size=tiny.image_size, return_tensors="pt")
        whole.append(step_logits(model, **inputs))
    torch.testing.assert_close(cached, torch.cat(whole), rtol=1e-5, atol=1e-5)


def test_sampled_group_passes_are_seeded_and_reproducible(tiny):
    reward = EditScoreReward(tiny.vlm, passes=2, max_new_tokens=6, batch_size=4, base_seed=7)
    state = torch.random.get_rng_state()
    first = reward.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    assert torch.equal(state, torch.random.get_rng_state())             # the global RNG is left alone
    again = reward.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    assert texts(first) == texts(again) and len(first.details[0]["passes"]) == 2
    passes = first.details[0]["passes"]
    assert (passes[0]["sc_text"], passes[0]["pq_text"]) != (passes[1]["sc_text"], passes[1]["pq_text"])
    other = reward.score_groups(SOURCES, INSTRUCTIONS, GROUPS, avg_k=3)
    assert texts(other)[:2] == texts(first)[:2]                         # pass i draws from base_seed + i


def test_the_prefix_is_computed_once_per_group(tiny):
    """Vision tower: each source once, each edited image once for SC (whatever the passes) and once per PQ pass;
    decoder: one prefill of the 3 groups, and every SC generation starts on a cache of the prefix length."""
    reward = EditScoreReward(tiny.vlm, passes=3, max_new_tokens=4, batch_size=4)
    model = tiny.vlm.model
    patches, decoder_calls = [], []
    hooks = [model.model.visual.register_forward_pre_hook(lambda m, args: patches.append(args[0].shape[0])),
             model.model.language_model.register_forward_pre_hook(
                 lambda m, args, kwargs: decoder_calls.append(
                     (kwargs["inputs_embeds"].shape[:2], _past(_cache_of(kwargs)))), with_kwargs=True)]
    try:
        reward.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    finally:
        for hook in hooks:
            hook.remove()
    source_patches = [_patches(tiny, [s]) for s in SOURCES]
    edited_patches = [_patches(tiny, [e]) for group in GROUPS for e in group]
    assert sum(patches) == sum(source_patches) + sum(edited_patches) * (1 + 3)      # SC once, PQ per pass
    fresh = [shape for shape, past in decoder_calls if past == 0]
    prefill = fresh[0]
    assert prefill[0] == 3                                               # the 3 groups' prefixes, once
    suffix_starts = [(shape, past) for shape, past in decoder_calls if past == prefill[1]]
    assert len(suffix_starts) == 2 * 3                                   # 2 chunks x 3 passes, on the prefix cache
    pq_starts = fresh[1:]
    assert len(pq_starts) == 2 * 3 and all(rows == 4 for rows, _ in pq_starts)      # PQ: batched as in score()


def _cache_of(kwargs: dict):
    """The KV cache a forward was given: `cache` from transformers 5.24, `past_key_values` before."""
    return kwargs.get("cache", kwargs.get("past_key_values"))


def _past(cache) -> int:
    return 0 if cache is None else cache.get_seq_length()


def _patches(reward, images) -> int:
    out = reward.vlm.processor.image_processor(images=images, size=reward.image_size, return_tensors="pt")
    return out["pixel_values"].shape[0]


def test_scripted_judges_and_errors_fall_back_to_flat_scoring():
    seen = []

    def judge(calls, decoding):
        seen.append(len(calls))
        return ['{"reasoning": "ok", "score": [25, 25]}'] * len(calls)
    batch = EditScoreReward(None, generate_fn=judge).score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    assert batch.reward.tolist() == [1.0] * 8 and seen == [16]
    with pytest.raises(ValueError, match="empty group"):
        EditScoreReward(None, generate_fn=judge).score_groups(SOURCES[:1], INSTRUCTIONS[:1], [[]])


def test_a_scripted_judge_gets_the_group_prompts_as_whole_calls():
    """A generate_fn judge has no KV cache: score_groups sends it the prefix + suffix SC prompts and the PQ prompts,
    the same calls (text and pixels) as score() on the flattened triples."""
    def record(seen):
        def judge(calls, decoding):
            seen.append([(c.sample, c.kind, c.text, tuple(im.tobytes() for im in c.images)) for c in calls])
            return ['{"reasoning": "ok", "score": [20, 5]}'] * len(calls)
        return judge
    grouped_calls, flat_calls = [], []
    grouped = EditScoreReward(None, generate_fn=record(grouped_calls)).score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    flat_batch = EditScoreReward(None, generate_fn=record(flat_calls)).score(*flat())
    assert grouped_calls == flat_calls and len(grouped_calls[0]) == 16
    assert grouped.reward.tolist() == flat_batch.reward.tolist() == pytest.approx([0.2] * 8)   # SC = PQ = 5 / 2.5


# ---- the publisher's templates (a stand-in package of their shape): the instruction is in the suffix --------
def test_group_scoring_equals_flat_scoring_with_the_publishers_templates(tmp_path, monkeypatch):
    from . import editscore_standin
    editscore_standin.install(tmp_path, monkeypatch)
    reward = load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=8, batch_size=4,
                         templates="editscore", pq_images="both")
    assert reward.metadata()["prompts"] == "editscore package 9.9"
    tokenizer, chosen = reward.vlm.tokenizer, reward.prompts
    for instruction in INSTRUCTIONS + ["", "quotes {x} and \"y\"\n"]:
        prefix, suffix = chosen.sc_prefix(instruction), chosen.sc_suffix(instruction, 25)
        assert instruction in suffix and prefix.endswith("<|vision_end|>")
        assert tokenizer.encode(prefix) + tokenizer.encode(suffix) == tokenizer.encode(prefix + suffix)
    grouped = reward.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    flat_batch = reward.score(*flat())
    assert texts(grouped) == texts(flat_batch)
    torch.testing.assert_close(grouped.reward, flat_batch.reward, equal_nan=True)


@pytest.mark.parametrize("pq_images", ["edited", "both"])
def test_a_scripted_judge_gets_the_publishers_group_prompts_as_whole_calls(tmp_path, monkeypatch, pq_images):
    from . import editscore_standin
    editscore_standin.install(tmp_path, monkeypatch)

    def record(seen):
        def judge(calls, decoding):
            seen.append([(c.sample, c.kind, c.text, tuple(im.tobytes() for im in c.images)) for c in calls])
            return ['{"reasoning": "ok", "score": [20, 5]}'] * len(calls)
        return judge
    grouped_calls, flat_calls = [], []
    options = dict(templates="editscore", pq_images=pq_images)
    EditScoreReward(None, generate_fn=record(grouped_calls), **options).score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    EditScoreReward(None, generate_fn=record(flat_calls), **options).score(*flat())
    assert grouped_calls == flat_calls and flat_calls[0][0][2].endswith(INSTRUCTIONS[0] + "\n" + prompts.TAIL)
    assert len(flat_calls[0][1][3]) == (2 if pq_images == "both" else 1)
