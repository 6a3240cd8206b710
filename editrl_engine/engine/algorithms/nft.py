"""DiffusionNFT on the engine: rollouts from the old (sampling) adapter, the NFT loss on fresh noisy latents of each
sample's clean rollout, and the old adapter's soft update after every step (algo/nft.py holds the objective)."""
from __future__ import annotations

from typing import Any

import torch

from ...algo import nft as objective
from ...algo.nft import NFTConfig
from ...policy.lora import nft_decay
from ...policy.samplers import nft_rollout, ode_sample
from ..config import ConfigError
from ..seeds import sample_seed
from ..sharding import full, load_into
from .base import Algorithm

OLD = "old"


class NFT(Algorithm):
    name = "nft"
    default_staleness = 1                      # the old adapter samples: step k + 1 rolls out while step k trains,
                                               # from the old adapter before step k's update (0: DiffusionNFT's order)
    extra_adapters = (OLD,)
    settings: NFTConfig

    def __init__(self, settings: NFTConfig, config, backend=None):
        super().__init__(settings, config, backend)
        try:                                   # an unknown schedule fails here, before any model is built
            nft_decay(0, settings.decay_schedule)
        except ValueError as error:
            raise ConfigError(f"algo.nft.decay_schedule: {error}") from None

    def attach(self, policy) -> None:
        policy.add_old_adapter()

    def start(self, policy) -> None:
        policy.update_old_adapter(0.0)         # the old adapter starts equal to the trained one, on every rank

    def rollout(self, policy, cond, seeds, step):
        sampling = self.config.sampling
        with policy.use_adapter(self.settings.sample_adapter):
            if sampling.solver == "dpm2":
                x0 = nft_rollout(policy, cond, num_steps=sampling.num_steps, seed=seeds,
                                 guidance=self.guidance).x0
            else:
                x0 = ode_sample(policy, cond, num_steps=sampling.num_steps, solver=sampling.solver, seed=seeds,
                                guidance=self.guidance)
        return x0, None

    def timesteps(self, rollout, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per local sample (its own seed, or its group's with group_noise): the first int(T·fraction) of a random
        permutation of the rollout's T timesteps, and fresh noise for each. Returns t [n, K], noise [n, K, L, C]."""
        s = self.settings
        timesteps = torch.tensor(rollout.sigmas[:-1], dtype=torch.float32)             # [T]
        T = timesteps.shape[0]
        K = objective.num_train_timesteps(T, s.timestep_fraction)
        G = rollout.plan.group_size
        ts, noises = [], []
        for n in rollout.indices:
            key = n // G if s.group_noise else n                                          # the group's or the sample's
            seed = sample_seed(self.config.run.seed, rollout.plan.step, key, stream=3 if s.group_noise else 1)
            g = torch.Generator().manual_seed(seed)
            ts.append(timesteps[torch.rand(T, generator=g).argsort()[:K]])               # [K]
            noises.append(torch.randn((K, *rollout.x0.shape[1:]), generator=g))          # [K, L, C]
        return torch.stack(ts).to(device), torch.stack(noises).to(device)

    def backward(self, policy, batch, grad_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Per micro-batch of b rows: the old-adapter (and reference) velocities of all K timesteps in one no-grad
        call of K * b rows, then each timestep's forward and backward with the trained adapter."""
        s, rollout, device = self.settings, batch.rollout, policy.device
        t_all, noise_all = self.timesteps(rollout, device)                               # [n, K], [n, K, L, C]
        K = t_all.shape[1]
        r = objective.optimality(batch.advantages, s, backend=self.backend)              # [n]
        policy_term = torch.zeros((), device=device)
        for rows, n_valid in batch.micro_batches(self.config.optim.micro_batch):
            b = len(rows)
            index = torch.tensor(rows, device=device)
            x0 = rollout.x0.index_select(0, index)                                       # [b, L, C]
            t = t_all[index].T.reshape(-1)                                               # [K * b], timestep-major
            noise = noise_all[index].transpose(0, 1).flatten(0, 1)                       # [K * b, L, C]
            x_t, _ = objective.noisy_latents(x0.repeat(K, 1, 1), t, noise)               # [K * b, L, C]
            cond = rollout.cond.select(rows)
            v_old, v_ref = self._frozen_velocities(policy, x_t, t, rollout.cond.select(rows * K))
            valid = batch.valid[index]                                                   # [b]
            for k in range(K):
                at = slice(k * b, (k + 1) * b)
                v = policy.velocity(x_t[at], t[at], cond, self.guidance)              # [b, L, C], with grad
                out = objective.loss(v, v_old[at], x_t[at], x0, t[at], r[index], s,
                                     v_ref=None if v_ref is None else v_ref[at], valid=valid, backend=self.backend)
                (out.loss * (n_valid / batch.global_valid / K * grad_scale)).backward()
                policy_term += out.policy.detach()[valid].sum() / batch.global_valid / K
        return {"nft_policy_loss": policy_term}

    @torch.no_grad()
    def _frozen_velocities(self, policy, x_t, t, cond):
        """The old adapter's velocities, and the base model's when the KL is on (else None)."""
        with policy.use_adapter(OLD):
            v_old = policy.velocity(x_t, t, cond, self.guidance)                  # [K * b, L, C]
        if not self.settings.kl_beta:
            return v_old, None
        with policy.use_adapter(None):
            return v_old, policy.velocity(x_t, t, cond, self.guidance)

    def after_step(self, policy, step: int) -> None:
        policy.update_old_adapter(nft_decay(step + 1, self.settings.decay_schedule))

    def state_dict(self, policy) -> dict[str, Any]:
        return {"old_params": [full(p) for p in policy.lora_parameters(OLD)]}

    def load_state_dict(self, policy, state: dict[str, Any]) -> None:
        for p, saved in zip(policy.lora_parameters(OLD), state["old_params"], strict=True):
            load_into(p, saved)
