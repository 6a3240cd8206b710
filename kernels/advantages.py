"""Triton kernel of group_advantages: per-group mean / std, low-variance filtering and clipped advantages."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._grid import on_gpu, vector_block

GPU_SCAN_BLOCK = 2048          # rewards per step on a GPU: few, latency-bound steps per pass
INTERPRETER_TILE = 1 << 20     # [GROUPS, BLOCK] elements per step under the interpreter


@triton.jit
def _load_rewards(rewards_ptr, group_index_ptr, start, n, groups, BLOCK: tl.constexpr):
    """Offsets [BLOCK], rewards [BLOCK], finiteness [BLOCK] and membership [GROUPS, BLOCK] at start..start+BLOCK."""
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n
    rewards = tl.load(rewards_ptr + offsets, mask=mask, other=float("nan"))
    group = tl.load(group_index_ptr + offsets, mask=mask, other=-1)
    return offsets, rewards, tl.abs(rewards) < float("inf"), group[None, :] == groups[:, None]


@triton.jit
def _group_advantages_kernel(rewards_ptr, group_index_ptr, adv_ptr, valid_ptr, mean_ptr, std_ptr, n, num_groups, eps,
                             clip, filter_std, filter_mean, STD_GLOBAL: tl.constexpr, HAS_FILTER_STD: tl.constexpr,
                             HAS_FILTER_MEAN: tl.constexpr, GROUPS: tl.constexpr, BLOCK: tl.constexpr):
    """Each program owns GROUPS groups and scans all N rewards three times: sums and counts, squared deviations
    (two-pass population variance), then the advantages and validity of its groups' members."""
    groups = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)         # [GROUPS]
    sum_g = tl.zeros([GROUPS, BLOCK], dtype=tl.float32)
    count_g = tl.zeros([GROUPS, BLOCK], dtype=tl.float32)
    sum_all = tl.zeros([BLOCK], dtype=tl.float32)
    count_all = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        _, rewards, finite, member = _load_rewards(rewards_ptr, group_index_ptr, start, n, groups, BLOCK)
        counted = member & finite[None, :]                              # [GROUPS, BLOCK]
        sum_g += tl.where(counted, rewards[None, :], 0.0)
        count_g += tl.where(counted, 1.0, 0.0)
        if STD_GLOBAL:
            sum_all += tl.where(finite, rewards, 0.0)
            count_all += tl.where(finite, 1.0, 0.0)
    count = tl.sum(count_g, axis=1)                                     # [GROUPS]
    mean = tl.sum(sum_g, axis=1) / count                                # NaN for a group with no finite reward
    if STD_GLOBAL:
        mean_all = tl.sum(sum_all, axis=0) / tl.sum(count_all, axis=0)
    sq_g = tl.zeros([GROUPS, BLOCK], dtype=tl.float32)
    sq_all = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        _, rewards, finite, member = _load_rewards(rewards_ptr, group_index_ptr, start, n, groups, BLOCK)
        dev = tl.where(member & finite[None, :], rewards[None, :] - mean[:, None], 0.0)
        sq_g += dev * dev
        if STD_GLOBAL:
            dev_all = tl.where(finite, rewards - mean_all, 0.0)
            sq_all += dev_all * dev_all
    std = tl.sqrt(tl.sum(sq_g, axis=1) / count)                         # [GROUPS]
    if STD_GLOBAL:
        global_std = tl.sqrt(tl.sum(sq_all, axis=0) / tl.sum(count_all, axis=0))
        norm_std = tl.zeros([GROUPS], dtype=tl.float32) + global_std  # [GROUPS]
    else:
        norm_std = std
    group_ok = tl.full([GROUPS], 1, tl.int1)                           # [GROUPS]
    if HAS_FILTER_STD:
        group_ok = group_ok & (std > filter_std)
    if HAS_FILTER_MEAN:
        group_ok = group_ok & (mean < filter_mean)
    in_range = groups < num_groups
    tl.store(mean_ptr + groups, mean, mask=in_range)
    tl.store(std_ptr + groups, std, mask=in_range)
    for start in range(0, n, BLOCK):
        offsets, rewards, finite, member = _load_rewards(rewards_ptr, group_index_ptr, start, n, groups, BLOCK)
        adv = tl.clamp((rewards[None, :] - mean[:, None]) / (norm_std[:, None] + eps), -clip, clip,
                       propagate_nan=tl.PropagateNan.ALL)               # [GROUPS, BLOCK]
        valid = member & finite[None, :] & group_ok[:, None]
        mine = tl.sum(member.to(tl.int32), axis=0) > 0                  # [BLOCK]: one of this program's groups
        tl.store(adv_ptr + offsets, tl.sum(tl.where(valid, adv, 0.0), axis=0), mask=mine)
        tl.store(valid_ptr + offsets, tl.sum(valid.to(tl.int32), axis=0) > 0, mask=mine)


def group_advantages(rewards, group_index, num_groups, std_global, eps, clip, filter_std, filter_mean):
    """advantages f32 [N], valid bool [N], mean f32 [G], std f32 [G] in one launch: one program per group on a GPU;
    under the interpreter one program takes many groups ([GROUPS, BLOCK] tiles)."""
    n = rewards.shape[0]
    block = vector_block(n, rewards, GPU_SCAN_BLOCK)
    groups = 1 if on_gpu(rewards) else min(triton.next_power_of_2(num_groups), max(1, INTERPRETER_TILE // block))
    adv = torch.empty_like(rewards)                                 # [N]
    valid = torch.empty(n, dtype=torch.bool, device=rewards.device)
    mean = torch.empty(num_groups, dtype=torch.float32, device=rewards.device)  # [G]
    std = torch.empty(num_groups, dtype=torch.float32, device=rewards.device)
    _group_advantages_kernel[(triton.cdiv(num_groups, groups),)](
        rewards, group_index, adv, valid, mean, std, n, num_groups, eps, clip,
        0.0 if filter_std is None else filter_std, 0.0 if filter_mean is None else filter_mean,
        STD_GLOBAL=std_global, HAS_FILTER_STD=filter_std is not None, HAS_FILTER_MEAN=filter_mean is not None,
        GROUPS=groups, BLOCK=block, num_warps=8)
    return adv, valid, mean, std
