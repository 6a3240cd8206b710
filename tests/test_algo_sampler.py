"""GroupSampler: grouping by (instruction, image hash), determinism, epoch coverage, rank splitting, resume and
banning."""
from __future__ import annotations

import collections
import json

import pytest

from editrl_engine.algo import GroupSampler
from editrl_engine.data.manifest import EditRow, GroupKey, file_digest


def make_rows(n):
    rows = [EditRow(id=f"r{i}", source=f"img{i}.png", instruction=f"edit {i}") for i in range(n)]
    keys = [GroupKey(r.instruction, f"sha{i}") for i, r in enumerate(rows)]
    return rows, keys


def draws(sampler, steps):
    return [sampler.next_plan().keys for _ in range(steps)]


def test_grouping_uses_image_hash(tmp_path):
    (tmp_path / "a.png").write_bytes(b"image A")
    (tmp_path / "b.png").write_bytes(b"image B")
    (tmp_path / "a_copy.png").write_bytes(b"image A")
    rows = [EditRow("1", tmp_path / "a.png", "make it red"), EditRow("2", tmp_path / "b.png", "make it red"),
            EditRow("3", tmp_path / "a_copy.png", "make it red")]
    sampler = GroupSampler(rows, group_size=2, groups_per_step=2)
    assert sampler.keys == [GroupKey("make it red", file_digest(tmp_path / "a.png")),
                            GroupKey("make it red", file_digest(tmp_path / "b.png"))]
    assert [r.id for r in sampler.rows] == ["1", "2"]    # the copy joins row 1's group
    assert set(sampler.next_plan().keys) == set(sampler.keys)


def test_deterministic_and_seeded():
    rows, keys = make_rows(10)
    a = draws(GroupSampler(rows, keys=keys, group_size=3, groups_per_step=4, seed=7), 6)
    b = draws(GroupSampler(rows, keys=keys, group_size=3, groups_per_step=4, seed=7), 6)
    c = draws(GroupSampler(rows, keys=keys, group_size=3, groups_per_step=4, seed=8), 6)
    assert a == b and a != c


@pytest.mark.parametrize("n, per_step", [(10, 4), (12, 4), (7, 3), (5, 5)])
def test_epoch_coverage_and_distinct(n, per_step):
    rows, keys = make_rows(n)
    sampler = GroupSampler(rows, keys=keys, group_size=2, groups_per_step=per_step, seed=1)
    flat = [k for step in draws(sampler, 3 * n) for k in step]
    for step in range(3 * n):
        assert len(set(flat[step * per_step:(step + 1) * per_step])) == per_step
    for epoch in range(len(flat) // n):     # every key once before any repeats
        assert set(flat[epoch * n:(epoch + 1) * n]) == set(keys)


@pytest.mark.parametrize("world_size, group_size, groups", [(1, 4, 3), (2, 4, 3), (3, 2, 3), (4, 3, 4)])
def test_rank_split_covers_global_plan(world_size, group_size, groups):
    rows, keys = make_rows(9)
    plans = [GroupSampler(rows, keys=keys, group_size=group_size, groups_per_step=groups, seed=3,
                          world_size=world_size).next_plan() for _ in range(world_size)]
    assert all(p == plans[0] for p in plans)            # every rank computes the same global plan
    plan = plans[0]
    union = [s for rank, p in enumerate(plans) for s in p.local(rank)]
    assert [n for n, _, _ in union] == list(range(plan.num_samples))
    assert [g for _, g, _ in union] == plan.group_index
    assert all(row is plan.rows[g] for _, g, row in union)
    assert collections.Counter(plan.group_index) == {g: group_size for g in range(groups)}
    assert len({len(range(*plan.rank_slice(r).indices(plan.num_samples))) for r in range(world_size)}) == 1


def test_uneven_split_rejected():
    rows, keys = make_rows(4)
    with pytest.raises(ValueError, match="split evenly"):
        GroupSampler(rows, keys=keys, group_size=3, groups_per_step=1, world_size=2)


@pytest.mark.parametrize("saved_at", [2, 3, 4])           # 4 steps = 12 draws: across the epoch boundary
def test_resume_mid_epoch_equals_straight_run(saved_at):
    rows, keys = make_rows(11)
    make = lambda: GroupSampler(rows, keys=keys, group_size=2, groups_per_step=3, seed=5)
    straight = make()
    draws(straight, saved_at)
    straight.ban([keys[0]])
    state = json.loads(json.dumps(straight.state_dict()))  # JSON round trip, as in a checkpoint
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.banned == {keys[0]} and resumed.step == saved_at
    assert draws(resumed, 7) == draws(straight, 7)


def test_ban_removes_keys_from_future_draws():
    rows, keys = make_rows(6)
    sampler = GroupSampler(rows, keys=keys, group_size=2, groups_per_step=2, seed=0)
    sampler.next_plan()
    sampler.ban([tuple(keys[1]), keys[4]])
    later = [k for step in draws(sampler, 12) for k in step]
    assert keys[1] not in later and keys[4] not in later
    assert set(later) == set(keys) - {keys[1], keys[4]}
    sampler.ban(keys[:4])
    with pytest.raises(RuntimeError, match="not banned"):
        sampler.next_plan()


def test_load_rejects_other_manifest():
    rows, keys = make_rows(5)
    state = GroupSampler(rows, keys=keys, group_size=1, groups_per_step=1).state_dict()
    rows6, keys6 = make_rows(6)
    with pytest.raises(ValueError, match="same manifest"):
        GroupSampler(rows6, keys=keys6, group_size=1, groups_per_step=1).load_state_dict(state)
