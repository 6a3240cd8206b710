"""Samplers and rollouts for any EditPolicy (they know no model family): the public names.

- grpo_rollout: Flow-GRPO SDE (kind="flow_grpo") or CPS (kind="cps") steps through ops.sde_step, optionally
  only inside a window drawn from a generator shared by all ranks; Euler elsewhere. Returns GRPORollout.
- nft_rollout: DiffusionNFT's deterministic DPM-Solver++(2M) in x0 prediction. Returns NFTRollout.
- ode_sample: deterministic Euler (diffusers' FlowMatchEulerDiscreteScheduler) or DPM-Solver++(2M) sampling.
The schedules (with each family's timestep shift) come from policy.sigmas. The implementation lives in
editrl_engine/policy/sampling/: windows.py, solvers.py, rollout.py.
"""
from __future__ import annotations

from .sampling.rollout import (
                               SOLVERS,
                               GRPORollout,
                               NFTRollout,
                               grpo_rollout,
                               nft_rollout,
                               ode_sample,
                               repeat_for_group,
                               sample_generators,
)
from .sampling.solvers import DPMStep, dpm2_coefficients, dpm2_step, euler_step
from .sampling.windows import sde_window, stochastic_steps

__all__ = ["SOLVERS", "GRPORollout", "NFTRollout", "grpo_rollout", "nft_rollout", "ode_sample", "repeat_for_group",
           "sample_generators", "DPMStep", "dpm2_coefficients", "dpm2_step", "euler_step", "sde_window",
           "stochastic_steps"]
