"""Role assignment of `placement = 'separate'` across nodes, without launching processes: every node scores on its
own reward ranks (the last R / nodes local ranks) and a policy rank is served on its own node; one node keeps the
old layout (the last R ranks of the world score, policy rank p is served by reward rank p % R)."""
from __future__ import annotations

import dataclasses

import pytest

from editrl_engine.engine.distributed import Placement, assign_roles


def _seen_by_every_rank(world: int, local_world: int, reward_ranks: int):
    """assign_roles from each rank's own (rank, local rank, node) as torchrun sets them; all must agree."""
    views = [assign_roles(r, world, r % local_world, local_world, reward_ranks, r // local_world,
                          world // local_world) for r in range(world)]
    assert all(v == views[0] for v in views)
    return views[0]


def _placement(rank: int, world: int, roles) -> Placement:
    return dataclasses.replace(Placement(), rank=rank, world_size=world, policy_ranks=roles.policy_ranks,
                               reward_ranks=roles.reward_ranks, served_by=roles.served_by)


def test_two_nodes_of_two_processes_score_on_their_own_node():
    roles = _seen_by_every_rank(world=4, local_world=2, reward_ranks=2)
    assert roles.policy_ranks == (0, 2) and roles.reward_ranks == (1, 3)
    assert roles.served_by == {0: 1, 2: 3}
    placement = _placement(0, 4, roles)
    assert [placement.reward_rank_for(p) for p in (0, 2)] == [1, 3]
    assert placement.policy_ranks_served_by(1) == [0] and placement.policy_ranks_served_by(3) == [2]
    assert placement.is_main and placement.policy_world == 2
    reward_side = _placement(3, 4, roles)
    assert not reward_side.is_policy


@pytest.mark.parametrize("world, local_world, reward_ranks, served_by", [
    (6, 3, 2, {0: 2, 1: 2, 3: 5, 4: 5}),                               # 2 nodes x 3: one reward rank per node
    (8, 4, 4, {0: 2, 1: 3, 4: 6, 5: 7}),                               # 2 nodes x 4: two per node
    (9, 3, 3, {0: 2, 1: 2, 3: 5, 4: 5, 6: 8, 7: 8}),                   # 3 nodes x 3
    (8, 4, 2, {0: 3, 1: 3, 2: 3, 4: 7, 5: 7, 6: 7}),
])
def test_every_policy_rank_is_served_on_its_own_node(world, local_world, reward_ranks, served_by):
    roles = _seen_by_every_rank(world, local_world, reward_ranks)
    assert roles.served_by == served_by
    assert roles.policy_ranks == tuple(sorted(served_by)) and roles.reward_ranks == tuple(
        r for r in range(world) if r not in served_by)
    for p, r in roles.served_by.items():
        assert p // local_world == r // local_world                   # images never cross nodes


@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_one_node_keeps_the_last_ranks_of_the_world_as_reward_ranks(world):
    for reward_ranks in range(1, world):
        roles = _seen_by_every_rank(world, world, reward_ranks)
        policy = tuple(range(world - reward_ranks))
        reward = tuple(range(world - reward_ranks, world))
        assert roles.policy_ranks == policy and roles.reward_ranks == reward
        assert roles.served_by == {p: reward[p % reward_ranks] for p in policy}


def test_colocated_is_every_rank_on_any_layout():
    roles = assign_roles(3, 4, 0, 1, 0)                                # even uneven nodes: roles do not depend on them
    assert roles.policy_ranks == (0, 1, 2, 3) and roles.reward_ranks == () and roles.served_by == {}


@pytest.mark.parametrize("args, words", [
    ((0, 4, 0, 2, 1), "multiple of the 2 nodes"),                      # 1 reward rank cannot be split over 2 nodes
    ((0, 4, 0, 2, 3), "multiple of the 2 nodes"),
    ((0, 4, 0, 2, 4), "leaves no policy rank"),                        # 2 per node on nodes of 2
    ((0, 2, 0, 2, 2), "reward_ranks < world size"),                    # one node: the message of before
    ((3, 4, 0, 3, 2), "same number of processes"),                     # nodes of 3 and 1 processes
    ((2, 4, 0, 2, 2, 0), "same number of processes"),                  # rank 2 on node 0 is not node by node
    ((0, 6, 0, 2, 2, 0, 2), "same number of processes"),               # 2 nodes x 2 cannot make a world of 6
])
def test_layouts_that_cannot_place_reward_ranks_per_node_fail_clearly(args, words):
    with pytest.raises(ValueError, match=words) as error:
        assign_roles(*args)
    assert "pipeline.reward_ranks" in str(error.value) or "--nproc-per-node" in str(error.value)
