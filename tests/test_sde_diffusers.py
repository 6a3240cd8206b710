"""sde_step with noise_level = 0 is diffusers' FlowMatchEulerDiscreteScheduler.step, step for step."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops

from .helpers import assert_close, randn

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.ops("sde_step")

SETUPS = {
    "default": (dict(), dict(num_inference_steps=8)),
    "shift3": (dict(shift=3.0), dict(num_inference_steps=10)),
    "explicit": (dict(), dict(sigmas=[1.0, 0.83, 0.61, 0.42, 0.2, 0.07])),
}


@pytest.mark.parametrize("per_sample", [False, True], ids=["float-sigma", "tensor-sigma"])
@pytest.mark.parametrize("kind", ["flow_grpo", "cps"])
@pytest.mark.parametrize("setup", SETUPS)
def test_noise_level_zero_is_the_diffusers_euler_step(backend, gen, setup, kind, per_sample):
    config, timesteps = SETUPS[setup]
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    scheduler.set_timesteps(**timesteps)
    sigmas = scheduler.sigmas  # [N + 1], ends at 0
    assert len(sigmas) == len(scheduler.timesteps) + 1 and float(sigmas[-1]) == 0.0

    shape = [2, 6, 5]
    target, noise = randn(gen, shape), randn(gen, shape)
    model = lambda x: target - 0.5 * x  # a fixed "velocity model" so every step depends on the last
    theirs = ours = randn(gen, shape)
    for i, timestep in enumerate(scheduler.timesteps):
        theirs = scheduler.step(model(theirs), timestep, theirs, return_dict=False)[0]
        sigma, sigma_next = (sigmas[i].expand(2).clone(), sigmas[i + 1].expand(2).clone()) if per_sample else (
            float(sigmas[i]), float(sigmas[i + 1]))
        ours, logp = ops.sde_step(ours, model(ours), sigma, sigma_next, noise, noise_level=0.0, kind=kind,
                                  backend=backend)
        assert theirs.dtype == ours.dtype == torch.float32
        assert_close(ours, theirs.double(), what=f"step {i} (sigma {float(sigmas[i]):.4f})", rtol=1e-5)
        assert logp.shape == (2,) and bool(torch.isnan(logp).all())
