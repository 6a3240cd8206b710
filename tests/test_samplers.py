"""Samplers and rollouts on a toy policy: diffusers parity (Euler, DPM-Solver++ 2M), a float64 2M reference,
on-policy log-probs, the shared SDE window, reproducibility, and one encode per group."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.policy.samplers import (
    dpm2_coefficients,
    euler_step,
    grpo_rollout,
    nft_rollout,
    ode_sample,
    sample_generators,
    sde_window,
    stochastic_steps,
)

from .helpers import recomputed_logp
from .toy_policy import ToyPolicy, toy_condition

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]')")

# diffusers' DPM-Solver scheduler builds numpy arrays from tensors in a way numpy 2 deprecates: not our code
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def policy() -> ToyPolicy:
    return ToyPolicy()


def recorded_run(policy: ToyPolicy, sample):
    """Run sample() while the policy records its velocity inputs; returns (result, [(x_t, t), ...])."""
    policy.recorded = []
    try:
        return sample(), policy.recorded
    finally:
        policy.recorded = None


# ---------------------------------------------------------------------------------------------------------
# deterministic solvers against diffusers and a float64 reference
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_steps", [4, 8, 28])
def test_euler_is_the_diffusers_flow_match_euler_scheduler_step_for_step(policy, num_steps):
    cond = toy_condition(policy, pairs=2)
    sigmas = policy.sigmas(num_steps, cond)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()  # shift 1: takes our (already shifted) sigmas as given
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    torch.testing.assert_close(scheduler.sigmas, sigmas, rtol=0, atol=0)

    ours, inputs = recorded_run(policy, lambda: ode_sample(policy, cond, num_steps=num_steps, seed=[11, 12]))
    theirs = policy.noise(cond, sample_generators([11, 12], 2, "cpu"))
    for i, timestep in enumerate(scheduler.timesteps):
        x_t, t = inputs[i]
        torch.testing.assert_close(x_t, theirs, rtol=1e-6, atol=1e-6, msg=lambda m: f"input of step {i}: {m}")
        assert torch.equal(t, sigmas[i].expand(2))
        theirs = scheduler.step(policy.velocity(theirs, t, cond), timestep, theirs, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def diffusers_dpm2(policy, cond, num_steps, seed):
    """diffusers' DPMSolverMultistepScheduler (flow sigmas, x0 prediction, order 2, first-order final step) on
    our sigmas. diffusers' order-2 solver has no lower-order second-to-last step, so below 15 steps we make it
    first order by resetting its count of previous outputs (that count < 1 means "first order")."""
    sigmas = policy.sigmas(num_steps, cond)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero")
    scheduler.set_timesteps(num_steps)
    scheduler.sigmas, scheduler.timesteps = sigmas.clone(), torch.arange(num_steps, 0, -1)
    x = policy.noise(cond, sample_generators(seed, cond.batch_size, "cpu"))
    states = [x]
    for i, timestep in enumerate(scheduler.timesteps):
        if num_steps < 15 and i == num_steps - 2:
            scheduler.lower_order_nums = 0
        v = policy.velocity(x, sigmas[i].expand(x.shape[0]), cond)
        x = scheduler.step(v, timestep, x, return_dict=False)[0]
        states.append(x)
    return states


@pytest.mark.parametrize("num_steps", [6, 10, 16, 20])
def test_dpm2_matches_diffusers_dpm_solver_multistep(policy, num_steps):
    cond = toy_condition(policy, pairs=2)
    theirs = diffusers_dpm2(policy, cond, num_steps, seed=5)
    ours, inputs = recorded_run(policy, lambda: ode_sample(policy, cond, num_steps=num_steps, solver="dpm2",
                                                           seed=5))
    for i, (x_t, _) in enumerate(inputs):
        torch.testing.assert_close(x_t, theirs[i], rtol=1e-5, atol=2e-6, msg=lambda m: f"input of step {i}: {m}")
    torch.testing.assert_close(ours, theirs[-1], rtol=1e-5, atol=2e-6)


def reference_dpm2_float64(velocity, x, sigmas):
    """DPM-Solver++(2M) in x0 prediction written out in float64 from the paper's update, with DiffusionNFT's
    lower-order steps: first and last first order, and the second-to-last too below 15 steps."""
    sigmas = [float(s) for s in sigmas]
    n = len(sigmas) - 1
    lam = lambda t: -math.inf if t >= 1 else math.log((1 - t) / t)
    x = x.double()
    x0_prev = None
    for i in range(n):
        t, t_next = sigmas[i], sigmas[i + 1]
        x0 = x - t * velocity(x, t).double()
        if t_next == 0:
            x = x0
        else:
            exp_minus_h = math.exp(-(lam(t_next) - lam(t)))
            first_order = i == 0 or i == n - 1 or (n < 15 and i == n - 2)
            if first_order:
                d = x0
            else:
                r = (lam(t) - lam(sigmas[i - 1])) / (lam(t_next) - lam(t))
                d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
            x = (t_next / t) * x + (1 - t_next) * (1 - exp_minus_h) * d
        x0_prev = x0
    return x


@pytest.mark.parametrize("num_steps", [3, 6, 10, 14, 15, 24])
def test_dpm2_matches_a_float64_reference(policy, num_steps):
    cond = toy_condition(policy, pairs=2)
    sigmas = policy.sigmas(num_steps, cond)
    x1 = policy.noise(cond, sample_generators(21, 2, "cpu"))
    velocity = lambda x, t: policy.velocity(x.float(), torch.full((2,), t), cond)
    expected = reference_dpm2_float64(velocity, x1, sigmas)
    ours = ode_sample(policy, cond, num_steps=num_steps, solver="dpm2", seed=21)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)
    second_order = any(step.order == 2 for step in dpm2_coefficients(sigmas.tolist()))
    euler = ode_sample(policy, cond, num_steps=num_steps, seed=21)     # first order everywhere is exactly Euler
    assert torch.allclose(ours, euler, atol=1e-4) != second_order, "2M steps must differ from Euler, 1st-order not"


def test_dpm2_orders_follow_the_diffusion_nft_convention():
    orders = lambda n, sigmas=None: [s.order for s in dpm2_coefficients(
        sigmas if sigmas is not None else [0.99 * (n - k) / n for k in range(n)] + [0.0])]
    assert orders(6) == [1, 2, 2, 2, 1, 1]            # < 15 steps: the second-to-last is first order too
    assert orders(15) == [1] + [2] * 13 + [1]
    assert orders(2) == [1, 1] and orders(1) == [1]
    # from t = 1 exactly, lambda is -inf and the second step's correction vanishes: first order
    assert orders(6, [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0]) == [1, 1, 2, 2, 1, 1]
    step = dpm2_coefficients([0.8, 0.0])[0]
    assert (step.x_coef, step.x0_coef) == (0.0, 1.0)   # the final step lands on x0_hat
    x, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)  # first order = DDIM = Euler for flow matching
    first = dpm2_coefficients([0.7, 0.4])[0]
    torch.testing.assert_close(first.x_coef * x + first.x0_coef * (x - 0.7 * v), euler_step(x, v, 0.7, 0.4))


def test_nft_rollout_is_dpm2_and_keeps_only_x0_and_the_condition(policy):
    cond = toy_condition(policy, pairs=2)
    out = nft_rollout(policy, cond, group_size=3, num_steps=6, seed=0)
    assert set(vars(out)) == {"x0", "cond"}
    assert out.x0.shape == (6, 16, 12) and out.x0.dtype == torch.float32 and out.cond.batch_size == 6
    assert torch.equal(out.x0, ode_sample(policy, cond, group_size=3, num_steps=6, solver="dpm2", seed=0))


# ---------------------------------------------------------------------------------------------------------
# GRPO rollouts: log-probs, window
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, noise_level", [("flow_grpo", 0.7), ("flow_grpo", 0.9), ("cps", 0.8)])
@pytest.mark.parametrize("window", [None, 3], ids=["all-steps", "window3"])
def test_grpo_logp_equals_sde_logprob_from_the_stored_latents(policy, kind, noise_level, window):
    cond = toy_condition(policy, pairs=2)
    num_steps = 10
    out = grpo_rollout(policy, cond, group_size=3, num_steps=num_steps, seed=100, kind=kind, noise_level=noise_level,
                       window_size=window, window_generator=torch.Generator().manual_seed(1) if window else None)
    steps = out.step_index.tolist()
    assert steps == (list(range(num_steps - 1)) if window is None else steps[:1] + [steps[0] + 1, steps[0] + 2])
    sigmas = policy.sigmas(num_steps, cond)
    assert torch.equal(out.sigma, sigmas[out.step_index]) and torch.equal(out.sigma_next, sigmas[out.step_index + 1])
    K = len(steps)
    assert out.latents.shape == out.next_latents.shape == (6, K, 16, 12) and out.latents.dtype == torch.float32
    assert out.logp.shape == (6, K) and out.logp.dtype == torch.float32 and bool(out.logp.isfinite().all())

    recomputed = recomputed_logp(policy, out)
    torch.testing.assert_close(recomputed, out.logp, rtol=1e-5, atol=1e-5)
    ratio = torch.exp(recomputed - out.logp)
    assert float((ratio - 1).abs().max()) < 1e-5


def test_bf16_autocast_logp_drift_is_measured(policy, record_property, capsys):
    """Rollout under bf16 autocast, log-probs recomputed one sample at a time (another batch shape) in bf16 and
    in fp32: the drift is recorded, not asserted beyond a loose sanity bound."""
    cond = toy_condition(policy, pairs=2)
    policy.autocast = True                                   # the rollout's velocities under bf16 autocast
    try:
        out = grpo_rollout(policy, cond, group_size=3, num_steps=10, seed=3, noise_level=0.9)
    finally:
        policy.autocast = False
    assert out.x0.dtype == out.latents.dtype == torch.float32 and out.logp.dtype == torch.float32

    def per_sample(autocast: bool):
        rows = []
        for b in range(out.x0.shape[0]):
            one = type(out)(**{**vars(out), "latents": out.latents[b:b + 1], "next_latents": out.next_latents[b:b + 1],
                               "cond": out.cond.select([b])})
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                rows.append(recomputed_logp(policy, one))
        return torch.cat(rows)

    drift_bf16 = float((per_sample(True) - out.logp).abs().max())
    drift_fp32 = float((per_sample(False) - out.logp).abs().max())
    record_property("bf16_rollout_logp_drift_vs_bf16_recompute", drift_bf16)
    record_property("bf16_rollout_logp_drift_vs_fp32_recompute", drift_fp32)
    with capsys.disabled():
        print(f"\n[bf16 drift] max |dlogp| over {out.logp.numel()} steps: bf16 recompute {drift_bf16:.3g}, "
              f"fp32 recompute {drift_fp32:.3g} (|logp| ~ {float(out.logp.abs().mean()):.3g})")
    assert math.isfinite(drift_bf16) and math.isfinite(drift_fp32)
    assert drift_bf16 < 1.0 and drift_fp32 < 1.0


def test_window_is_shared_by_ranks_and_moves_between_steps():
    rank_generators = [torch.Generator().manual_seed(1234) for _rank in range(2)]
    windows = [[sde_window(10, 3, g) for _step in range(40)] for g in rank_generators]
    assert windows[0] == windows[1], "two ranks with the same seed must train the same windows"
    starts = [w.start for w in windows[0]]
    assert len(set(starts)) == 3, "the window must move between training steps (starts 0, 1, 2 in the first half)"
    assert all(len(w) == 3 and 0 <= w.start and w.stop <= 5 for w in windows[0])
    assert all(w.stop <= 9 for w in (sde_window(10, 4, rank_generators[0], (2, 10)) for _ in range(20)))
    assert stochastic_steps(10) == range(0, 9)


def test_sde_steps_only_inside_the_window(policy):
    cond = toy_condition(policy, pairs=1)
    num_steps, size = 10, 3
    drawn = sde_window(num_steps, size, torch.Generator().manual_seed(9))
    out, inputs = recorded_run(policy, lambda: grpo_rollout(
        policy, cond, group_size=2, num_steps=num_steps, seed=0, window_size=size,
        window_generator=torch.Generator().manual_seed(9)))
    assert out.step_index.tolist() == list(drawn)
    sigmas = policy.sigmas(num_steps, cond).tolist()
    states = [x for x, _ in inputs] + [out.x0]
    for i in range(num_steps):
        euler = euler_step(states[i], policy.velocity(states[i], inputs[i][1], out.cond), sigmas[i], sigmas[i + 1])
        assert torch.equal(euler, states[i + 1]) == (i not in drawn), f"step {i}, window {drawn}"
    for k, i in enumerate(drawn):
        assert torch.equal(out.latents[:, k], states[i]) and torch.equal(out.next_latents[:, k], states[i + 1])


# ---------------------------------------------------------------------------------------------------------
# reproducibility, groups, encode once
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rollout", ["grpo", "nft"])
def test_same_seed_same_images_and_samples_do_not_depend_on_their_batch(policy, rollout):
    cond = toy_condition(policy, pairs=2)
    run = {"grpo": lambda c, **kw: grpo_rollout(policy, c, num_steps=6, **kw).x0,
           "nft": lambda c, **kw: nft_rollout(policy, c, num_steps=6, **kw).x0}[rollout]
    first = run(cond, group_size=4, seed=10)
    assert torch.equal(first, run(cond, group_size=4, seed=10))
    assert not torch.allclose(first, run(cond, group_size=4, seed=11))
    images = policy.decode(first, cond.select([0] * 8))
    assert images.dtype == torch.uint8 and torch.equal(images, policy.decode(run(cond, group_size=4, seed=10),
                                                                              cond.select([0] * 8)))
    # row 5 = pair 1, sample 1, seeded 10 + 5: alone, or in chunks of 3, it is the same sample
    alone = run(cond.select([1]), seed=[15])
    torch.testing.assert_close(alone[0], first[5], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(run(cond, group_size=4, seed=10, batch_size=3), first, rtol=1e-6, atol=1e-6)


def test_samples_of_a_group_differ_only_by_their_noise(policy):
    cond = toy_condition(policy, pairs=1)
    same = grpo_rollout(policy, cond, group_size=4, num_steps=6,
                        generators=[torch.Generator().manual_seed(3) for _ in range(4)])
    for i in range(1, 4):
        torch.testing.assert_close(same.x0[i], same.x0[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(same.logp[i], same.logp[0], rtol=0, atol=1e-5)
    apart = grpo_rollout(policy, cond, group_size=4, num_steps=6, seed=3)
    assert all(not torch.allclose(apart.x0[i], apart.x0[0]) for i in range(1, 4))
    assert all(torch.equal(t, cond.tensors["target"].expand_as(t)) for t in apart.cond.tensors.values())


def test_the_condition_is_encoded_once_per_group(policy):
    cond = toy_condition(policy, pairs=3)
    assert policy.encode_calls == 1
    policy.velocity_batches.clear()
    out = grpo_rollout(policy, cond, group_size=4, num_steps=5, seed=0)
    nft_rollout(policy, cond, group_size=4, num_steps=5, seed=0)
    assert policy.encode_calls == 1
    assert policy.velocity_batches == [12] * 10, "one batched velocity call per step for all N * G samples"
    expected = cond.tensors["target"].repeat_interleave(4, 0)   # pair-major: row p * G + i is pair p
    assert torch.equal(out.cond.tensors["target"], expected)
    policy.velocity_batches.clear()
    grpo_rollout(policy, cond, group_size=4, num_steps=5, seed=0, batch_size=5)
    assert policy.velocity_batches == [5] * 5 + [5] * 5 + [2] * 5


def test_rollouts_run_without_autograd(policy):
    cond = toy_condition(policy, pairs=1)
    assert policy.transformer.weight.requires_grad
    out = grpo_rollout(policy, cond, group_size=2, num_steps=4, seed=0)
    assert not any(t.requires_grad for t in (out.x0, out.latents, out.next_latents, out.logp))
    assert not nft_rollout(policy, cond, group_size=2, num_steps=4, seed=0).x0.requires_grad
    assert not ode_sample(policy, cond, num_steps=4, seed=0).requires_grad


def test_clear_errors(policy):
    cond = toy_condition(policy, pairs=2)
    with pytest.raises(ValueError, match="exactly one of seed"):
        grpo_rollout(policy, cond, num_steps=4)
    with pytest.raises(ValueError, match="exactly one of seed"):
        grpo_rollout(policy, cond, num_steps=4, seed=0, generators=sample_generators(0, 2, "cpu"))
    with pytest.raises(ValueError, match="3 generators for 4 samples"):
        grpo_rollout(policy, cond, group_size=2, num_steps=4, generators=sample_generators(0, 3, "cpu"))
    with pytest.raises(ValueError, match="3 seeds for 2 samples"):
        ode_sample(policy, cond, num_steps=4, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="does not fit"):
        grpo_rollout(policy, cond, num_steps=6, seed=0, window_size=4, window_generator=torch.Generator())
    with pytest.raises(ValueError, match="window_generator"):
        grpo_rollout(policy, cond, num_steps=6, seed=0, window_size=2)
    with pytest.raises(ValueError, match="noise_level must be > 0"):
        grpo_rollout(policy, cond, num_steps=6, seed=0, noise_level=0.0)
    with pytest.raises(ValueError, match="solver"):
        ode_sample(policy, cond, num_steps=4, seed=0, solver="heun")
    with pytest.raises(ValueError, match="decrease"):
        dpm2_coefficients([1.0, 0.5, 0.5, 0.0])
