"""The editscore reward: the two-call VIEScore protocol and Avg@K on scripted judge answers (hand-computed
rewards, NaN counting), then the plumbing on the tiny Qwen2.5-VL (batched greedy generation equals per-sample,
gibberish counted as failures, sampling settings and seeds reach generate, image routing, LoRA merging)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.reward import editscore, load_reward
from editrl_engine.reward.editscore import Decoding, EditScoreReward, JudgeCall
from editrl_engine.vlm import qwen2_5_vl

INSTRUCTIONS = ["make it red", "add a cat to the left corner", "remove the tree"]
SIZES = [(64, 64), (80, 48), (40, 72)]


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


SOURCES = [image(i, s) for i, s in enumerate(SIZES)]
EDITED = [image(10 + i, s) for i, s in enumerate(SIZES)]


def answer(scores, reasoning="looks fine") -> str:
    return "Sure.\n```json\n" + json.dumps({"reasoning": reasoning, "score": scores}) + "\n```"


class Script:
    """A generator answering from a table {(pass, sample, kind): text}; records every call and decoding."""

    def __init__(self, table: dict, base_seed: int = 42):
        self.table, self.base_seed, self.seen = table, base_seed, []

    def __call__(self, calls, decoding: Decoding) -> list[str]:
        self.seen.append((list(calls), decoding))
        p = 0 if decoding.seed is None else decoding.seed - self.base_seed
        return [self.table.get((p, c.sample, c.kind), "no idea") for c in calls]


# ---- the protocol on scripted answers ------------------------------------------------------------------------
def test_one_pass_gives_the_hand_computed_vie_score():
    script = Script({(0, 0, "sc"): answer([20, 25]), (0, 0, "pq"): answer([25, 15]),
                     (0, 1, "sc"): answer([0, 25]), (0, 1, "pq"): "{'reasoning': 'ok', 'score': ['10', 12.5],}",
                     (0, 2, "sc"): answer([25, 26]), (0, 2, "pq"): answer([5, 5])})         # 26 > 25: out of range
    batch = EditScoreReward(None, generate_fn=script).score(SOURCES, INSTRUCTIONS, EDITED)
    expected = [math.sqrt(8 * 6) / 10, 0.0, math.nan]                  # SC = min / 2.5, PQ = min / 2.5
    torch.testing.assert_close(batch.reward, torch.tensor(expected, dtype=torch.float32), equal_nan=True)
    assert batch.reward.dtype == torch.float32 and batch.failures == 1
    first = batch.details[0]
    assert (first["prompt_following"], first["consistency"], first["naturalness"], first["artifacts"]) == (8, 10, 10, 6)
    assert (first["sc"], first["pq"]) == (8, 6) and abs(first["overall"] - math.sqrt(48)) < 1e-6
    assert first["passes"][0]["sc_text"] == answer([20, 25]) and first["passes"][0]["sc_scores"] == (20, 25)
    assert "error" not in first and first["failed_passes"] == 0
    last = batch.details[2]
    assert "out of range" in last["error"] and last["failed_passes"] == 1
    assert math.isnan(last["prompt_following"]) and last["naturalness"] == 2     # PQ parsed, SC did not


def test_the_viescore_scale_asks_and_reads_zero_to_ten():
    script = Script({(0, 0, "sc"): answer([8, 9]), (0, 0, "pq"): answer([4, 10])})
    reward = EditScoreReward(None, scale="viescore", generate_fn=script)
    batch = reward.score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])
    assert abs(float(batch.reward[0]) - math.sqrt(32) / 10) < 1e-6
    sc_call, pq_call = script.seen[0][0]
    assert "from 0 to 10" in sc_call.text and "from 0 to 25" not in sc_call.text
    editscore_call = EditScoreReward(None, generate_fn=script).calls(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])[0]
    assert "from 0 to 25" in editscore_call.text
    with pytest.raises(ValueError, match="scale"):
        EditScoreReward(None, scale="percent", generate_fn=script)


def test_calls_carry_the_instruction_and_the_right_images():
    script = Script({})
    EditScoreReward(None, generate_fn=script).score(SOURCES, INSTRUCTIONS, EDITED)
    calls = script.seen[0][0]
    assert [(c.sample, c.kind) for c in calls] == [(i, k) for i in range(3) for k in ("sc", "pq")]
    for c in calls:
        edited = np.array(EDITED[c.sample])
        if c.kind == "sc":
            assert len(c.images) == 2 and c.text.count("<|image_pad|>") == 2 and INSTRUCTIONS[c.sample] in c.text
            assert np.array_equal(np.array(c.images[0]), np.array(SOURCES[c.sample]))
        else:
            assert len(c.images) == 1 and c.text.count("<|image_pad|>") == 1 and INSTRUCTIONS[c.sample] not in c.text
        assert np.array_equal(np.array(c.images[-1]), edited)
        assert c.text.endswith("<|im_start|>assistant\n") and '"reasoning"' in c.text


def test_avg_at_k_averages_the_passes_that_parsed_and_counts_the_rest():
    table = {(0, 0, "sc"): answer([25, 25]), (0, 0, "pq"): answer([25, 25]),       # O = 10
             (1, 0, "sc"): answer([10, 20]), (1, 0, "pq"): "{\"reasoning\": \"cut",  # truncated: pass fails
             (2, 0, "sc"): answer([10, 20]), (2, 0, "pq"): answer([10, 25]),       # O = 4
             (1, 1, "sc"): answer([5, 5]), (1, 1, "pq"): answer([20, 20])}         # sample 1: only pass 1 parses
    script = Script(table)
    batch = EditScoreReward(None, passes=3, generate_fn=script).score(SOURCES[:3], INSTRUCTIONS, EDITED)
    o1 = math.sqrt(2 * 8)
    torch.testing.assert_close(batch.reward, torch.tensor([(10 + 4) / 2 / 10, o1 / 10, math.nan]), equal_nan=True)
    assert batch.failures == 1
    assert [d["failed_passes"] for d in batch.details] == [1, 2, 3]
    per_pass = [p["overall"] for p in batch.details[0]["passes"]]
    assert per_pass[0] == 10 and math.isnan(per_pass[1]) and abs(per_pass[2] - 4) < 1e-6
    assert batch.details[0]["prompt_following"] == pytest.approx((10 + 4 + 4) / 3)   # SC parsed in all 3 passes
    decodings = [d for _, d in script.seen]
    assert [d.seed for d in decodings] == [42, 43, 44] and all(d.do_sample for d in decodings)
    assert decodings[0].generate_kwargs() == dict(do_sample=True, max_new_tokens=512, temperature=0.7, top_p=0.9,
                                                  top_k=20)
    # the same ensemble asked for per call (what `editrl eval --avg-k 3` does) gives the same rewards
    per_call = EditScoreReward(None, generate_fn=Script(table)).score(SOURCES[:3], INSTRUCTIONS, EDITED, avg_k=3)
    torch.testing.assert_close(per_call.reward, batch.reward, equal_nan=True)
    assert [d["failed_passes"] for d in per_call.details] == [1, 2, 3]


def test_greedy_is_one_unseeded_pass():
    script = Script({})
    EditScoreReward(None, greedy=True, generate_fn=script).score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])
    decoding = script.seen[0][1]
    assert decoding.seed is None and decoding.generate_kwargs() == dict(do_sample=False, max_new_tokens=512)
    with pytest.raises(ValueError, match="greedy"):
        EditScoreReward(None, greedy=True, passes=4, generate_fn=script)
    with pytest.raises(ValueError, match="greedy"):
        EditScoreReward(None, greedy=True, generate_fn=script).score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1],
                                                                     avg_k=2)
    with pytest.raises(ValueError, match="answers"):
        EditScoreReward(None, generate_fn=lambda calls, d: ["x"]).score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])


# ---- the plumbing on the tiny model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=6, batch_size=4)


def texts(batch) -> list[tuple[str, str]]:
    return [(p["sc_text"], p["pq_text"]) for d in batch.details for p in d["passes"]]


def test_batched_greedy_generation_equals_per_sample_and_gibberish_is_counted(tiny):
    batch = tiny.score(SOURCES, INSTRUCTIONS, EDITED)              # 6 calls in batches of 4: padding in both
    assert batch.reward.shape == (3,) and batch.reward.isnan().all() and batch.failures == 3
    assert all("no pass parsed" in d["error"] for d in batch.details)
    singles = []
    for i in range(3):
        tiny.batch_size = 1
        singles += texts(tiny.score(SOURCES[i:i + 1], INSTRUCTIONS[i:i + 1], EDITED[i:i + 1]))
    tiny.batch_size = 4
    assert texts(batch) == singles and all(sc and pq for sc, pq in singles)


def test_sampling_settings_and_images_reach_generate_and_seeded_passes_repeat(tiny, monkeypatch):
    reward = EditScoreReward(tiny.vlm, passes=2, max_new_tokens=5, batch_size=2, base_seed=7)
    seen = []
    generate = tiny.vlm.model.generate

    def spy(**kwargs):
        seen.append(kwargs)
        return generate(**kwargs)
    monkeypatch.setattr(tiny.vlm.model, "generate", spy)
    state = torch.random.get_rng_state()
    first = reward.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2])
    assert torch.equal(state, torch.random.get_rng_state())         # the global RNG is left alone
    assert len(seen) == 4                                            # 2 passes x (4 calls in batches of 2)
    for kwargs in seen:
        assert (kwargs["do_sample"], kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (True, 0.7, 0.9, 20)
        assert kwargs["max_new_tokens"] == 5
        assert kwargs["image_grid_thw"].shape[0] == 3                # one batch = SC (2 images) + PQ (1 image)
        pads = (kwargs["input_ids"] == tiny.vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum(1)
        grid = kwargs["image_grid_thw"].prod(1) // 4                 # image tokens per image after the 2x2 merge
        assert pads.tolist() == [int(grid[0] + grid[1]), int(grid[2])]
    again = reward.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2])
    assert texts(first) == texts(again)
    passes = first.details[0]["passes"]
    assert passes[0]["sc_text"] != passes[1]["sc_text"]              # seeds 7 and 8 draw differently


def test_a_lora_adapter_is_merged_at_load(tmp_path):
    from peft import LoraConfig, get_peft_model
    templates = editscore.prompts.vocabulary_texts()
    base = qwen2_5_vl.load(preset="tiny", templates=templates)
    base.model.save_pretrained(tmp_path / "base")
    base.processor.save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    peft_model = get_peft_model(qwen2_5_vl.load(preset="tiny", templates=templates).model,
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    reward = load_reward("editscore", path=tmp_path / "base", lora=tmp_path / "adapter", greedy=True)
    assert "lora:" in reward.metadata()["origin"]
    assert not any("lora" in name for name, _ in reward.vlm.model.named_parameters())
    call = reward.calls(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])[0]
    inputs = base.processor(text=[call.text], images=list(call.images), return_tensors="pt")
    with torch.no_grad():
        merged, unmerged, plain = (m(**inputs).logits for m in (reward.vlm.model, peft_model.eval(), base.model))
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_reward("editscore", preset="tiny", lora=tmp_path)


def test_judge_call_and_backend_errors():
    assert JudgeCall(0, "pq", "x", ()).kind == "pq"
    with pytest.raises(NotImplementedError, match="compiled"):
        load_reward("editscore", preset="tiny", backend="compiled")
    with pytest.raises(ValueError, match="vlm or a generate_fn"):
        EditScoreReward(None)
