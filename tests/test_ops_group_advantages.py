"""group_advantages on every backend against an explicit float64 loop written here (independent of
editrl_engine.reference): ragged and unordered groups, a group of one, an all-NaN group, NaN rewards,
UniWorld-V2's filters, std="global", clip and eps."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine import ops

from .helpers import poisoned

pytestmark = pytest.mark.ops("group_advantages")

NAN = float("nan")


def loop_advantages(rewards, group_index, num_groups, std="group", eps=1e-4, clip=5.0, filter_std=None,
                    filter_mean=None):
    """docs/design.md §3 group_advantages as a plain Python loop in float64."""
    r = [float(x) for x in rewards.double()]
    g = [int(i) for i in group_index]
    finite = [math.isfinite(x) for x in r]
    mean, gstd = [], []
    for k in range(num_groups):
        vals = [r[i] for i in range(len(r)) if g[i] == k and finite[i]]
        m = sum(vals) / len(vals) if vals else NAN
        mean.append(m)
        gstd.append(math.sqrt(sum((x - m) ** 2 for x in vals) / len(vals)) if vals else NAN)
    all_vals = [x for x, f in zip(r, finite) if f]
    if all_vals:
        gm = sum(all_vals) / len(all_vals)
        global_std = math.sqrt(sum((x - gm) ** 2 for x in all_vals) / len(all_vals))
    else:
        global_std = NAN
    adv, valid = [], []
    for i, x in enumerate(r):
        k = g[i]
        ok = (finite[i] and (filter_std is None or gstd[k] > filter_std)
              and (filter_mean is None or mean[k] < filter_mean))
        valid.append(ok)
        norm = global_std if std == "global" else gstd[k]
        adv.append(min(max((x - mean[k]) / (norm + eps), -clip), clip) if ok else 0.0)
    as_t = lambda xs: torch.tensor(xs, dtype=torch.float64)
    return as_t(adv), torch.tensor(valid, dtype=torch.bool), as_t(mean), as_t(gstd)


def group_rewards(gen, sizes, means, stds):
    """Rewards for groups of the given sizes whose population mean and std are exactly (in float64) the given
    ones, so filter decisions sit far from their thresholds in any precision. (A std near 0 would leave
    float32's (r - mean) / (std + eps) with only ulp(r) / eps ~ 1e-3 accuracy: random groups keep std >= 0.01.)"""
    out = []
    for n, m, s in zip(sizes, means, stds):
        z = torch.randn(n, generator=gen, dtype=torch.float64)
        z = (z - z.mean()) / z.std(unbiased=False) if n > 1 else torch.zeros(1, dtype=torch.float64)
        out.append(m + s * z)
    return out


def build_case(gen, name):
    """rewards float64 [N], group_index [N] (shuffled), num_groups."""
    if name == "single":
        rewards, groups = [torch.tensor([0.3], dtype=torch.float64)], 1
    elif name == "equal_groups":
        rewards = group_rewards(gen, [4] * 6, torch.rand(6, generator=gen).tolist(), [0.2] * 6)
    elif name == "ragged":
        rewards = group_rewards(gen, [1, 2, 7, 3, 12, 5], [0.5, 0.4, 0.6, 0.95, 0.3, 0.6],
                                [0.0, 0.1, 0.2, 0.04, 0.3, 0.01])
    elif name == "nan":
        rewards = group_rewards(gen, [5, 3, 6, 4, 1], [0.5, 0.5, 0.92, 0.2, 0.7], [0.2, 0.03, 0.06, 0.25, 0.0])
        rewards[0][1] = NAN          # a missing judge answer
        rewards[1][:] = NAN          # an all-NaN group
        rewards[4][0] = NAN          # a group of one, missing
    elif name == "big":
        sizes = [int(s) for s in torch.randint(1, 40, (30,), generator=gen)]
        rewards = group_rewards(gen, sizes, torch.rand(30, generator=gen).tolist(),
                                (0.01 + torch.rand(30, generator=gen) * 0.3).tolist())
        rewards[3][0] = NAN
    elif name == "huge":  # more rewards than one loop step of the kernels
        sizes = [int(s) for s in torch.randint(1, 60, (160,), generator=gen)]
        rewards = group_rewards(gen, sizes, torch.rand(160, generator=gen).tolist(),
                                (0.01 + torch.rand(160, generator=gen) * 0.3).tolist())
        rewards[7][:] = NAN
    else:
        raise ValueError(name)
    groups = torch.cat([torch.full((len(r),), k, dtype=torch.int64) for k, r in enumerate(rewards)])
    rewards = torch.cat(rewards)
    perm = torch.randperm(len(rewards), generator=gen)  # groups arrive unordered
    return rewards[perm], groups[perm], len(rewards)


CASES = ["single", "equal_groups", "ragged", "nan", "big", "huge"]
OPTIONS = [
    dict(),
    dict(std="global"),
    dict(filter_std=0.05, filter_mean=0.9),
    dict(filter_std=0.05, filter_mean=0.9, std="global", clip=1.5),
    dict(eps=0.5, clip=0.7),
    dict(eps=0.0, filter_std=1e-3),
    dict(filter_mean=0.5),
]


def _check(out, expected, n, num_groups, what):
    adv, valid, mean, std = out
    exp_adv, exp_valid, exp_mean, exp_std = expected
    assert adv.dtype == torch.float32 and adv.shape == (n,), what
    assert valid.dtype == torch.bool and valid.shape == (n,), what
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (num_groups,), what
    assert torch.equal(valid, exp_valid), f"{what}: valid {valid.tolist()} != {exp_valid.tolist()}"
    assert bool((adv[~valid] == 0).all()), f"{what}: advantages not exactly 0 where invalid"
    torch.testing.assert_close(adv.double(), exp_adv, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what} advantages: {m}")
    torch.testing.assert_close(mean.double(), exp_mean, rtol=1e-5, atol=1e-6, equal_nan=True,
                               msg=lambda m: f"{what} mean: {m}")
    torch.testing.assert_close(std.double(), exp_std, rtol=1e-4, atol=1e-6, equal_nan=True,
                               msg=lambda m: f"{what} std: {m}")


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("case", CASES)
def test_group_advantages_matches_loop(backend, gen, case, options):
    rewards64, groups, n = build_case(gen, case)
    rewards = rewards64.float()
    num_groups = int(groups.max()) + 1
    expected = loop_advantages(rewards, groups, num_groups, **options)
    for high in (True, False):  # both poisons, so that an unwritten bool shows either way
        with poisoned(high):
            out = ops.group_advantages(rewards, groups, backend=backend, **options)
        _check(out, expected, n, num_groups, f"{case} {options} poison={'high' if high else 'low'}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=str)
def test_group_advantages_other_dtypes(backend, gen, dtype):
    """bf16 rewards and float64 rewards (torch computes in float64, the fused backends in float32) against the
    loop on the given values; the stats are float32 for bf16 input."""
    rewards64, groups, n = build_case(gen, "nan")
    rewards = rewards64.to(dtype)
    num_groups = int(groups.max()) + 1
    options = dict(filter_std=0.05, filter_mean=0.9)
    with poisoned():
        adv, valid, mean, std = ops.group_advantages(rewards, groups, backend=backend, **options)
    exp_adv, exp_valid, exp_mean, exp_std = loop_advantages(rewards, groups, num_groups, **options)
    assert torch.equal(valid, exp_valid)
    torch.testing.assert_close(adv.double(), exp_adv, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean.double(), exp_mean, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(std.double(), exp_std, rtol=1e-4, atol=1e-6, equal_nan=True)
    if dtype == torch.bfloat16:
        assert adv.dtype == mean.dtype == std.dtype == torch.float32


def test_int32_group_index_and_explicit_num_groups(backend, gen):
    """num_groups beyond the last used group: the empty groups get NaN mean and std."""
    rewards64, groups, n = build_case(gen, "ragged")
    rewards = rewards64.float()
    with poisoned():
        out = ops.group_advantages(rewards, groups.int(), num_groups=9, backend=backend)
    _check(out, loop_advantages(rewards, groups, 9), n, 9, "num_groups=9")
    assert bool(torch.isnan(out.mean[6:]).all() and torch.isnan(out.std[6:]).all())


def test_group_advantages_by_hand(backend):
    """group 0 = [1, 2, 3, NaN]: mean 2, population std sqrt(2/3); group 1 = [5, 5]: std 0, advantages 0;
    group 2 = [0, 1e-3]: std 5e-4, so eps = 1e-4 gives +-5/6; group 3 = [NaN]: mean NaN, invalid."""
    nan = float("nan")
    rewards = torch.tensor([1.0, 5.0, 2.0, nan, 0.0, 3.0, nan, 5.0, 1e-3])
    groups = torch.tensor([0, 1, 0, 0, 2, 0, 3, 1, 2])
    with poisoned():
        adv, valid, mean, std = ops.group_advantages(rewards, groups, backend=backend)
    sd = math.sqrt(2 / 3) + 1e-4
    r3 = float(torch.tensor(1e-3))  # the float32 value
    sd2 = r3 / 2 + 1e-4
    expected = torch.tensor([-1 / sd, 0.0, 0.0, 0.0, -r3 / 2 / sd2, 1 / sd, 0.0, 0.0, r3 / 2 / sd2],
                            dtype=torch.float64)
    torch.testing.assert_close(adv.double(), expected, rtol=1e-4, atol=1e-5)
    assert valid.tolist() == [True, True, True, False, True, True, False, True, True]
    torch.testing.assert_close(mean.double(), torch.tensor([2.0, 5.0, r3 / 2, nan], dtype=torch.float64),
                               equal_nan=True, rtol=1e-6, atol=0)
    torch.testing.assert_close(std.double(), torch.tensor([math.sqrt(2 / 3), 0.0, r3 / 2, nan], dtype=torch.float64),
                               equal_nan=True, rtol=1e-4, atol=1e-7)
    # with clip = 1 the group-0 advantages (+-1.2247) are clipped, with filter_std = 0 group 1 (std 0) is filtered
    adv, valid, _, _ = ops.group_advantages(rewards, groups, clip=1.0, filter_std=0.0, backend=backend)
    assert adv[[0, 5]].tolist() == [-1.0, 1.0]
    assert valid.tolist() == [True, False, True, False, True, True, False, False, True]


def test_all_rewards_nan(backend):
    rewards = torch.full((5,), float("nan"))
    groups = torch.tensor([0, 0, 1, 1, 1])
    for options in (dict(), dict(std="global")):
        with poisoned():
            adv, valid, mean, std = ops.group_advantages(rewards, groups, backend=backend, **options)
        assert adv.tolist() == [0.0] * 5 and valid.tolist() == [False] * 5
        assert bool(torch.isnan(mean).all() and torch.isnan(std).all())


def test_strided_inputs(backend, gen):
    """rewards and group_index as strided views (every other / every third element of a larger tensor)."""
    rewards64, groups, n = build_case(gen, "ragged")
    big_r = torch.full((2 * n,), 7.0)
    big_r[::2] = rewards64.float()
    big_g = torch.full((3 * n,), 99, dtype=torch.int64)
    big_g[::3] = groups
    rewards, group_index = big_r[::2], big_g[::3]
    assert not rewards.is_contiguous() and not group_index.is_contiguous()
    options = dict(filter_std=0.05, filter_mean=0.9)
    with poisoned():
        out = ops.group_advantages(rewards, group_index, backend=backend, **options)
    num_groups = int(groups.max()) + 1
    _check(out, loop_advantages(rewards, groups, num_groups, **options), n, num_groups, "strided")
