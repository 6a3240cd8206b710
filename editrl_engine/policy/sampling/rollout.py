"""Rollouts: a group of G samples per encoded (source, instruction) pair, sampled through any EditPolicy.

    cond = policy.encode(sources, instructions)                        # once per group: N rows
    out = grpo_rollout(policy, cond, group_size=G, num_steps=10, seed=base_seed,
                       window_size=3, window_generator=shared_gen)      # Flow-GRPO (SDE / CPS)
    out = nft_rollout(policy, cond, group_size=G, num_steps=6, seed=base_seed)   # DiffusionNFT (DPM-Solver++ 2M)
    x0 = ode_sample(policy, cond, num_steps=40, seed=base_seed)         # evaluation (Euler)

Rows are ordered pair-major: sample i of pair p is row p * G + i, its condition is row p of `cond` (repeated
with cond.select, never re-encoded). Each sample has its own generator (seed base_seed + row, or one from
`generators`), which draws its initial noise and then the noise of each of its SDE steps, so a sample depends
on its seed and its condition only, not on the batch around it. The schedule is the family's (policy.sigmas).

Everything runs under torch.no_grad(); latents, velocities and SDE arithmetic are float32 (docs/design.md §2), and
bf16 autocast is the policy's own (EditPolicy.autocast, set when it is loaded). The step loop reads no device value.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ... import ops
from ..base import Condition, EditPolicy
from .solvers import dpm2_coefficients, dpm2_step, euler_step
from .windows import stochastic_steps

SOLVERS = ("euler", "dpm2")


@dataclasses.dataclass
class GRPORollout:
    """A Flow-GRPO rollout: the clean latents, and what the loss needs for each trained (SDE) step k.

    A trained step's log-prob recomputes as ops.sde_logprob(next_latents[:, k], latents[:, k], v,
    sigma[k], sigma_next[k], noise_level=noise_level, kind=kind) with v = policy.velocity(latents[:, k], ...).
    """
    x0: torch.Tensor            # [B, L, C] float32, the sampled clean latents
    cond: Condition             # B rows (pair p repeated G times)
    latents: torch.Tensor       # [B, K, L, C] float32, x_t before each trained step
    next_latents: torch.Tensor  # [B, K, L, C] float32, x_t after it
    logp: torch.Tensor          # [B, K] float32, log-density of next_latents under the rollout's step
    sigma: torch.Tensor         # [K] float32, t of each trained step
    sigma_next: torch.Tensor    # [K] float32, t after it
    step_index: torch.Tensor    # [K] int64, the trained steps' indices in the schedule
    kind: str                   # "flow_grpo" or "cps"
    noise_level: float


@dataclasses.dataclass
class NFTRollout:
    """A DiffusionNFT rollout: only the clean latents and the condition they were sampled under."""
    x0: torch.Tensor            # [B, L, C] float32
    cond: Condition             # B rows


# ---------------------------------------------------------------------------------------------------------
# groups, generators, chunks
# ---------------------------------------------------------------------------------------------------------
def sample_generators(seed: int | Sequence[int], count: int, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample on `device`: seeds base + 0 .. base + count - 1, or the `count` seeds given."""
    seeds = range(seed, seed + count) if isinstance(seed, int) else list(seed)
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} samples; pass one per sample or a base seed")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def repeat_for_group(cond: Condition, group_size: int) -> Condition:
    """N pairs -> N * G rows, pair-major (row p * G + i is sample i of pair p); no re-encoding."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if group_size == 1:
        return cond
    return cond.select(torch.arange(cond.batch_size).repeat_interleave(group_size))


def _prepare(policy: EditPolicy, cond: Condition, group_size: int, seed, generators
             ) -> tuple[Condition, list[torch.Generator]]:
    samples = repeat_for_group(cond, group_size)
    count = samples.batch_size
    if (seed is None) == (generators is None):
        raise ValueError("pass exactly one of seed= (a base seed, or one seed per sample) or generators= "
                         "(one torch.Generator per sample)")
    generators = sample_generators(seed, count, policy.device) if generators is None else list(generators)
    if len(generators) != count:
        raise ValueError(f"got {len(generators)} generators for {count} samples "
                         f"({cond.batch_size} pairs x group_size {group_size}); pass one per sample")
    return samples, generators


def _chunks(count: int, batch_size: int | None) -> list[slice]:
    """Row ranges of at most batch_size samples (one chunk when batch_size is None)."""
    if batch_size is None or batch_size >= count:
        return [slice(0, count)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _chunk_condition(cond: Condition, chunk: slice) -> Condition:
    """The rows of one chunk (the condition itself when the chunk is every row)."""
    return cond if chunk == slice(0, cond.batch_size) else cond.select(torch.arange(chunk.start, chunk.stop))


# ---------------------------------------------------------------------------------------------------------
# the step loop's pieces
# ---------------------------------------------------------------------------------------------------------
def _schedule(policy: EditPolicy, num_steps: int, cond: Condition) -> list[float]:
    """The family's sigmas as host floats, read once before the loop."""
    sigmas = policy.sigmas(num_steps, cond).detach().to("cpu", torch.float32)
    if sigmas.shape != (num_steps + 1,):
        raise ValueError(f"{type(policy).__name__}.sigmas({num_steps}) returned shape {tuple(sigmas.shape)}, "
                         f"expected [{num_steps + 1}]")
    return sigmas.tolist()


