"""The demo's small verifier (verifier_train/small_model.py) against independent references: its traces against the
verifier's own parser, its token log-probs against a float64 log-softmax of its logits, greedy generation (left
padding, one token at a time) against the argmax of the training forward (right padding, whole sequence), top-p
sampling against its definition, saving against loading, and a SIGTERM-resumed run against an uninterrupted one."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.errors import InputError
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.verifier_train.config import load_verifier_config
from editrl_engine.verifier_train.data import PreferenceRow, SftRow, verdict_trace
from editrl_engine.verifier_train.model import Item, Traces
from editrl_engine.verifier_train.small_model import SmallVerifier, sample_top_p
from editrl_engine.verifier_train.trainer import VerifierTrainer, sft_loss, trace_score

PRINCIPLES = vp.as_principles(["follow: the square is red", "keep: the circle stays", "quality: flat colors"])
GOOD = verdict_trace(PRINCIPLES, [("pass", 10, ""), ("pass", 10, ""), ("pass", 9, "")], 10, "")
BAD = verdict_trace(PRINCIPLES, [("fail", 0, ""), ("partial", 6, ""), ("pass", 10, "")], 3, "")


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def rows():
    sft = [SftRow((image(i),), image(100 + i), "make the square red" if i % 3 else "move the big circle",
                  PRINCIPLES, GOOD if i % 2 else BAD) for i in range(6)]
    prefs = [PreferenceRow((image(i),), "make the square red", PRINCIPLES, image(100 + i), image(200 + i))
             for i in range(4)]
    return sft, prefs


def items(n: int = 3) -> list[Item]:
    instructions = ["make the square red", "move the big circle to the left", "paint it"]   # "paint": unknown
    return [Item((image(i),), image(50 + i), instructions[i % 3], PRINCIPLES) for i in range(n)]


def test_traces_round_trip_and_the_verifiers_parser_reads_them():
    model = SmallVerifier.for_rows(rows()[0])
    for trace in (GOOD, BAD):
        ids = model.encode_trace(trace)
        assert ids[-1] == model.end_id and all(i < model.outputs for i in ids)
        assert model.decode(ids) == trace
        assert trace_score(PRINCIPLES, model.decode(ids)) == trace_score(PRINCIPLES, trace)
    assert len(model.encode_trace(GOOD)) == 25       # 24 fragments (7 of them the judgement: verdicts, scores) + end
    with pytest.raises(InputError, match="not a fragment of the verdict format"):
        model.encode_trace(verdict_trace(PRINCIPLES, [("pass", 10, "red")] * 3, 10, ""))
    with pytest.raises(InputError, match="one source image"):
        model.prompt_ids(Item((image(0), image(1)), image(2), "x", PRINCIPLES))


def test_token_logp_is_the_float64_log_softmax_of_the_trace_tokens_only():
    model = SmallVerifier.for_rows(rows()[0], seed=1)
    traces = [model.encode_trace(GOOD), model.encode_trace(BAD), model.encode_trace(GOOD)]
    batch = model.batch(items(), traces)
    assert batch["mask"].sum(1).tolist() == [len(t) for t in traces]
    logits = model.net(batch["pixels"], batch["input_ids"], batch["real"]).double()          # [B, T, K]
    reference = torch.zeros(batch["input_ids"].shape, dtype=torch.float64)
    for b in range(3):
        for t in range(1, batch["input_ids"].shape[1]):
            if batch["mask"][b, t]:
                reference[b, t] = torch.log_softmax(logits[b, t - 1], -1)[batch["input_ids"][b, t]]
    torch.testing.assert_close(model.token_logp(batch).double(), reference, rtol=1e-5, atol=1e-5)
    # the prompt is input only: padding after a sequence changes nothing of it
    longer = model.batch(items()[:1], traces[:1])
    torch.testing.assert_close(model.token_logp(longer)[0], model.token_logp(batch)[0, :longer["mask"].shape[1]])
    assert sft_loss(model, batch).item() > 0


def test_greedy_generation_is_the_training_forwards_argmax():
    model = SmallVerifier.for_rows(rows()[0], seed=2)
    with torch.no_grad():                        # sharpen the random head so that the greedy path is well defined
        model.net.head.weight.mul_(20)
    shared = items()
    traces = model._generate(shared, temperature=0.0, top_p=1.0, max_new_tokens=30, seed=0)
    batch = model.batch(shared, traces.ids)
    logits = model.net(batch["pixels"], batch["input_ids"], batch["real"])                    # [B, T, K]
    for b, ids in enumerate(traces.ids):
        start = int(batch["mask"][b].nonzero()[0])
        assert ids == logits[b, start - 1:start - 1 + len(ids)].argmax(-1).tolist()
    assert model.judge_texts(shared, [[it.edited] for it in shared], 30) == traces.texts


def test_seeded_sampling_and_the_reference_copy():
    model = SmallVerifier.for_rows(rows()[0], seed=3)
    shared = Item((image(0),), None, "make the square red", PRINCIPLES)
    kwargs = dict(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5)
    first = model.sample_pair(shared, [image(1), image(2)], 3, **kwargs)
    assert len(first.ids) == 6 and all(0 < len(t) <= 12 for t in first.ids)
    assert model.sample_pair(shared, [image(1), image(2)], 3, **kwargs).ids == first.ids
    model.freeze_reference()
    before = [p.detach().clone() for p in model.reference_net.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.reference_net.parameters()))
    batch = model.batch(items(1), [first.ids[0]])
    with model.reference():
        reference = model.token_logp(batch)
    assert not torch.equal(reference, model.token_logp(batch))
    assert not any(p.requires_grad for p in model.reference_net.parameters())


def test_a_shared_prefix_samples_what_whole_prompts_sample():
    """Each candidate's prefilled prefix expanded to its n rollouts is the same computation as n prefills: the same
    seeded draws give the same traces, at temperature 1 as when greedy."""
    model = SmallVerifier.for_rows(rows()[0], seed=6)
    shared = Item((image(0),), None, "make the square red", PRINCIPLES)
    distinct = {}
    for temperature in (1.0, 0.0):
        kwargs = dict(temperature=temperature, top_p=0.95, max_new_tokens=20, seed=7)
        once = model.sample_pair(shared, [image(1), image(2)], 4, **kwargs)
        whole = model.sample_pair(shared, [image(1), image(2)], 4, shared_prefix=False, **kwargs)
        assert once.ids == whole.ids and len(once.ids) == 8
        distinct[temperature] = len({tuple(t) for t in once.ids[:4]})
    assert distinct == {1.0: 4, 0.0: 1}                 # sampled rollouts of one prefix differ; greedy ones do not
    # several pairs in one batch: greedy, each pair's traces are its own sample_pair's
    other = Item((image(3),), None, "move the big circle", PRINCIPLES)
    pairs = [[image(1), image(2)], [image(4), image(5)]]
    batched = model.sample_pairs([shared, other], pairs, 3, temperature=0.0, top_p=1.0, max_new_tokens=20, seed=0)
    assert [t.ids for t in batched] == [model.sample_pair(item, group, 3, temperature=0.0, top_p=1.0,
                                                          max_new_tokens=20, seed=9).ids
                                        for item, group in zip([shared, other], pairs)]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_top_p(logits, 0.7, generator) for _ in range(4000)])
    counts = torch.bincount(draws[:, 0], minlength=4).double() / 4000
    torch.testing.assert_close(counts, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64), atol=0.03,
                               rtol=0)
    assert set(sample_top_p(logits.expand(50, 4), 0.1, generator).tolist()) == {0}


def test_a_saved_model_loads_and_judges_as_before(tmp_path):
    model = SmallVerifier.for_rows(rows()[0], seed=4)
    shared = items()
    texts = model.judge_texts(shared, [[it.edited] for it in shared], 30)
    model.save(tmp_path / "model")
    loaded = SmallVerifier.load(tmp_path / "model")
    assert loaded.vocabulary == model.vocabulary
    assert loaded.judge_texts(shared, [[it.edited] for it in shared], 30) == texts
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors missing"):
        SmallVerifier.load(tmp_path / "nothing")


def config(tmp_path, *extra):
    return load_verifier_config(None, ["sft.steps=3", "sft.batch=3", "sft.warmup=1", "sft.schedule='cosine'",
                                       "sft.min_lr_ratio=0.5", "gcpo.steps=2", "gcpo.pairs=2", "gcpo.traces=2",
                                       "gcpo.max_new_tokens=24", "gcpo.lr=1e-3", "gcpo.updates_per_batch=2",
                                       "run.eval_every=0", "run.checkpoint_every=0", f"run.out_dir='{tmp_path}'",
                                       "run.progress=false", *extra])


@pytest.mark.parametrize("stop_at", [2, 4], ids=["during-sft", "during-gcpo"])
def test_resume_after_sigterm_gives_the_uninterrupted_parameters(tmp_path, stop_at):
    sft, prefs = rows()
    trainer = lambda out: VerifierTrainer(config(out), sft_rows=sft, preference_rows=prefs, eval_rows=prefs[:2],
                                          model=SmallVerifier.for_rows(sft, seed=0))
    straight = trainer(tmp_path / "straight")
    straight.run()
    interrupted = trainer(tmp_path / "stopped")
    name = "sft_step" if stop_at <= 3 else "gcpo_step"
    step = getattr(interrupted, name)

    def stop_after(number, optimizer):
        record = step(number, optimizer)
        if number == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return record
    setattr(interrupted, name, stop_after)
    assert interrupted.run()["stopped_by"] == signal.SIGTERM and interrupted.step == stop_at
    resumed = trainer(tmp_path / "stopped")
    assert resumed.run(resume=True)["step"] == 5
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.model.reference_net.parameters(), resumed.model.reference_net.parameters()):
        assert torch.equal(a, b)
    judged = SmallVerifier.load(tmp_path / "straight" / "model").judge_texts(
        [Item(p.sources, None, p.instruction, p.principles) for p in prefs[:2]],
        [[p.preferred, p.rejected] for p in prefs[:2]], 24)
    assert judged == [t for j in straight.judge_pairs(prefs[:2]) for t in j["texts"]]


def test_the_reward_probe_observes_without_changing_the_run(tmp_path):
    """gcpo.probe_pairs: the train reward on fixed pairs at the SFT end and at GCPO's evaluations; the same value
    for the same policy, and a run with it trains exactly as one without."""
    sft, prefs = rows()
    runs = {}
    for probe in (0, 3):
        trainer = VerifierTrainer(config(tmp_path / f"probe{probe}", "gcpo.eval_every=1", f"gcpo.probe_pairs={probe}"),
                                  sft_rows=sft, preference_rows=prefs, eval_rows=prefs[:2],
                                  model=SmallVerifier.for_rows(sft, seed=0))
        trainer.run()
        runs[probe] = trainer
    probed = [r["step"] for r in runs[3].history if "probe_reward" in r]
    assert probed == [3, 4, 5] and not any("probe_reward" in r for r in runs[0].history)
    assert [r.get("train_reward") for r in runs[3].history] == [r.get("train_reward") for r in runs[0].history]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].model.parameters(), runs[3].model.parameters()))
    assert runs[3].probe_reward() == runs[3].history[-1]["probe_reward"]


def test_the_reward_probe_is_the_preferred_groups_mean_gcpo_reward(tmp_path):
    """Hand-computed: preferred traces scoring 8 and 5 against rejected ones scoring 5 and 2 beat 2/2 and 1/2 of
    them (a tie beats nothing): reward 0.75 on every probe pair."""
    sft, prefs = rows()
    scores = {"preferred": (8, 5), "rejected": (5, 2)}

    class Scripted(SmallVerifier):
        def sample_pairs(self, shared, candidates, n, **kwargs):
            texts = [verdict_trace(PRINCIPLES, [("pass", s, "")] * 3, s, "")
                     for side in ("preferred", "rejected") for s in scores[side]]
            return [Traces([self.encode_trace(t) for t in texts], texts) for _ in shared]

    model = Scripted(SmallVerifier.for_rows(sft).config)
    trainer = VerifierTrainer(config(tmp_path, "gcpo.probe_pairs=4"), sft_rows=sft, preference_rows=prefs,
                              model=model)
    assert [trace_score(PRINCIPLES, verdict_trace(PRINCIPLES, [("pass", s, "")] * 3, s, "")) for s in (8, 5)] == \
        pytest.approx([0.8, 0.5])
    assert trainer.probe_reward() == 0.75


def test_gcpo_ratios_are_against_the_sampling_policy_through_every_update(tmp_path):
    """The first pass is on-policy (ratio exactly 1: nothing clipped); later passes of the same batch compare with
    the sampling policy's log-probs, kept from the first pass, so after a large update some ratios leave 1 ± ε."""
    sft, prefs = rows()
    clipped = {}
    for updates in (1, 3):
        trainer = VerifierTrainer(config(tmp_path / str(updates), f"gcpo.updates_per_batch={updates}",
                                         "sft.steps=30", "sft.lr=1e-2", "gcpo.lr=3e-2", "gcpo.traces=4"),
                                  sft_rows=sft, preference_rows=prefs, model=SmallVerifier.for_rows(sft, seed=0))
        trainer.run()
        clipped[updates] = [r["clip_fraction"] for r in trainer.history if r.get("stage") == "gcpo"]
    assert clipped[1] == [0.0, 0.0] and max(clipped[3]) > 0, clipped
