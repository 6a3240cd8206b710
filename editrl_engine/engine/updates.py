"""The update half of a step: gradients of the DiffusionNFT or Flow-GRPO loss on one rank's rollouts.

Losses go through the fused ops (algo.nft.loss, algo.grpo.loss). Each micro-batch's loss (a mean over its valid
rows) is weighted by its valid rows / the valid rows of the whole global batch part / the number of trained
timesteps, so after the all-reduce (a sum over ranks) the gradient is that of the global mean, whatever the
number of ranks or the micro-batch size (grad_scale = the number of ranks under FSDP2, whose reduce-scatter
averages). Nothing here reads a device value: the valid mask comes in already on the host (valid_host).
"""
from __future__ import annotations

import torch

from .. import ops
from ..algo import grpo as grpo_algo
from ..algo import nft as nft_algo
from .config import TrainConfig
from .rollouts import LocalRollout, sample_seed


def _micro_batches(rows: list[int], size: int) -> list[list[int]]:
    size = size or len(rows)
    return [rows[i: i + size] for i in range(0, len(rows), size)]


def nft_timesteps(rollout: LocalRollout, config: TrainConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per local sample (its own seed, or its group's with algo.nft.group_noise): the first int(T·fraction) of a
    random permutation of the rollout's T timesteps, and fresh noise for each. Returns t [n, K] and noise [n, K, L, C]."""
    timesteps = torch.tensor(rollout.sigmas[:-1], dtype=torch.float32)          # [T]
    T = timesteps.shape[0]
    K = nft_algo.num_train_timesteps(T, config.algo.nft.timestep_fraction)
    ts, noises = [], []
    G = rollout.plan.group_size
    for n in rollout.indices:
        key = n // G if config.algo.nft.group_noise else n                      # the group's draw, or the sample's
        g = torch.Generator().manual_seed(sample_seed(config.run.seed, rollout.plan.step, key,
                                                      stream=3 if config.algo.nft.group_noise else 1))
        ts.append(timesteps[torch.rand(T, generator=g).argsort()[:K]])          # [K]
        noises.append(torch.randn((K, *rollout.x0.shape[1:]), generator=g))     # [K, L, C]
    return torch.stack(ts).to(device), torch.stack(noises).to(device)


def nft_backward(policy, rollout: LocalRollout, advantages: torch.Tensor, valid: torch.Tensor,
                 valid_host: list[bool], rows: list[int], part_valid: float, config: TrainConfig, backend=None, grad_scale: float = 1.0) -> dict[str, float]:
    """Accumulate gradients of the NFT loss over local `rows` (advantages, valid: [n] local). Per micro-batch of b
    rows, the old-adapter (and reference) velocities of all K timesteps come from one no-grad call of K * b rows;
    then each timestep's forward and backward with the current adapter."""
    s = config.algo.nft
    cfg = nft_algo.NFTConfig(beta=s.beta, kl_beta=s.kl_beta, adv_clip_max=s.adv_clip_max,
                             timestep_fraction=s.timestep_fraction, decay_schedule=s.decay_schedule)
    t_all, noise_all = nft_timesteps(rollout, config, policy.device)            # [n, K], [n, K, L, C]
    K = t_all.shape[1]
    r = nft_algo.optimality(advantages, cfg, backend=backend)                   # [n]
    policy_term = torch.zeros((), device=policy.device)
    for mb in _micro_batches(rows, config.optim.micro_batch):
        n_valid = sum(valid_host[i] for i in mb)
        if n_valid == 0:
            continue
        b = len(mb)
        index = torch.tensor(mb, device=policy.device)
        x0 = rollout.x0.index_select(0, index)                                   # [b, L, C]
        t = t_all[index].T.reshape(-1)                                           # [K * b], timestep-major
        x_t, _ = nft_algo.noisy_latents(x0.repeat(K, 1, 1), t, noise_all[index].transpose(0, 1).flatten(0, 1))
        cond = rollout.cond.select(mb)
        with torch.no_grad():              # the frozen forwards of all K timesteps in one call each
            cond_k = rollout.cond.select(mb * K)
            with policy.use_adapter("old"):
                v_old = policy.velocity(x_t, t, cond_k)                          # [K * b, L, C]
            v_ref = None
            if cfg.kl_beta:
                with policy.use_adapter(None):
                    v_ref = policy.velocity(x_t, t, cond_k)
        for k in range(K):
            rows_k = slice(k * b, (k + 1) * b)
            v = policy.velocity(x_t[rows_k], t[rows_k], cond)                     # [b, L, C], with grad
            out = nft_algo.loss(v, v_old[rows_k], x_t[rows_k], x0, t[rows_k], r[index], cfg,
                                v_ref=None if v_ref is None else v_ref[rows_k], valid=valid[index], backend=backend)
            (out.loss * (n_valid / part_valid / K * grad_scale)).backward()
            policy_term += out.policy.detach()[valid[index]].sum() / part_valid / K
    return {"nft_policy_loss": policy_term}


def grpo_backward(policy, rollout: LocalRollout, advantages: torch.Tensor, valid: torch.Tensor,
                  valid_host: list[bool], rows: list[int],
                  part_valid: float, config: TrainConfig, backend=None, grad_scale: float = 1.0
                  ) -> dict[str, torch.Tensor]:
    """Accumulate gradients of the Flow-GRPO loss over local `rows` and the trained SDE steps."""
    g = config.algo.grpo
    cfg = grpo_algo.GRPOConfig(clip_range=(g.clip_low, g.clip_high), kl_beta=g.kl_beta,
                               timestep_fraction=g.timestep_fraction)
    data = rollout.grpo
    step_index = data["step_index"].tolist()
    if g.window_size:
        trained = list(range(len(step_index)))
    else:
        allowed = set(grpo_algo.trained_steps(config.sampling.num_steps, cfg))
        trained = [k for k, s in enumerate(step_index) if s in allowed]
    K = len(trained)
    totals = {"clipfrac": torch.zeros((), device=policy.device), "approx_kl": torch.zeros((), device=policy.device)}
    for k in trained:
        sigma, sigma_next = float(data["sigma"][k]), float(data["sigma_next"][k])
        for mb in _micro_batches(rows, config.optim.micro_batch):
            n_valid = sum(valid_host[i] for i in mb)
            if n_valid == 0:
                continue
            index = torch.tensor(mb, device=policy.device)
            x = data["latents"].index_select(0, index)[:, k]                       # [b, L, C]
            x_next = data["next_latents"].index_select(0, index)[:, k]             # [b, L, C]
            cond = rollout.cond.select(mb)
            t = torch.full((len(mb),), sigma, device=policy.device)
            v_ref = None
            if cfg.kl_beta:
                with torch.no_grad(), policy.use_adapter(None):
                    v_ref = policy.velocity(x, t, cond)
            v = policy.velocity(x, t, cond)
            logp, kl = ops.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=g.noise_level, kind=g.kind,
                                       v_ref=v_ref, backend=backend)
            loss, stats = grpo_algo.loss(logp, data["logp"].index_select(0, index)[:, k], advantages[index], cfg,
                                         valid=valid[index], kl=kl, backend=backend)
            weight = n_valid / part_valid / K
            (loss * (weight * grad_scale)).backward()
            for name in totals:
                totals[name] += stats[name].detach() * weight
    return totals
