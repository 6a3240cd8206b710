"""Flow-GRPO on the engine: SDE rollouts that record each trained step's latents and log-probs, and the
PPO-clipped loss on the log-probs recomputed with the trained adapter (algo/grpo.py holds the objective).
Its ratios need on-policy samples, so it runs with staleness 0."""
from __future__ import annotations

import torch

from ... import ops
from ...algo import grpo as objective
from ...algo.grpo import GRPOConfig
from ...policy.samplers import grpo_rollout
from ..batch import GRPOTrajectory
from ..seeds import sample_seed
from .base import Algorithm

WINDOW_STREAM = 2                              # seeds.py: the step's SDE window, drawn alike on every rank


class GRPO(Algorithm):
    name = "grpo"
    default_staleness = 0
    max_staleness = 0
    settings: GRPOConfig

    def rollout(self, policy, cond, seeds, step):
        s, sampling = self.settings, self.config.sampling
        window = None
        if s.window_size:
            window = torch.Generator().manual_seed(sample_seed(self.config.run.seed, step, 0, stream=WINDOW_STREAM))
        out = grpo_rollout(policy, cond, num_steps=sampling.num_steps, seed=seeds, kind=s.kind,
                           noise_level=s.noise_level, window_size=s.window_size or None, window_generator=window,
                           guidance=self.guidance)
        return out.x0, out

    def join_trajectories(self, chunks: list) -> GRPOTrajectory:
        return GRPOTrajectory.cat(chunks)

    def trained(self, trajectory: GRPOTrajectory) -> list[int]:
        """The trajectory's steps the loss trains: all of a windowed rollout's, else the first int(T·fraction)."""
        steps = trajectory.step_index.tolist()
        if self.settings.window_size:
            return list(range(len(steps)))
        allowed = set(objective.trained_steps(self.config.sampling.num_steps, self.settings))
        return [k for k, step in enumerate(steps) if step in allowed]

    def backward(self, policy, batch, grad_scale: float = 1.0) -> dict[str, torch.Tensor]:
        s, rollout, device = self.settings, batch.rollout, policy.device
        data: GRPOTrajectory = rollout.trajectory
        trained = self.trained(data)
        K = len(trained)
        totals = {"clipfrac": torch.zeros((), device=device), "approx_kl": torch.zeros((), device=device)}
        for k in trained:
            sigma, sigma_next = float(data.sigma[k]), float(data.sigma_next[k])
            for rows, n_valid in batch.micro_batches(self.config.optim.micro_batch):
                index = torch.tensor(rows, device=device)
                x = data.latents.index_select(0, index)[:, k]                           # [b, L, C]
                x_next = data.next_latents.index_select(0, index)[:, k]                 # [b, L, C]
                cond = rollout.cond.select(rows)
                t = torch.full((len(rows),), sigma, device=device)                      # [b]
                v_ref = None
                if s.kl_beta:
                    with torch.no_grad(), policy.use_adapter(None):
                        v_ref = policy.velocity(x, t, cond, self.guidance)
                v = policy.velocity(x, t, cond, self.guidance)                      # [b, L, C], with grad
                logp, kl = ops.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=s.noise_level, kind=s.kind,
                                           v_ref=v_ref, backend=self.backend)
                loss, stats = objective.loss(logp, data.logp.index_select(0, index)[:, k], batch.advantages[index], s,
                                             valid=batch.valid[index], kl=kl, backend=self.backend)
                weight = n_valid / batch.global_valid / K
                (loss * (weight * grad_scale)).backward()
                for name in totals:
                    totals[name] += stats[name].detach() * weight
        return totals
