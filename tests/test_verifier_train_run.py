"""Verifier training on the tiny verifier: the SFT loss is transformers' own masked cross-entropy over the trace
tokens only, the GCPO ratio is exactly 1 before the first update, a run writes its metrics and a LoRA that
load_reward("verifier", lora=DIR) judges with exactly as training did, and a run stopped by SIGTERM and resumed ends
with the parameters of an uninterrupted run, in either stage."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.reward import load_reward
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.verifier_train.config import load_verifier_config
from editrl_engine.verifier_train.data import PreferenceRow, SftRow, verdict_trace
from editrl_engine.verifier_train.model import Item
from editrl_engine.verifier_train.trainer import VerifierTrainer, build_model, sft_loss, trace_score

PRINCIPLES = vp.as_principles(["follow: the square is red", "keep: the circle"])
GOOD = verdict_trace(PRINCIPLES, [("pass", 10, "red"), ("pass", 10, "kept")], 10, "done")
BAD = verdict_trace(PRINCIPLES, [("fail", 0, "blue"), ("pass", 10, "kept")], 2, "not done")


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def rows():
    sft = [SftRow((image(i),), image(100 + i), "make the square red", PRINCIPLES, GOOD if i % 2 else BAD)
           for i in range(6)]
    prefs = [PreferenceRow((image(i),), "make the square red", PRINCIPLES, image(100 + i), image(200 + i))
             for i in range(4)]
    return sft, prefs


def config(tmp_path, *extra):
    return load_verifier_config(None, ["sft.steps=2", "sft.batch=3", "gcpo.steps=2", "gcpo.pairs=2", "gcpo.traces=2",
                                       "gcpo.max_new_tokens=12", "gcpo.lr=1e-3", "gcpo.updates_per_batch=2",
                                       "run.eval_every=0", "run.checkpoint_every=0", f"run.out_dir='{tmp_path}'",
                                       "run.progress=false", *extra])


def test_the_traces_score_with_the_verifiers_parser():
    assert trace_score(PRINCIPLES, GOOD) == pytest.approx(1.0) and trace_score(PRINCIPLES, BAD) < 0.5
    assert np.isnan(trace_score(PRINCIPLES, "not json"))


def test_sft_loss_is_the_masked_cross_entropy_of_the_trace_tokens(tmp_path):
    model = build_model(config(tmp_path))
    items = [Item((image(0),), image(1), "make the square red", PRINCIPLES),
             Item((image(2),), image(3), "make the square red", PRINCIPLES)]
    traces = [model.encode_trace(GOOD), model.encode_trace(BAD)]
    batch = model.batch(items, traces)
    assert batch["mask"].sum(1).tolist() == [len(t) for t in traces]
    labels = torch.where(batch["mask"], batch["input_ids"], -100)
    inputs = {k: v for k, v in batch.items() if k != "mask"}
    with torch.no_grad():
        reference = model.model(**inputs, labels=labels).loss                 # transformers' own shifted CE
        ours = sft_loss(model, batch)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    changed["input_ids"][batch["mask"]] = changed["input_ids"][batch["mask"]].roll(1)
    with torch.no_grad():
        assert abs(sft_loss(model, changed).item() - ours.item()) > 1e-4     # the trace tokens are what is scored


def test_the_first_gcpo_update_is_on_policy(tmp_path):
    model = build_model(config(tmp_path))
    sft, prefs = rows()
    shared = Item((image(0),), None, prefs[0].instruction, PRINCIPLES)
    traces = model.sample_pair(shared, [prefs[0].preferred, prefs[0].rejected], 2, temperature=1.0, top_p=1.0,
                               max_new_tokens=8, seed=3)
    assert len(traces.ids) == 4 and all(0 < len(t) <= 8 for t in traces.ids)
    again = model.sample_pair(shared, [prefs[0].preferred, prefs[0].rejected], 2, temperature=1.0, top_p=1.0,
                              max_new_tokens=8, seed=3)
    assert again.ids == traces.ids                                           # seeded sampling
    items = [Item((image(0),), c, prefs[0].instruction, PRINCIPLES) for c in (prefs[0].preferred,) * 2
             + (prefs[0].rejected,) * 2]
    batch = model.batch(items, traces.ids)
    with torch.no_grad():
        old = model.token_logp(batch)
    new = model.token_logp(batch)
    assert torch.equal(torch.exp(new - old)[batch["mask"]], torch.ones(int(batch["mask"].sum())))


def test_a_run_writes_metrics_and_a_lora_the_reward_judges_with(tmp_path):
    sft, prefs = rows()
    trainer = VerifierTrainer(config(tmp_path, "run.eval_every=2"), sft_rows=sft, preference_rows=prefs,
                              eval_rows=prefs[:2])
    summary = trainer.run()
    assert summary["step"] == 4
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3, 4]
    gcpo_line = lines[-1]
    for key in ("train_reward", "parse_failures", "zero_variance_groups", "kl", "clip_fraction", "trace_length",
                "tokens_per_s", "eval_accuracy"):
        assert key in gcpo_line, key
    judged = trainer.judge_pairs(prefs[:2])
    reward = load_reward("verifier", preset="tiny", lora=str(tmp_path / "lora"),
                         sampling={"max_new_tokens": trainer.config.gcpo.max_new_tokens})
    answers = reward.generate_fn([vp.verdict_prompt(p.instruction, PRINCIPLES) for p in prefs[:2] for _ in (0, 1)],
                                 [[p.sources[0], c] for p in prefs[:2] for c in (p.preferred, p.rejected)])
    assert answers == [text for j in judged for text in j["texts"]]


@pytest.mark.parametrize("stop_at", [2, 4], ids=["during-sft", "during-gcpo"])
def test_resume_after_sigterm_gives_the_uninterrupted_parameters(tmp_path, stop_at):
    sft, prefs = rows()
    schedule = ("sft.steps=3", "sft.warmup=1", "sft.schedule='cosine'", "sft.min_lr_ratio=0.5")  # lr moves each step
    straight = VerifierTrainer(config(tmp_path / "straight", *schedule), sft_rows=sft, preference_rows=prefs)
    straight.run()
    interrupted = VerifierTrainer(config(tmp_path / "stopped", *schedule), sft_rows=sft, preference_rows=prefs)
    step = interrupted.sft_step if stop_at <= 3 else interrupted.gcpo_step

    def stop_after(number, optimizer, original=step):
        record = original(number, optimizer)
        if number == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return record
    setattr(interrupted, "sft_step" if stop_at <= 3 else "gcpo_step", stop_after)
    assert interrupted.run()["stopped_by"] == signal.SIGTERM and interrupted.step == stop_at
    resumed = VerifierTrainer(config(tmp_path / "stopped", *schedule), sft_rows=sft, preference_rows=prefs)
    assert resumed.run(resume=True)["step"] == 5
    for (name, a), (_, b) in zip(straight.model.peft.named_parameters(), resumed.model.peft.named_parameters()):
        if "lora_" in name:
            assert torch.equal(a, b), name


def test_shared_prefix_sampling_equals_whole_prompt_sampling_when_greedy(tmp_path):
    model = build_model(config(tmp_path))
    shared = Item((image(0),), None, "make the square red", PRINCIPLES)
    kwargs = dict(temperature=0.0, top_p=1.0, max_new_tokens=10, seed=0)
    shared_prefix = model.sample_pair(shared, [image(1), image(2)], 2, **kwargs)
    whole = model.sample_pair(shared, [image(1), image(2)], 2, shared_prefix=False, **kwargs)
    assert shared_prefix.ids == whole.ids and len(shared_prefix.ids) == 4
