"""The engine's reward boundary: a ScoreJob carries its groups and is scored through reward.score_groups with one
row per group; RewardModel's flat score_groups fallback; a combination hands groups to its parts; the bounded
reward ledger (counts, repeats, late uses, its state and the old per-sample checkpoint format)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from editrl_engine.data.manifest import EditRow
from editrl_engine.engine.scoring import RewardLedger, ScoreJob, run_lengths, score_job
from editrl_engine.reward import CombinedReward
from editrl_engine.reward.base import RewardBatch, RewardModel, check_triples

ROWS = [EditRow("a", "a.png", "make it red", requirement="red"), EditRow("b", "b.png", "add a star")]


class RowReward(RewardModel):
    """reward = mean red / 255; records what each call saw (the rows, and whether it came as groups)."""
    kind = "rows"

    def __init__(self, shares_prefix: bool = False):
        self.shares_prefix = shares_prefix
        self.calls: list[tuple[str, object]] = []

    def score(self, sources, instructions, edited, *, rows=None) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        self.calls.append(("flat", [r.id for r in rows] if rows is not None else None))
        reward = torch.stack([torch.as_tensor(e).float()[0].mean() / 255 for e in edited])    # [n]
        return RewardBatch(reward, [{} for _ in range(n)])

    def score_groups(self, sources, instructions, groups, *, rows=None) -> RewardBatch:
        if not self.shares_prefix:
            return super().score_groups(sources, instructions, groups, rows=rows)
        self.calls.append(("groups", [len(g) for g in groups], [r.id for r in rows]))
        flat = [image for group in groups for image in group]
        return self.score([None] * len(flat), [""] * len(flat), flat)


def images(reds: list[int]) -> torch.Tensor:
    return torch.stack([torch.full((3, 4, 4), r, dtype=torch.uint8) for r in reds])           # uint8 [n, 3, 4, 4]


def job(sizes=(3, 2)) -> ScoreJob:
    rows = [ROWS[0]] * sizes[0] + [ROWS[1]] * sizes[1]
    n = len(rows)
    return ScoreJob([(0, i) for i in range(n)], [torch.zeros(3, 4, 4, dtype=torch.uint8)] * n,
                    [r.instruction for r in rows], images([10 * i for i in range(n)]), rows, list(sizes))


def test_a_job_is_scored_as_its_groups_with_one_row_per_group():
    reward = RowReward(shares_prefix=True)
    scored = score_job(reward, job())
    assert reward.calls[0] == ("groups", [3, 2], ["a", "b"])
    torch.testing.assert_close(scored.rewards, torch.tensor([0, 10, 20, 30, 40]) / 255)


def test_the_flat_fallback_repeats_each_groups_row_per_candidate():
    reward = RowReward()
    scored = score_job(reward, job())
    assert reward.calls == [("flat", ["a", "a", "a", "b", "b"])]
    torch.testing.assert_close(scored.rewards, torch.tensor([0, 10, 20, 30, 40]) / 255)
    with pytest.raises(ValueError, match="empty group"):
        reward.score_groups([None, None], ["x", "y"], [[images([1])[0]], []])
    with pytest.raises(ValueError, match="1 rows for 2 groups"):
        reward.score_groups([None, None], ["x", "y"], [[images([1])[0]]] * 2, rows=ROWS[:1])


def test_a_reward_returning_the_wrong_count_is_named():
    class Short(RowReward):
        def score(self, sources, instructions, edited, *, rows=None):
            return super().score(sources[:1], instructions[:1], edited[:1])
    with pytest.raises(RuntimeError, match="returned 1 rewards for 5 candidates"):
        score_job(Short(), job())


def test_a_combination_hands_the_groups_to_each_part():
    grouped, flat = RowReward(shares_prefix=True), RowReward()
    combined = CombinedReward({"g": (grouped, 1.0), "f": (flat, 3.0)})
    assert combined.shares_prefix and not CombinedReward({"f": (RowReward(), 1.0)}).shares_prefix
    scored = score_job(combined, job())
    assert grouped.calls[0] == ("groups", [3, 2], ["a", "b"]) and flat.calls == [("flat", ["a", "a", "a", "b", "b"])]
    torch.testing.assert_close(scored.rewards, torch.tensor([0, 10, 20, 30, 40]) / 255)


def test_job_groups_are_checked():
    assert run_lengths([3, 3, 5, 5, 5, 3]) == [2, 3, 1]
    with pytest.raises(ValueError, match="sum to the job's 5 samples"):
        dataclasses.replace(job(), group_sizes=[3, 3])
    with pytest.raises(ValueError, match="differ in instruction or row"):
        dataclasses.replace(job(), group_sizes=[2, 3])


def test_the_ledger_counts_and_finds_repeats_and_late_uses():
    ledger = RewardLedger()
    for step in range(100):
        ledger.consume([(step, n) for n in range(8)])
    assert (ledger.consumed, ledger.steps, ledger.first_step, ledger.last_step) == (800, 100, 0, 99)
    assert ledger.violations() == {} and ledger.uses is None
    assert sum(len(c) for c in ledger.recent.values()) == 2 * 8                  # bounded: the last two steps
    ledger.consume([(99, 3)])                                                     # a repeat within the window
    ledger.consume([(5, 0)])                                                      # a step long consumed
    assert ledger.violations() == {(99, 3): 2, (5, 0): 2}
    again = RewardLedger()
    again.load_state_dict(ledger.state_dict())
    assert again.state_dict() == ledger.state_dict() and again.violations() == ledger.violations()


def test_the_old_per_sample_checkpoint_format_loads(monkeypatch):
    old = {"uses": [[0, 0, 1], [0, 1, 2], [1, 0, 1], [1, 1, 1], [2, 0, 1]]}
    ledger = RewardLedger()
    ledger.load_state_dict(old)
    assert (ledger.consumed, ledger.steps, ledger.last_step) == (6, 3, 2)
    assert ledger.violations() == {(0, 1): 2}
    ledger.consume([(2, 0)])
    assert ledger.violations() == {(0, 1): 2, (2, 0): 2}
    monkeypatch.setattr(RewardLedger, "audit", True)
    audited = RewardLedger()
    audited.load_state_dict(old)
    assert audited.uses == {(0, 0): 1, (0, 1): 2, (1, 0): 1, (1, 1): 1, (2, 0): 1}
    assert audited.violations() == {(0, 1): 2}
    restored = RewardLedger()
    restored.load_state_dict(audited.state_dict())
    assert restored.uses == audited.uses
