"""Triton kernels of the fused RL ops (installed as editrl_engine.kernels): the launcher protocol of
editrl_engine.autograd, one module per op family."""
from .advantages import group_advantages
from .cfg import cfg_combine_backward, cfg_combine_forward
from .grpo import grpo_loss_backward, grpo_loss_forward
from .nft import nft_loss_backward, nft_loss_forward, nft_optimality
from .sde import sde_logprob_backward, sde_logprob_forward, sde_step

__all__ = ["group_advantages", "sde_step", "sde_logprob_forward", "sde_logprob_backward", "nft_loss_forward",
           "nft_loss_backward", "grpo_loss_forward", "grpo_loss_backward", "nft_optimality", "cfg_combine_forward",
           "cfg_combine_backward"]
