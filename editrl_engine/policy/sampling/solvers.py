"""Deterministic flow-matching solver steps: Euler, and DPM-Solver++(2M) in x0 prediction.

Notation (docs/design.md §2): x_t = (1 - t) x0 + t eps, v = eps - x0, x0_hat = x_t - t v; t runs from 1 to 0.
Both solvers are linear in the latents, so a step is a few scalar coefficients (computed on the host in
float64, once per schedule) applied to float32 latents [B, L, C]: no host sync in the step loop.

DPM-Solver++(2M) for rectified flow: alpha_t = 1 - t, sigma_t = t, lambda_t = log(alpha_t / sigma_t),
h = lambda_next - lambda. First order (DDIM, eta = 0; for flow matching it is exactly the Euler step):
    x_next = (t_next / t) x + alpha_next (1 - e^-h) x0_hat
Second order, multistep, with the previous step's x0_hat and r = h_prev / h:
    x_next = (t_next / t) x + alpha_next (1 - e^-h) [(1 + 1/2r) x0_hat - 1/2r x0_hat_prev]
DiffusionNFT's convention: the first and the final step are first order, and with fewer than 15 steps the
second-to-last step too. At t = 1 (alpha = 0) lambda is -inf: the first step is then x_next = t_next x +
(1 - t_next) x0_hat, and the next step's correction term vanishes (r = inf), so it is first order as well.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

LOWER_ORDER_BELOW_STEPS = 15  # with fewer steps, the second-to-last DPM-Solver++ step is first order too


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """x + v (t_next - t): diffusers' FlowMatchEulerDiscreteScheduler step. x, v: [B, ...] float32."""
    return torch.add(x, v, alpha=sigma_next - sigma)


class DPMStep(NamedTuple):
    """x_next = x_coef x + x0_coef x0_hat + prev_x0_coef x0_hat_prev (the last term only when order == 2)."""
    order: int
    x_coef: float
    x0_coef: float
    prev_x0_coef: float


def _log_snr(t: float) -> float:
    """lambda_t = log((1 - t) / t); -inf at t = 1 (pure noise), +inf at t = 0."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log1p(-t) - math.log(t)


def dpm2_coefficients(sigmas: Sequence[float]) -> list[DPMStep]:
    """The DPM-Solver++(2M) steps of a schedule sigmas [N + 1] (from ~1 down to 0), in float64."""
    sigmas = [float(s) for s in sigmas]
    num_steps = len(sigmas) - 1
    if num_steps < 1 or any(b >= a for a, b in zip(sigmas, sigmas[1:])) or sigmas[0] > 1 or sigmas[-1] < 0:
        raise ValueError(f"sigmas must decrease strictly within [0, 1], got {sigmas}")
    first_order = {0, num_steps - 1}
    if num_steps < LOWER_ORDER_BELOW_STEPS:
        first_order.add(num_steps - 2)
    steps = []
    for i in range(num_steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        alpha_next = 1.0 - t_next
        x_coef = t_next / t
        ddim_coef = alpha_next - (1.0 - t) * t_next / t        # alpha_next (1 - e^-h), finite at t = 1 and t_next = 0
        h_prev = _log_snr(t) - _log_snr(sigmas[i - 1]) if i > 0 else math.inf
        if i in first_order or math.isinf(h_prev):              # h_prev = inf after t = 1: the correction is 0
            steps.append(DPMStep(1, x_coef, ddim_coef, 0.0))
            continue
        h = _log_snr(t_next) - _log_snr(t)
        half_over_r = 0.5 * h / h_prev                          # 1 / 2r
        steps.append(DPMStep(2, x_coef, ddim_coef * (1.0 + half_over_r), -ddim_coef * half_over_r))
    return steps


def dpm2_step(x: torch.Tensor, x0_hat: torch.Tensor, x0_hat_prev: torch.Tensor | None, step: DPMStep
              ) -> torch.Tensor:
    """One DPM-Solver++(2M) step from x [B, ...] and the x0 predictions of this step and the previous one."""
    x_next = torch.add(x.mul(step.x_coef), x0_hat, alpha=step.x0_coef)
    if step.order == 2:
        x_next.add_(x0_hat_prev, alpha=step.prev_x0_coef)
    return x_next
