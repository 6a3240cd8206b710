"""Bad arguments raise ValueError naming the argument; skip_value_checks() skips the checks that read values."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import backends, ops

B, SHAPE = 2, (2, 3, 4)


def lat(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*(shape or SHAPE), dtype=dtype, device=device)


def step(**kw):
    args = dict(x=lat(), v=lat(), sigma=0.8, sigma_next=0.6, noise=lat())
    args.update(kw)
    return ops.sde_step(args.pop("x"), args.pop("v"), args.pop("sigma"), args.pop("sigma_next"), args.pop("noise"),
                        backend=args.pop("backend", "torch"), **args)


def logprob(**kw):
    args = dict(x_next=lat(), x=lat(), v=lat(), sigma=0.8, sigma_next=0.6)
    args.update(kw)
    return ops.sde_logprob(args.pop("x_next"), args.pop("x"), args.pop("v"), args.pop("sigma"),
                           args.pop("sigma_next"), backend=args.pop("backend", "torch"), **args)


def nft(**kw):
    args = dict(v=lat(), v_old=lat(), x_t=lat(), x0=lat(), t=0.5, r=0.5)
    args.update(kw)
    return ops.nft_loss(args.pop("v"), args.pop("v_old"), args.pop("x_t"), args.pop("x0"), args.pop("t"),
                        args.pop("r"), backend=args.pop("backend", "torch"), **args)


def grpo(**kw):
    args = dict(logp=torch.zeros(B), logp_old=torch.zeros(B), advantages=torch.ones(B))
    args.update(kw)
    return ops.grpo_loss(args.pop("logp"), args.pop("logp_old"), args.pop("advantages"),
                         backend=args.pop("backend", "torch"), **args)


def adv(rewards=None, group_index=None, **kw):
    rewards = torch.rand(4) if rewards is None else rewards
    group_index = torch.tensor([0, 0, 1, 1]) if group_index is None else group_index
    return ops.group_advantages(rewards, group_index, backend=kw.pop("backend", "torch"), **kw)


def cfg(**kw):
    args = dict(v_cond=lat(), v_uncond=lat(), scale=4.0)
    args.update(kw)
    return ops.cfg_combine(args.pop("v_cond"), args.pop("v_uncond"), args.pop("scale"),
                           backend=args.pop("backend", "torch"), **args)


# (call, regex the ValueError message must match: it names the argument)
BAD = {
    # shapes
    "step v shape": (lambda: step(v=lat(2, 3, 5)), r"^v has shape"),
    "step noise shape": (lambda: step(noise=lat(3, 3, 4)), r"^noise has shape"),
    "logprob x_next shape": (lambda: logprob(x_next=lat(2, 12)), r"^x_next has shape"),
    "logprob v_ref shape": (lambda: logprob(v_ref=lat(2, 4, 3)), r"^v_ref has shape"),
    "nft x0 shape": (lambda: nft(x0=lat(2, 3)), r"^x0 has shape"),
    "nft v_ref shape": (lambda: nft(v_ref=lat(1, 3, 4)), r"^v_ref has shape"),
    "cfg v_uncond shape": (lambda: cfg(v_uncond=lat(2, 3, 5)), r"^v_uncond has shape"),
    "grpo logp_old shape": (lambda: grpo(logp_old=torch.zeros(B + 1)), r"^logp_old has shape"),
    "grpo kl shape": (lambda: grpo(kl=torch.zeros(B + 1)), r"^kl has shape"),
    "grpo valid shape": (lambda: grpo(valid=torch.ones(B + 1, dtype=torch.bool)), r"^valid must be"),
    "nft valid shape": (lambda: nft(valid=torch.ones(1, dtype=torch.bool)), r"^valid must be"),
    "group_index shape": (lambda: adv(group_index=torch.tensor([0, 1, 1])), r"^group_index has shape"),
    "sigma shape": (lambda: step(sigma=torch.full((B + 1,), 0.8)), r"^sigma must be"),
    "sigma_next 2-D": (lambda: step(sigma_next=torch.full((B, 1), 0.6)), r"^sigma_next must be"),
    "nft t shape": (lambda: nft(t=torch.full((3,), 0.5)), r"^t must be"),
    "nft r shape": (lambda: nft(r=torch.full((B, 2), 0.5)), r"^r must be"),
    "cfg scale shape": (lambda: cfg(scale=torch.ones(3)), r"^scale must be"),
    "rewards 2-D": (lambda: adv(rewards=torch.rand(2, 2)), r"^rewards must be 1-D"),
    "logp 2-D": (lambda: grpo(logp=torch.zeros(B, 1), logp_old=torch.zeros(B, 1), advantages=torch.zeros(B, 1)),
                 r"^logp must be 1-D"),
    "cfg 1-D": (lambda: cfg(v_cond=torch.ones(4), v_uncond=torch.ones(4)), r"^v_cond must have at least 2"),
    "empty x": (lambda: step(x=lat(0, 3), v=lat(0, 3), noise=lat(0, 3)), r"^x is empty"),
    # devices
    "step v device": (lambda: step(v=lat(device="meta")), r"^v is on meta"),
    "logprob x_next device": (lambda: logprob(x_next=lat(device="meta")), r"^x_next is on meta"),
    "logprob v_ref device": (lambda: logprob(v_ref=lat(device="meta")), r"^v_ref is on meta"),
    "nft v_old device": (lambda: nft(v_old=lat(device="meta")), r"^v_old is on meta"),
    "cfg v_uncond device": (lambda: cfg(v_uncond=lat(device="meta")), r"^v_uncond is on meta"),
    "grpo advantages device": (lambda: grpo(advantages=torch.zeros(B, device="meta")), r"^advantages is on meta"),
    "grpo valid device": (lambda: grpo(valid=torch.ones(B, dtype=torch.bool, device="meta")), r"^valid is on meta"),
    "group_index device": (lambda: adv(group_index=torch.tensor([0, 0, 1, 1], device="meta")),
                           r"^group_index is on meta"),
    "sigma device": (lambda: step(sigma=torch.full((B,), 0.8, device="meta")), r"^sigma is on meta"),
    "nft t device": (lambda: nft(t=torch.full((B,), 0.5, device="meta")), r"^t is on meta"),
    # dtypes
    "step v dtype": (lambda: step(v=lat(dtype=torch.float64)), r"^v has dtype"),
    "logprob v_ref dtype": (lambda: logprob(v_ref=lat(dtype=torch.bfloat16)), r"^v_ref has dtype"),
    "nft x_t dtype": (lambda: nft(x_t=lat(dtype=torch.float16)), r"^x_t has dtype"),
    "cfg v_uncond dtype": (lambda: cfg(v_uncond=lat(dtype=torch.bfloat16)), r"^v_uncond has dtype"),
    "grpo advantages dtype": (lambda: grpo(advantages=torch.ones(B, dtype=torch.float64)), r"^advantages has dtype"),
    "x integer": (lambda: step(x=torch.zeros(SHAPE, dtype=torch.int64)), r"^x must be a floating-point"),
    "x not a tensor": (lambda: step(x=[[1.0]]), r"^x must be a torch.Tensor"),
    "group_index float": (lambda: adv(group_index=torch.tensor([0.0, 0.0, 1.0, 1.0])), r"^group_index must be"),
    # values
    "group_index negative": (lambda: adv(group_index=torch.tensor([0, -1, 1, 1])), r"^group_index out of range"),
    "group_index >= num_groups": (lambda: adv(group_index=torch.tensor([0, 0, 1, 2]), num_groups=2),
                                  r"^group_index out of range"),
    "sigma > 1": (lambda: step(sigma=1.5), r"^sigma must lie in \[0, 1\]"),
    "sigma < 0 (vector)": (lambda: step(sigma=torch.tensor([0.8, -0.1]), sigma_next=-0.2), r"^sigma must lie"),
    "sigma_next < 0": (lambda: logprob(sigma_next=-0.1), r"^sigma_next must lie in \[0, 1\]"),
    "sigma_next == sigma": (lambda: step(sigma_next=0.8), r"^sigma_next must be < sigma"),
    "sigma_next > sigma": (lambda: logprob(sigma_next=torch.tensor([0.6, 0.9])), r"^sigma_next must be < sigma"),
    "sigma_max = 1": (lambda: step(sigma=1.0, sigma_max=1.0), r"^sigma_max must lie in \[0, 1\)"),
    "noise_level < 0": (lambda: step(noise_level=-0.1), r"^noise_level must be >= 0"),
    "noise_level nan": (lambda: logprob(noise_level=float("nan")), r"^noise_level must be >= 0"),
    "logprob noise_level 0": (lambda: logprob(noise_level=0.0), r"^sde_logprob needs noise_level > 0"),
    "kind": (lambda: step(kind="ddim"), r"^kind='ddim' is not an SDE kind"),
    "cps with v_ref": (lambda: logprob(kind="cps", v_ref=lat()), r"v_ref=None with kind='cps'"),
    "nft kl_beta without v_ref": (lambda: nft(kl_beta=0.1), r"^kl_beta=0.1 needs v_ref"),
    "grpo kl_beta without kl": (lambda: grpo(kl_beta=0.04), r"^kl_beta=0.04 needs kl"),
    "nft beta 0": (lambda: nft(beta=0.0), r"^beta must be > 0"),
    "grpo clip_range < 0": (lambda: grpo(clip_range=(-0.1, 0.2)), r"^clip_range must be >= 0"),
    "std": (lambda: adv(std="batch"), r"^std='batch'"),
    "clip <= 0": (lambda: adv(clip=0.0), r"^clip must be > 0"),
    "eps < 0": (lambda: adv(eps=-1e-4), r"eps >= 0"),
    "optimality clip": (lambda: ops.nft_optimality(torch.zeros(3), 0.0, backend="torch"), r"^clip must be > 0"),
    "cfg rescale": (lambda: cfg(rescale="std"), r"^rescale='std'"),
    # backends
    "backend name": (lambda: step(backend="cuda"), r"^backend='cuda' is not a backend"),
    "backend name (losses)": (lambda: grpo(backend="Torch"), r"^backend='Torch' is not a backend"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_argument_raises_value_error_naming_it(name):
    call, pattern = BAD[name]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_editrl_backend_env_bogus(monkeypatch):
    monkeypatch.setenv("EDITRL_BACKEND", "bogus")
    with pytest.raises(ValueError, match=r"^EDITRL_BACKEND='bogus' is not a backend"):
        step(backend=None)
    with pytest.raises(ValueError, match=r"EDITRL_BACKEND='bogus'"):
        ops.nft_optimality(torch.zeros(3))


def test_cpp_on_a_non_cpu_device_is_refused():
    x = lat(device="meta")
    with pytest.raises(backends.BackendUnavailable, match=r"backend 'cpp' runs on CPU tensors, got meta"):
        ops.sde_step(x, lat(device="meta"), 0.8, 0.6, lat(device="meta"), backend="cpp")


def test_skip_value_checks_skips_only_value_checks():
    # sigma out of range and sigma_next > sigma pass inside the context (the torch reference just computes)
    with ops.skip_value_checks():
        step(sigma=1.5, sigma_next=0.6)
        logprob(sigma=0.5, sigma_next=0.6)
        # checks that need no values still run
        with pytest.raises(ValueError, match=r"^v has shape"):
            step(v=lat(2, 3, 5))
        with pytest.raises(ValueError, match=r"^noise_level must be >= 0"):
            step(noise_level=-1.0)
    # and the value checks are back afterwards
    with pytest.raises(ValueError, match=r"^sigma must lie"):
        step(sigma=1.5)


def test_skip_value_checks_skips_group_index_range():
    """Inside the context the range of group_index is not read; an in-range index still computes."""
    with ops.skip_value_checks():
        out = adv(group_index=torch.tensor([0, 0, 1, 1]), num_groups=2)
    assert out.mean.shape == (2,)
    with ops.skip_value_checks():
        try:
            adv(group_index=torch.tensor([0, 0, 1, 5]), num_groups=2)
        except ValueError as exc:  # noqa: PT017 -- anything but the range check may complain
            assert "out of range" not in str(exc)
        except (IndexError, RuntimeError):
            pass


# ---------------------------------------------------------------------------------------------------------
# limits of the fused backends (their dtypes and what they differentiate)
# ---------------------------------------------------------------------------------------------------------
FUSED = ("triton", "cpp")


@pytest.fixture(params=FUSED)
def fused(request):
    from .conftest import require_backend

    return require_backend(request.param, "sde_step", "sde_logprob", "nft_loss", "grpo_loss", "cfg_combine")


def test_fused_rejects_float64(fused):
    with pytest.raises(ValueError, match=r"^x has dtype torch.float64.*backend='torch'"):
        step(x=lat(dtype=torch.float64), v=lat(dtype=torch.float64), noise=lat(dtype=torch.float64), backend=fused)
    with pytest.raises(ValueError, match=r"^v has dtype torch.float64"):
        nft(**{k: lat(dtype=torch.float64) for k in ("v", "v_old", "x_t", "x0")}, backend=fused)
    with pytest.raises(ValueError, match=r"^v_cond has dtype torch.float64"):
        cfg(v_cond=lat(dtype=torch.float64), v_uncond=lat(dtype=torch.float64), backend=fused)


def test_fused_differentiates_only_v(fused):
    with pytest.raises(ValueError, match=r"^x requires grad"):
        logprob(x=lat().requires_grad_(), backend=fused)
    with pytest.raises(ValueError, match=r"^x0 requires grad"):
        nft(x0=lat().requires_grad_(), backend=fused)
    with pytest.raises(ValueError, match=r"^logp_old requires grad"):
        grpo(logp_old=torch.zeros(B, requires_grad=True), backend=fused)
    with pytest.raises(ValueError, match=r"^sde_step is not differentiable"):
        step(v=lat().requires_grad_(), backend=fused)
