"""Every shipped model config runs one engine step end to end when its models are swapped for the tiny presets,
and the engine's group-scoring path gives the rewards a flat score() call gives."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.engine import Trainer, load_config
from editrl_engine.engine.config import shipped_configs
from editrl_engine.engine.scoring import ScoreJob, score_job
from editrl_engine.engine.tasks import TaskSet

TINY = ["policy.path=''", "policy.preset='tiny'", "policy.attention='math'", "policy.gradient_checkpointing=false",
        "reward.path=''", "reward.preset='tiny'", "reward.dtype='float32'", "reward.backend='eager'",
        "run.dtype='float32'", "data.manifest=''", "data.synthetic_tasks=4", "data.image_size=32",
        "sampling.group_size=2", "sampling.groups_per_step=2", "sampling.num_steps=8", "sampling.rollout_batch=2",
        "run.steps=1", "optim.micro_batch=0", "log.progress=false", "log.tensorboard=false",
        "algo.advantage.filter_std=-1.0", "algo.advantage.filter_mean=-1.0", "algo.advantage.ban_std=-1.0"]


MODEL_CONFIGS = sorted(name for name in shipped_configs() if name != "demo")     # the demo has its own tests


def test_the_model_configs_are_found():
    assert {"flux-kontext-nft-editscore", "flux-kontext-grpo-editscore", "qwen-image-edit-nft-mllm",
            "qwen-image-edit-grpo-verifier", "flux-kontext-grpo-verifier"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_shipped_config_runs_a_step_on_tiny_models(name, tmp_path):
    size = ["data.image_size=64"] if load_config(name).policy.family == "flux2" else []   # FLUX.2: >= 64 px a side
    config = load_config(name, TINY + size + [f"run.out_dir='{tmp_path}'"])
    trainer = Trainer(config)
    summary = trainer.train()
    assert summary["step"] == 1 and (tmp_path / "checkpoints" / "step-000001" / "lora").is_dir()
    metrics = trainer.history[0]
    if config.reward.kind == "mllm_logit":                   # logits always give a reward
        assert metrics["nan_count"] == 0 and 0 < metrics["reward_mean"] < 1
    else:                                                      # a random judge's text is unparseable: NaN, counted
        assert metrics["parse_failures"] == metrics["nan_count"] == 4 and math.isnan(metrics["reward_mean"])
        assert metrics["optimizer_steps"] == 0


def test_group_scoring_equals_flat_scoring():
    from editrl_engine.reward import load_reward
    reward = load_reward("mllm_logit", preset="tiny")
    tasks = TaskSet.from_config(load_config(None, ["data.synthetic_tasks=2", "data.image_size=32"]).data)
    rows = [tasks.rows[0]] * 3 + [tasks.rows[1]] * 2                       # two groups: 3 and 2 candidates
    sources = [tasks.image(tasks.keys[0])] * 3 + [tasks.image(tasks.keys[1])] * 2
    edited = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    job = ScoreJob([(0, i) for i in range(5)], sources, [r.instruction for r in rows], edited, rows, [3, 2])
    grouped = score_job(reward, job)
    assert all(r.requirement for r in rows)                     # synthetic rows carry a task requirement ...
    flat = reward.score(sources, [r.instruction for r in rows], list(edited),
                        requirements=[r.requirement for r in rows])
    torch.testing.assert_close(grouped.rewards, flat.reward, rtol=1e-5, atol=1e-6)
    plain = reward.score(sources, [r.instruction for r in rows], list(edited))
    assert not torch.allclose(plain.reward, flat.reward)          # ... and it reaches the judge's prompt


def test_manifest_principles_reach_the_verifier_through_its_group_path(monkeypatch):
    import dataclasses

    from editrl_engine.reward import load_reward
    reward = load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 8}, batch_size=4)
    tasks = TaskSet.from_config(load_config(None, ["data.synthetic_tasks=2", "data.image_size=32"]).data)
    given = [("follow: the shape is gone", "keep: the background"), ("follow: the circle is red",)]
    rows = [dataclasses.replace(tasks.rows[0], principles=given[0])] * 3 + \
        [dataclasses.replace(tasks.rows[1], principles=given[1])] * 2
    sources = [tasks.image(tasks.keys[0])] * 3 + [tasks.image(tasks.keys[1])] * 2
    edited = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    job = ScoreJob([(0, i) for i in range(5)], sources, [r.instruction for r in rows], edited, rows, [3, 2])
    calls = []
    score_groups = reward.score_groups
    monkeypatch.setattr(reward, "score_groups", lambda *a, **k: calls.append(k) or score_groups(*a, **k))
    grouped = score_job(reward, job)
    principles = [[list(row.principles) for row in k["rows"]] for k in calls]    # what the verifier reads
    assert principles == [[list(given[0]), list(given[1])]]                  # one call, one principle list per group
    flat = reward.score(sources, [r.instruction for r in rows], list(edited), principles=[list(r.principles)
                                                                                           for r in rows])
    assert [d["answer"] for d in grouped.details] == [d["answer"] for d in flat.details]
    assert [p["text"] for p in grouped.details[4]["principles"]] == ["the circle is red"]
    assert all(d["principles_source"] == "given" for d in grouped.details)
