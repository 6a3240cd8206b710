"""The training loop on the tiny policy: NFT and GRPO steps, exactly-once rewards, micro-batching, filtering, NaN
rewards, checkpoints, and resume after a SIGTERM equal to an uninterrupted run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from editrl_engine.engine import Trainer
from editrl_engine.engine.metrics import read_metrics

from .engine_fakes import BrightnessReward, tiny_config


def lora_state(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.params]


def run(config, reward=None, resume=False):
    trainer = Trainer(config, reward=reward or BrightnessReward())
    summary = trainer.train(resume=resume)
    return trainer, summary


def test_nft_steps_train_and_log(tmp_path):
    config = tiny_config(tmp_path / "run", "run.steps=3")
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.setup()                                       # builds once; train() keeps what it built
    before = lora_state(trainer)
    summary = trainer.train()
    after = lora_state(trainer)
    assert summary["step"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the LoRA weights did not move"
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for key in ("reward_mean", "reward_std", "filtered_frac", "zero_std_group_frac", "parse_failures", "grad_norm",
                "staleness", "time_rollout", "time_score", "time_update", "time_idle", "images_per_s"):
        assert key in rows[0], key
    assert rows[0]["staleness"] == 1 and rows[0]["grad_norm"] > 0
    # the checkpoint's adapter is what diffusers' Kontext pipeline reads
    from diffusers import FluxKontextPipeline
    lora = FluxKontextPipeline.lora_state_dict(str(tmp_path / "run" / "checkpoints" / "step-000003" / "lora"))
    state = lora[0] if isinstance(lora, tuple) else lora
    assert state and all(k.startswith("transformer.") for k in state)


@pytest.fixture
def audited_ledger(monkeypatch):
    """Ledgers that keep every sample's use count (`uses`); a run's own ledger keeps only bounded counts."""
    from editrl_engine.engine.scoring import RewardLedger
    monkeypatch.setattr(RewardLedger, "audit", True)


def test_every_reward_is_used_exactly_once(tmp_path, audited_ledger):
    trainer, _ = run(tiny_config(tmp_path / "run", "run.steps=4", "sampling.rollout_batch=3"))
    uses = trainer.ledger.uses
    assert len(uses) == 4 * 8                             # 4 steps x 2 groups x 4 samples, none lost
    assert trainer.ledger.violations() == {}
    assert {step for step, _ in uses} == {0, 1, 2, 3}
    ledger = trainer.ledger                               # the bounded counts say the same
    assert (ledger.consumed, ledger.steps, ledger.first_step, ledger.last_step) == (4 * 8, 4, 0, 3)


def test_micro_batches_do_not_change_the_update(tmp_path):
    whole, _ = run(tiny_config(tmp_path / "a", "optim.micro_batch=0"))
    parts, _ = run(tiny_config(tmp_path / "b", "optim.micro_batch=3"))
    for a, b in zip(lora_state(whole), lora_state(parts)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)   # Adam after 2 steps


def test_filtered_groups_make_no_update_and_are_banned(tmp_path):
    class Constant(BrightnessReward):
        def score(self, sources, instructions, edited, **_):
            batch = super().score(sources, instructions, edited)
            batch.reward = torch.full_like(batch.reward, 0.95)     # solved: std 0, mean 0.95
            return batch

    config = tiny_config(tmp_path / "run", "run.steps=2", "algo.advantage.filter_std=0.05",
                         "algo.advantage.filter_mean=0.9", "algo.advantage.ban_std=0.05",
                         "algo.advantage.ban_mean=0.9", "optim.weight_decay=0.1")
    trainer = Trainer(config, reward=Constant())
    trainer.train()
    assert all(h["filtered_frac"] == 1.0 and h["optimizer_steps"] == 0 for h in trainer.history)
    assert all(torch.count_nonzero(p) == 0 for p in trainer.policy.lora_parameters()[1::2])   # lora_B stays 0
    assert len(trainer.sampler.banned) == 4               # 2 groups banned at each of the 2 steps


def test_nan_rewards_are_excluded_and_counted(tmp_path):
    trainer, _ = run(tiny_config(tmp_path / "run", "run.steps=2"), reward=BrightnessReward(nan_every=1))
    for h in trainer.history:
        assert h["parse_failures"] == 1 and h["nan_count"] == 1
        assert h["valid_frac"] == pytest.approx(7 / 8)
        assert math.isfinite(h["reward_mean"])


def test_grpo_first_update_is_on_policy(tmp_path):
    trainer, _ = run(tiny_config(tmp_path / "run", "run.steps=2", "pipeline.staleness=0", algo="grpo"))
    first = trainer.history[0]
    assert first["staleness"] == 0
    assert first["approx_kl"] < 1e-8 and first["clipfrac"] == 0.0   # ratio 1: the rollout's own log-probs
    assert first["grad_norm"] > 0
    with pytest.raises(ValueError, match="staleness = 0"):
        Trainer(tiny_config(tmp_path / "x", "pipeline.staleness=1", algo="grpo"))


@pytest.mark.parametrize("algo", ["nft", "grpo"])
def test_resume_after_sigterm_equals_an_uninterrupted_run(tmp_path, algo, audited_ledger):
    straight, _ = run(tiny_config(tmp_path / "straight", "run.steps=4", algo=algo))
    # the reward's 2nd call sends SIGTERM: the step finishes, a checkpoint is written, the run stops
    killed = Trainer(tiny_config(tmp_path / "killed", "run.steps=4", algo=algo),
                     reward=BrightnessReward(kill_on_call=2))
    summary = killed.train()
    assert summary["stopped_by_signal"] is not None and summary["step"] < 4
    assert summary["checkpoint"] and (tmp_path / "killed" / "checkpoints" / "latest").is_file()
    resumed, summary = run(tiny_config(tmp_path / "killed", "run.steps=4", algo=algo), resume=True)
    assert summary["step"] == 4
    for a, b in zip(lora_state(straight), lora_state(resumed)):
        assert torch.equal(a, b)
    rows = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert straight.ledger.uses == resumed.ledger.uses
    assert straight.ledger.state_dict() == resumed.ledger.state_dict()


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_config(tmp_path / "run"), reward=BrightnessReward()).train(resume=True)


def test_checkpoint_is_atomic_and_pruned(tmp_path):
    run(tiny_config(tmp_path / "run", "run.steps=3", "checkpoint.every=1", "checkpoint.keep=2"))
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000003"]
    assert (root / "latest").read_text().strip() == "step-000003"
    meta = json.loads((root / "step-000003" / "meta.json").read_text())
    assert meta["step"] == 3


@pytest.mark.parametrize("group_noise", [False, True])
def test_nft_training_noise_per_sample_or_per_group(tmp_path, group_noise):
    from editrl_engine.algo.sampler import StepPlan
    from editrl_engine.engine.batch import Rollout
    config = tiny_config(tmp_path, f"algo.nft.group_noise={str(group_noise).lower()}")
    plan = StepPlan(step=3, keys=(), rows=(), group_size=4, world_size=1)
    rollout = Rollout(plan, list(range(8)), None, torch.zeros(8, 5, 2), None, [], [1.0, 0.75, 0.5, 0.25, 0.0],
                      None, 0.0)
    t, noise = config.algo.build(config).timesteps(rollout, "cpu")         # [8, K], [8, K, 5, 2]
    assert t.shape == (8, 3) and noise.shape == (8, 3, 5, 2)               # K = int(4 * 0.99) = 3
    for row in t:                                                           # distinct timesteps of the rollout
        assert len(set(row.tolist())) == 3 and set(row.tolist()) <= {1.0, 0.75, 0.5, 0.25}
    same_in_group = torch.equal(noise[0], noise[1]) and torch.equal(t[0], t[3]) and torch.equal(noise[4], noise[7])
    assert same_in_group == group_noise
    assert not torch.equal(noise[0], noise[4])                             # different groups always differ


def test_ema_follows_the_weights_and_evaluation_swaps_it_in_and_out(tmp_path):
    from editrl_engine.engine.tasks import TaskSet
    config = tiny_config(tmp_path / "run", "run.steps=2", "optim.ema_every=1", "optim.ema_decay=0.5")
    trainer, _ = run(config)
    assert all(torch.count_nonzero(e) > 0 for e in trainer.ema[1::2])         # lora_B left 0: the EMA moved
    live = lora_state(trainer)
    assert any(not torch.equal(e, p) for e, p in zip(trainer.ema, live))      # and lags the live weights
    held_out = TaskSet.from_config(config.data, held_out=True)
    held_out.rows, held_out.keys = held_out.rows[:2], held_out.keys[:2]

    class Recorder(BrightnessReward):
        seen: list = []

        def score(self, sources, instructions, edited, **options):
            Recorder.seen.append([p.detach().clone() for p in trainer.params])
            return super().score(sources, instructions, edited)

    with_ema = trainer.evaluate(held_out, use_ema=True, reward=Recorder())
    assert all(torch.equal(a, e) for a, e in zip(Recorder.seen[-1], trainer.ema))      # scored with the EMA
    assert all(torch.equal(a, b) for a, b in zip(lora_state(trainer), live))           # and swapped back out
    plain = trainer.evaluate(held_out, reward=Recorder())
    assert all(torch.equal(a, b) for a, b in zip(Recorder.seen[-1], live))
    assert with_ema["rewards"].shape == plain["rewards"].shape == (2,)


def test_ema_with_decay_zero_is_the_live_weights(tmp_path):
    trainer, _ = run(tiny_config(tmp_path / "run", "run.steps=2", "optim.ema_every=1", "optim.ema_decay=0.0"))
    assert all(torch.equal(e, p) for e, p in zip(trainer.ema, lora_state(trainer)))
