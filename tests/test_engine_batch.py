"""The typed step data: Batch.split and micro_batches by hand, and a Rollout's checkpoint record, including the
record of checkpoints written before Rollout existed (a pickled rollouts.LocalRollout with a "grpo" dict)."""
from __future__ import annotations

import io

import torch

from editrl_engine.algo.sampler import StepPlan
from editrl_engine.engine.batch import Batch, GRPOTrajectory, Rollout, rollout_from_record, rollout_record
from editrl_engine.engine.rollouts import LocalRollout

PLAN = StepPlan(step=3, keys=(), rows=(), group_size=2, world_size=1)


def trajectory(n: int = 5) -> GRPOTrajectory:
    return GRPOTrajectory(torch.randn(n, 2, 3, 4), torch.randn(n, 2, 3, 4), torch.randn(n, 2),
                          torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.25]), torch.tensor([0, 1]))


def rollout(n: int = 5, with_trajectory: bool = True) -> Rollout:
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    return Rollout(PLAN, list(range(10, 10 + n)), None, torch.randn(n, 3, 4), images,
                   [torch.zeros(3, 2, 2, dtype=torch.uint8)] * n, [1.0, 0.5, 0.25, 0.0],
                   trajectory(n) if with_trajectory else None, 1.5)


def batch(valid: list[bool]) -> Batch:
    n = len(valid)
    return Batch(rollout(n), torch.zeros(n), torch.tensor(valid), valid, list(range(n)))


def test_split_gives_near_equal_consecutive_parts_and_counts_their_valid_rows():
    parts = batch([True, False, True, True, False, True, True]).split(3)
    assert [p.rows for p in parts] == [[0, 1], [2, 3, 4], [5, 6]]          # bounds round(i * 7 / 3): 0 2 5 7
    assert [p.local_valid for p in parts] == [1, 2, 2]


def test_micro_batches_skip_those_without_a_valid_row():
    b = batch([False, False, True, False, True])
    assert b.micro_batches(2) == [([2, 3], 1), ([4], 1)]                   # [0, 1] has none: skipped
    assert b.micro_batches(0) == [([0, 1, 2, 3, 4], 2)]                    # 0: the whole batch at once


def assert_same(a: Rollout, b: Rollout) -> None:
    assert (a.plan, a.indices, a.sigmas, a.seconds) == (b.plan, b.indices, b.sigmas, b.seconds)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.images, b.images)
    assert (a.trajectory is None) == (b.trajectory is None)
    if a.trajectory is not None:
        for x, y in zip(vars(a.trajectory).values(), vars(b.trajectory).values()):
            assert torch.equal(x, y)


def saved_and_loaded(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_a_rollout_record_round_trips_with_and_without_trajectory():
    for with_trajectory in (True, False):
        original = rollout(with_trajectory=with_trajectory)
        record = saved_and_loaded(rollout_record(original))
        assert isinstance(record, dict) and (record["trajectory"] is None or isinstance(record["trajectory"], dict))
        assert_same(rollout_from_record(record), original)


def test_the_record_of_older_checkpoints_is_read():
    original = rollout()
    legacy = LocalRollout()                         # what older checkpoints pickled: its fields, GRPO data as a dict
    legacy.__dict__.update(plan=original.plan, indices=original.indices, cond=None, x0=original.x0,
                           images=original.images, sources=original.sources, sigmas=original.sigmas,
                           grpo={k: v for k, v in vars(original.trajectory).items()}, futures=[],
                           seconds=original.seconds)
    assert_same(rollout_from_record(saved_and_loaded(legacy)), original)
