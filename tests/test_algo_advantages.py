"""step_advantages: advantages, validity, statistics and ban decisions against a float64 hand computation."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.algo import AdvantageConfig, step_advantages
from editrl_engine.data.manifest import GroupKey

NAN = float("nan")
# 5 groups of 4: normal, one NaN, solved (banned), constant low, all NaN
REWARDS = [0.2, 0.5, 0.7, 0.4,
           0.1, NAN, 0.9, 0.3,
           0.95, 0.96, 0.95, 0.97,
           0.3, 0.3, 0.3, 0.3,
           NAN, NAN, NAN, NAN]
KEYS = [GroupKey(f"instr {g}", f"sha{g}") for g in range(5)]


def hand(rewards, group_size, cfg):
    """Float64 plain-Python computation of what step_advantages returns."""
    groups = [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]
    fin = lambda xs: [x for x in xs if not math.isnan(x)]
    mean = lambda xs: sum(xs) / len(xs) if xs else NAN
    pstd = lambda xs: math.sqrt(sum((x - mean(xs)) ** 2 for x in xs) / len(xs)) if xs else NAN
    allf = fin(rewards)
    adv, valid, ban = [], [], []
    for g, xs in enumerate(groups):
        m, s = mean(fin(xs)), pstd(fin(xs))
        norm = pstd(allf) if cfg.std == "global" else s
        f_std, f_mean = cfg.threshold("filter_std"), cfg.threshold("filter_mean")      # None: off
        ok = (f_std is None or s > f_std) and (f_mean is None or m < f_mean)
        for x in xs:
            v = ok and not math.isnan(x)
            valid.append(v)
            adv.append(max(-cfg.clip, min(cfg.clip, (x - m) / (norm + cfg.eps))) if v else 0.0)
        b_std, b_mean = cfg.threshold("ban_std"), cfg.threshold("ban_mean")
        if b_std is not None and b_mean is not None and s < b_std and m > b_mean:
            ban.append(KEYS[g])
    stds = [pstd(fin(xs)) for xs in groups if fin(xs)]
    stats = {"reward_mean": mean(allf), "reward_std": pstd(allf), "valid_frac": sum(valid) / len(valid),
             "filtered_frac": 1 - sum(valid) / len(valid),
             "zero_std_group_frac": sum(s == 0 for s in stds) / len(stds),
             "nan_count": len(rewards) - len(allf), "banned_groups": len(ban)}
    return adv, valid, stats, ban


CONFIGS = [AdvantageConfig(), AdvantageConfig(std="global"), AdvantageConfig(clip=0.5),
           AdvantageConfig(filter_std=None, filter_mean=None, ban_std=None),
           AdvantageConfig(filter_std=0.2, filter_mean=0.5, ban_std=0.5, ban_mean=0.25)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_against_hand_computation(cfg):
    rewards = torch.tensor(REWARDS, dtype=torch.float32)
    group_index = torch.arange(len(REWARDS)) // 4
    out = step_advantages(rewards, group_index, KEYS, cfg, backend="torch")
    adv, valid, stats, ban = hand(REWARDS, 4, cfg)
    torch.testing.assert_close(out.advantages, torch.tensor(adv, dtype=torch.float32), rtol=1e-5, atol=1e-5)
    assert out.valid.tolist() == valid
    assert out.stats.keys() == stats.keys()
    for name, value in stats.items():
        assert out.stats[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert out.ban == ban


def test_defaults_follow_uniworld():
    out = step_advantages(torch.tensor(REWARDS), torch.arange(20) // 4, KEYS, backend="torch")
    assert out.ban == [KEYS[2]]                                 # std < 0.05 and mean > 0.9
    assert out.valid.view(5, 4).any(1).tolist() == [True, True, False, False, False]
    assert out.stats["nan_count"] == 5


def test_no_host_sync_before_final_transfer(monkeypatch):
    """Only one device-to-host copy: the final stats tensor (checked by counting .cpu() / .item() / .tolist()
    calls on tensors that are not already results)."""
    calls = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append("item"))
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append("cpu") or real_cpu(self, *a, **k))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: calls.append("bool") or True)
    monkeypatch.setattr(torch.Tensor, "__int__", lambda self: calls.append("int") or 0)
    step_advantages(torch.tensor(REWARDS), torch.arange(20) // 4, KEYS, backend="torch")
    assert calls == ["cpu"]


def test_interleaved_groups():
    """Group indices need not be contiguous (samples of one group spread over ranks)."""
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    rewards = torch.tensor(REWARDS)[perm]
    group_index = (torch.arange(20) // 4)[perm]
    base = step_advantages(torch.tensor(REWARDS), torch.arange(20) // 4, KEYS, backend="torch")
    out = step_advantages(rewards, group_index, KEYS, backend="torch")
    torch.testing.assert_close(out.advantages, base.advantages[perm])
    assert out.ban == base.ban and out.stats == pytest.approx(base.stats, rel=1e-6)