def _velocity(policy: EditPolicy, x: torch.Tensor, sigma: float, cond: Condition, guidance: float | None
              ) -> torch.Tensor:
    """v [B, L, C] float32 at x [B, L, C] and time sigma (the same for every row)."""
    t = torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)   # [B]
    v = policy.velocity(x, t, cond, guidance)
    return v.float()


def _step_noise(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One draw per sample from its own generator: [B, L, C] float32 on x's device."""
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32)
                        for g in generators]).to(x.device)


def _initial_noise(policy: EditPolicy, cond: Condition, generators: Sequence[torch.Generator]) -> torch.Tensor:
    return policy.noise(cond, generators).to(policy.device, torch.float32)   # [B, L, C]


# ---------------------------------------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------------------------------------
def _grpo_chunk(policy, cond, generators, sigmas, sde_steps: range, kind, noise_level, guidance):
    x = _initial_noise(policy, cond, generators)                     # [B, L, C]
    latents, next_latents, logps = [], [], []
    for i in range(len(sigmas) - 1):
        v = _velocity(policy, x, sigmas[i], cond, guidance)
        if i in sde_steps:
            x_next, logp = ops.sde_step(x, v, sigmas[i], sigmas[i + 1], _step_noise(x, generators),
                                        noise_level=noise_level, kind=kind)
            latents.append(x)
            next_latents.append(x_next)
            logps.append(logp)
        else:
            x_next = euler_step(x, v, sigmas[i], sigmas[i + 1])
        x = x_next
    return x, torch.stack(latents, 1), torch.stack(next_latents, 1), torch.stack(logps, 1)


