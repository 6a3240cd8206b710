"""Placement: which ranks train the policy and which score, and the collectives between them.

Under torchrun every process reads RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; without them the run is one
process. Roles:
  colocated  every rank rolls out, scores its own samples and trains (DDP over the LoRA parameters)
  separate   placed by node: on each of the N nodes the last R / N local ranks only score, and a policy rank sends its
             images to a reward rank of its own node (the i-th policy rank of a node to its (i % (R / N))-th reward
             rank), so images never cross nodes to be scored. One node: the last R ranks score, policy p -> p % R.
Policy ranks all-reduce gradients as one flat buffer (what DDP does, bucket of one) and all-gather rewards so
every rank computes the same group advantages. Reward traffic uses gloo pair groups (images live on the CPU).
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import os

import torch
import torch.distributed as dist

from ..errors import InputError
from .config import TrainConfig


@dataclasses.dataclass
class Placement:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    policy_ranks: tuple[int, ...] = (0,)
    reward_ranks: tuple[int, ...] = ()
    policy_group: object | None = None           # process group of the policy ranks (None: one process)
    pair_groups: dict[int, object] = dataclasses.field(default_factory=dict)   # policy rank -> its gloo pair group
    initialized_here: bool = False
    served_by: dict[int, int] = dataclasses.field(default_factory=dict)      # policy rank -> reward rank (same node)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_policy(self) -> bool:
        return self.rank in self.policy_ranks

    @property
    def policy_rank(self) -> int:
        return self.policy_ranks.index(self.rank)

    @property
    def policy_world(self) -> int:
        return len(self.policy_ranks)

    @property
    def is_main(self) -> bool:
        return self.rank == self.policy_ranks[0]

    def reward_rank_for(self, rank: int) -> int:
        if self.served_by:
            return self.served_by[rank]
        return self.reward_ranks[self.policy_ranks.index(rank) % len(self.reward_ranks)]

    def policy_ranks_served_by(self, reward_rank: int) -> list[int]:
        return [p for p in self.policy_ranks if self.reward_rank_for(p) == reward_rank]

    def barrier(self) -> None:
        """Every rank, reward ranks included."""
        if self.distributed:
            dist.barrier()

    def policy_barrier(self) -> None:
        """The policy ranks only (reward ranks are busy serving)."""
        if self.policy_world > 1:
            dist.barrier(group=self.policy_group)

    def close(self) -> None:
        """Every rank calls this once at the end, after dropping its trainer: a barrier (no rank tears its groups
        down while another may still be in a collective with it), then every group's backend is shut down now,
        while the interpreter lives, rather than when the last reference goes at exit. The garbage collection first
        frees the modules' reference cycles that hold groups (torch's DTensor caches may still hold FSDP2's mesh)."""
        if self.initialized_here and dist.is_initialized():
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()
            self.policy_group, self.pair_groups, self.initialized_here = None, {}, False


def _device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


@dataclasses.dataclass(frozen=True)
class Roles:
    policy_ranks: tuple[int, ...]
    reward_ranks: tuple[int, ...]
    served_by: dict[int, int]                                            # policy rank -> reward rank


