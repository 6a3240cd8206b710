"""Placement on one node: which ranks train the policy and which score, and the collectives between them.

Under torchrun every process reads RANK / WORLD_SIZE / LOCAL_RANK; without them the run is one process. Roles:
  colocated  every rank rolls out, scores its own samples and trains (DDP over the LoRA parameters)
  separate   the last `reward_ranks` ranks only score; policy rank p sends its images to reward rank p % R
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


def init_placement(config: TrainConfig) -> Placement:
    """Start torch.distributed when torchrun launched us (or reuse a started one) and assign the roles."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(config.run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    pipe = config.pipeline
    if pipe.placement not in ("colocated", "separate"):
        raise ValueError(f"pipeline.placement must be 'colocated' or 'separate', got {pipe.placement!r}")
    n_reward = pipe.reward_ranks if pipe.placement == "separate" else 0
    if pipe.placement == "separate" and not 1 <= n_reward < world:
        raise ValueError(f"placement 'separate' needs 1 <= pipeline.reward_ranks < world size ({world}); got "
                         f"{n_reward}. Launch with torchrun --nproc-per-node N or use placement = 'colocated'")
    placement = Placement(rank, world, local_rank, device, tuple(range(world - n_reward)),
                          tuple(range(world - n_reward, world)))
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
