"""Launchers of the Triton backend (`backend="triton"`): the protocol of editrl_engine.autograd over the Triton
kernels of kernels/ (installed as the namespace package editrl_engine.kernels, one module per op family).

kernels/ has no __init__.py on purpose: with the repository root on sys.path (`python -m pytest`,
`python -m editrl_engine.cli`, torchrun), a regular package there would shadow the installed distribution
that owns the top-level name `kernels` (Hugging Face's, which transformers imports at start-up).
"""
from .kernels.advantages import group_advantages
from .kernels.cfg import cfg_combine_backward, cfg_combine_forward
from .kernels.grpo import grpo_loss_backward, grpo_loss_forward
from .kernels.nft import nft_loss_backward, nft_loss_forward, nft_optimality
from .kernels.sde import sde_logprob_backward, sde_logprob_forward, sde_step

__all__ = ["group_advantages", "sde_step", "sde_logprob_forward", "sde_logprob_backward", "nft_loss_forward",
           "nft_loss_backward", "grpo_loss_forward", "grpo_loss_backward", "nft_optimality", "cfg_combine_forward",
           "cfg_combine_backward"]