def assign_roles(rank: int, world: int, local_rank: int, local_world: int, reward_ranks: int,
                 node: int | None = None, nodes: int | None = None) -> Roles:
    """The roles of every rank of a `world` laid out node by node as torchrun does (node n holds the global ranks
    n * local_world ... (n + 1) * local_world - 1), seen from `rank`: that layout is checked against this rank's
    LOCAL_RANK / LOCAL_WORLD_SIZE (and torchrun's GROUP_RANK / GROUP_WORLD_SIZE as `node` / `nodes` when given).
    reward_ranks = 0: every rank is a policy rank. Else each node's last reward_ranks / n_nodes local ranks score,
    and the i-th policy rank of a node is served by that node's (i % its reward ranks)-th reward rank."""
    if not reward_ranks:
        return Roles(tuple(range(world)), (), {})
    by_node = local_world >= 1 and world % local_world == 0 and rank % local_world == local_rank
    if not by_node or (node is not None and rank // local_world != node) or \
            (nodes is not None and nodes * local_world != world):
        raise InputError(f"placement 'separate' places reward ranks per node and needs every node to run the same "
                         f"number of processes, ranked node by node; rank {rank} of {world} has local rank "
                         f"{local_rank} of {local_world} (node {node} of {nodes}). Launch every node with the same "
                         f"torchrun --nproc-per-node, or use placement = 'colocated'")
    n_nodes = world // local_world
    if n_nodes == 1 and not 1 <= reward_ranks < world:
        raise InputError(f"placement 'separate' needs 1 <= pipeline.reward_ranks < world size ({world}); got "
                         f"{reward_ranks}. Launch with torchrun --nproc-per-node N or use placement = 'colocated'")
    if reward_ranks < 1 or reward_ranks % n_nodes:
        raise InputError(f"placement 'separate' puts pipeline.reward_ranks / nodes reward ranks on every node, so "
                         f"pipeline.reward_ranks must be a positive multiple of the {n_nodes} nodes; got "
                         f"{reward_ranks}. Set pipeline.reward_ranks to k * {n_nodes}")
    per_node = reward_ranks // n_nodes
    if per_node >= local_world:
        raise InputError(f"placement 'separate' with pipeline.reward_ranks = {reward_ranks} over {n_nodes} nodes puts "
                         f"{per_node} reward ranks on every node, which leaves no policy rank on a node of "
                         f"{local_world} processes. Lower pipeline.reward_ranks below {n_nodes * local_world} "
                         "or launch more processes per node (--nproc-per-node)")
    policy, reward, served_by = [], [], {}
    for base in range(0, world, local_world):
        node_policy = list(range(base, base + local_world - per_node))
        node_reward = list(range(base + local_world - per_node, base + local_world))
        served_by.update({p: node_reward[i % per_node] for i, p in enumerate(node_policy)})
        policy += node_policy
        reward += node_reward
    return Roles(tuple(policy), tuple(reward), served_by)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def init_placement(config: TrainConfig) -> Placement:
    """Start torch.distributed when torchrun launched us (or reuse a started one) and assign the roles."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = _env_int("LOCAL_WORLD_SIZE") or world                 # not set: one node holds every rank
    device = _device(config.run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    pipe = config.pipeline
    if pipe.placement not in ("colocated", "separate"):
        raise InputError(f"pipeline.placement must be 'colocated' or 'separate', got {pipe.placement!r}")
    n_reward = pipe.reward_ranks if pipe.placement == "separate" else 0
    if pipe.placement == "separate" and n_reward < 1:
        raise InputError(f"placement 'separate' needs 1 <= pipeline.reward_ranks < world size ({world}); got "
                         f"{n_reward}. Launch with torchrun --nproc-per-node N or use placement = 'colocated'")
    roles = assign_roles(rank, world, local_rank, local_world, n_reward, _env_int("GROUP_RANK"),
                         _env_int("GROUP_WORLD_SIZE"))
    placement = Placement(rank, world, local_rank, device, roles.policy_ranks, roles.reward_ranks,
                          served_by=roles.served_by)
    if world == 1:
        return placement
    if not dist.is_initialized():
        backend = pipe.backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        placement.initialized_here = True
    # every rank creates every group, in the same order (torch.distributed's rule)
    placement.policy_group = dist.new_group(list(placement.policy_ranks))
    for p in placement.policy_ranks if n_reward else ():
        group = dist.new_group([p, placement.reward_rank_for(p)], backend="gloo")
        if rank in (p, placement.reward_rank_for(p)):
            placement.pair_groups[p] = group
    return placement


# ---- collectives among the policy ranks ------------------------------------------------------------------------
def all_gather_rows(local: torch.Tensor, placement: Placement) -> torch.Tensor:
    """Concatenate every policy rank's equal-sized local rows, in rank order ([n, ...] -> [n * P, ...])."""
    if placement.policy_world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(placement.policy_world)]
    dist.all_gather(parts, local.contiguous(), group=placement.policy_group)
    return torch.cat(parts)


def all_reduce_sum(tensor: torch.Tensor, placement: Placement) -> torch.Tensor:
    if placement.policy_world > 1:
        dist.all_reduce(tensor, group=placement.policy_group)
    return tensor


def all_reduce_gradients(parameters: list[torch.nn.Parameter], placement: Placement) -> None:
    """Sum the gradients of `parameters` over the policy ranks through one flat buffer (the losses are already
    scaled by local / global valid counts, so the sum is the global mean's gradient)."""
    if placement.policy_world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])                       # [sum numel]
    dist.all_reduce(flat, group=placement.policy_group)
    offset = 0
    for p, g in zip(parameters, grads):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(parameters: list[torch.nn.Parameter], placement: Placement) -> None:
    """Make every policy rank start from the first policy rank's parameters (DDP's first step)."""
    if placement.policy_world == 1:
        return
    with torch.no_grad():
        for p in parameters:
            dist.broadcast(p.data, src=placement.policy_ranks[0], group=placement.policy_group)