@torch.no_grad()
def grpo_rollout(policy: EditPolicy, cond: Condition, *, group_size: int = 1, num_steps: int = 10,
                 seed: int | Sequence[int] | None = None, generators: Sequence[torch.Generator] | None = None,
                 kind: str = "flow_grpo", noise_level: float = 0.7, window_size: int | None = None,
                 window_generator: torch.Generator | None = None, window_range: tuple[int, int] | None = None,
                 guidance: float | None = None, batch_size: int | None = None) -> GRPORollout:
    """Flow-GRPO rollout of G samples per pair of `cond`: SDE steps through ops.sde_step, Euler elsewhere.

    Without window_size every step but the last is an SDE step; with it, a window of that many steps is drawn
    from window_generator (a CPU generator seeded the same on every rank; see sampling.windows.sde_window).
    kind="cps" samples the coefficient-preserving variant. batch_size splits the B = N * G samples into
    chunks of at most that many rows (the same samples: each has its own generator).
    """
    if noise_level <= 0:
        raise ValueError(f"noise_level must be > 0 for a GRPO rollout (its steps need log-probs), got {noise_level}")
    samples, generators = _prepare(policy, cond, group_size, seed, generators)
    sigmas = _schedule(policy, num_steps, samples)
    sde_steps = stochastic_steps(num_steps, window_size, window_generator, window_range)
    parts = [_grpo_chunk(policy, _chunk_condition(samples, chunk), generators[chunk], sigmas, sde_steps, kind,
                         noise_level, guidance) for chunk in _chunks(samples.batch_size, batch_size)]
    x0, latents, next_latents, logp = (torch.cat(column) for column in zip(*parts))
    device = x0.device
    return GRPORollout(
        x0=x0, cond=samples, latents=latents, next_latents=next_latents, logp=logp,
        sigma=torch.tensor([sigmas[i] for i in sde_steps], dtype=torch.float32, device=device),
        sigma_next=torch.tensor([sigmas[i + 1] for i in sde_steps], dtype=torch.float32, device=device),
        step_index=torch.tensor(list(sde_steps), dtype=torch.int64, device=device),
        kind=kind, noise_level=float(noise_level))


def _ode_chunk(policy, cond, generators, sigmas, solver, guidance):
    x = _initial_noise(policy, cond, generators)                     # [B, L, C]
    dpm_steps = dpm2_coefficients(sigmas) if solver == "dpm2" else None
    x0_hat_prev = None
    for i in range(len(sigmas) - 1):
        v = _velocity(policy, x, sigmas[i], cond, guidance)
        if dpm_steps is None:
            x = euler_step(x, v, sigmas[i], sigmas[i + 1])
        else:
            x0_hat = torch.add(x, v, alpha=-sigmas[i])               # x_t - t v
            x = dpm2_step(x, x0_hat, x0_hat_prev, dpm_steps[i])
            x0_hat_prev = x0_hat
    return x


def _ode(policy, cond, group_size, num_steps, solver, seed, generators, guidance, batch_size):
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}: choose one of {SOLVERS}")
    samples, generators = _prepare(policy, cond, group_size, seed, generators)
    sigmas = _schedule(policy, num_steps, samples)
    x0 = torch.cat([_ode_chunk(policy, _chunk_condition(samples, chunk), generators[chunk], sigmas, solver, guidance)
                    for chunk in _chunks(samples.batch_size, batch_size)])
    return x0, samples


@torch.no_grad()
def ode_sample(policy: EditPolicy, cond: Condition, *, group_size: int = 1, num_steps: int = 28,
               solver: str = "euler", seed: int | Sequence[int] | None = None,
               generators: Sequence[torch.Generator] | None = None, guidance: float | None = None,
               batch_size: int | None = None) -> torch.Tensor:
    """Deterministic sampling from each sample's initial noise: clean latents [N * G, L, C] float32.

    solver="euler" is diffusers' FlowMatchEulerDiscreteScheduler step for step; solver="dpm2" is
    DPM-Solver++(2M) in x0 prediction with DiffusionNFT's lower-order steps (sampling.solvers).
    """
    return _ode(policy, cond, group_size, num_steps, solver, seed, generators, guidance, batch_size)[0]


@torch.no_grad()
def nft_rollout(policy: EditPolicy, cond: Condition, *, group_size: int = 1, num_steps: int = 6,
                seed: int | Sequence[int] | None = None, generators: Sequence[torch.Generator] | None = None,
                guidance: float | None = None, batch_size: int | None = None) -> NFTRollout:
    """DiffusionNFT rollout: DPM-Solver++(2M) from each sample's noise; keeps x0 and the repeated condition."""
    x0, samples = _ode(policy, cond, group_size, num_steps, "dpm2", seed, generators, guidance, batch_size)
    return NFTRollout(x0=x0, cond=samples)
