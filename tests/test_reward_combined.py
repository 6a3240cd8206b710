"""load_reward's kinds and weighted combinations: the weighted mean, NaN propagation, details per part, errors."""
from __future__ import annotations

import math

import pytest
import torch

import editrl_engine.reward as reward_module
from editrl_engine.reward import CombinedReward, RewardBatch, RewardModel, load_reward


class FixedReward(RewardModel):
    """Returns the given rewards, whatever it is shown."""

    def __init__(self, kind: str, rewards: list[float]):
        self.kind, self.rewards = kind, rewards

    def score(self, sources, instructions, edited, offset: float = 0.0) -> RewardBatch:
        reward = torch.tensor(self.rewards, dtype=torch.float32) + offset
        return RewardBatch(reward=reward, details=[{"seen": self.kind} for _ in self.rewards],
                           failures=int(torch.isnan(reward).sum()))


TRIPLES = (["s1", "s2", "s3"], ["i1", "i2", "i3"], ["e1", "e2", "e3"])


def test_the_reward_is_the_weighted_mean_and_nan_propagates():
    combined = CombinedReward({"a": (FixedReward("a", [1.0, 0.0, 0.5]), 0.7),
                               "b": (FixedReward("b", [0.0, 1.0, math.nan]), 0.3)})
    batch = combined.score(*TRIPLES)
    assert torch.allclose(batch.reward[:2], torch.tensor([0.7, 0.3]))
    assert math.isnan(batch.reward[2]) and batch.failures == 1
    assert batch.details[0] == {"a": {"reward": 1.0, "seen": "a"}, "b": {"reward": 0.0, "seen": "b"}}
    assert batch.details[2]["error"] == "no reward from b" and "error" not in batch.details[0]
    assert combined.metadata()["weights"] == {"a": 0.7, "b": 0.3}


def test_weights_need_not_sum_to_one_and_options_reach_their_part():
    combined = CombinedReward({"a": (FixedReward("a", [0.2]), 2), "b": (FixedReward("b", [0.8]), 2)})
    assert torch.allclose(combined.score(["s"], ["i"], ["e"]).reward, torch.tensor([0.5]))
    shifted = combined.score(["s"], ["i"], ["e"], a={"offset": 0.2})
    assert torch.allclose(shifted.reward, torch.tensor([0.6]))
    with pytest.raises(ValueError, match="unknown parts"):
        combined.score(["s"], ["i"], ["e"], c={"offset": 1})


@pytest.mark.parametrize("weight", [0, -1, math.nan, math.inf, "1"])
def test_bad_weights_are_refused(weight):
    with pytest.raises(ValueError, match="finite number > 0"):
        CombinedReward({"a": (FixedReward("a", [0.5]), weight)})


def test_bad_parts_are_refused():
    with pytest.raises(ValueError, match="at least one part"):
        CombinedReward({})
    with pytest.raises(TypeError, match="not a RewardModel"):
        CombinedReward({"a": (object(), 1.0)})


def test_load_reward_combines_kinds_with_per_part_settings():
    single = load_reward("mllm_logit", preset="tiny")
    combined = load_reward({"mllm_logit": {"weight": 0.5, "preset": "tiny", "batch_size": 2}}, preset="elsewhere")
    assert isinstance(combined, CombinedReward) and combined.parts["mllm_logit"][0].batch_size == 2
    sources = [torch.full((3, 32, 32), 40 * i, dtype=torch.uint8) for i in range(3)]
    edited = [torch.full((3, 32, 32), 200 - 40 * i, dtype=torch.uint8) for i in range(3)]
    instructions = ["make it red", "add a star", "remove the square"]
    torch.testing.assert_close(combined.score(sources, instructions, edited).reward,
                               single.score(sources, instructions, edited).reward)
    with pytest.raises(ValueError, match="no weight"):
        load_reward({"mllm_logit": {"preset": "tiny"}})


def test_bad_kinds_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown reward kind 'clip'"):
        load_reward("clip")
    with pytest.raises(ValueError, match="unknown reward kind 'clip'"):
        load_reward({"mllm_logit": 0.5, "clip": 0.5}, preset="tiny")
    monkeypatch.setitem(reward_module.KINDS, "planned", "editrl_engine.reward.no_such_module")
    with pytest.raises(NotImplementedError, match="reward kind 'planned' is not implemented yet"):
        load_reward("planned")
