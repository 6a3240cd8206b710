"""FSDP2 over the policy ranks (`pipeline.fsdp = true`): the transformer's blocks and then the whole transformer
are sharded with torch.distributed.fsdp.fully_shard (torchtitan's order: checkpointing -> compile -> FSDP2).

FSDP2's reduce-scatter averages over the ranks (gloo has no pre-multiplied sum), so the engine scales each rank's
loss by the number of ranks on top of its share of the global valid samples. Full tensors are gathered (a
collective: every policy rank calls these) when a checkpoint is written, and scattered back into the shards on
resume.
"""
from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def shard_transformer(transformer: torch.nn.Module, placement) -> None:
    from torch.distributed import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    mesh = DeviceMesh.from_group(placement.policy_group, placement.device.type)
    blocks = [b for name in BLOCK_LISTS for b in getattr(transformer, name, [])]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has none of {BLOCK_LISTS}: cannot shard it block by block")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(transformer, mesh=mesh)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU (gathered when sharded)."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def load_into(parameter: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, sharding it the parameter's way when it is a DTensor."""
    with torch.no_grad():
        if isinstance(parameter, DTensor):
            value = distribute_tensor(value.to(parameter.device, parameter.dtype), parameter.device_mesh,
                                      parameter.placements)
        parameter.copy_(value)
