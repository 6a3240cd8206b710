"""Test doubles for the engine: a deterministic image reward with spread, and run configs on the tiny policy."""
from __future__ import annotations

import math
import os

import torch

from editrl_engine.engine import load_config
from editrl_engine.reward.base import RewardBatch, RewardModel, check_triples


class BrightnessReward(RewardModel):
    """reward = mean red-channel intensity / 255 of the edited image (so samples of a group differ); optionally NaN
    for every `nan_every`-th call's first sample, and a call counter."""
    kind = "brightness"

    def __init__(self, nan_every: int = 0, kill_on_call: int = 0):
        self.calls = 0
        self.nan_every, self.kill_on_call = nan_every, kill_on_call

    def score(self, sources, instructions, edited, **_) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        self.calls += 1
        if self.kill_on_call and self.calls == self.kill_on_call:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)             # as if the job scheduler stopped the run
        images = torch.stack([torch.as_tensor(e) for e in edited]).float()     # [n, 3, H, W]
        reward = images[:, 0].mean(dim=(1, 2)) / 255.0                          # [n]
        details = [{} for _ in range(n)]
        if self.nan_every and self.calls % self.nan_every == 0:
            reward[0] = math.nan
            details[0] = {"error": "unparseable"}
        return RewardBatch(reward.float(), details, failures=int(torch.isnan(reward).sum()))


def tiny_config(out_dir, *overrides: str, algo: str = "nft"):
    """A fast run on the tiny flux-kontext preset: 16x16 synthetic tasks, 2 groups x 4 samples, 3-step rollouts,
    every filter off (a tiny random model's rewards have little spread)."""
    base = [f"algo.name='{algo}'", "policy.preset='tiny'", "policy.attention='math'", "policy.lora_rank=4",
            "policy.lora_alpha=8.0", f"run.out_dir='{out_dir}'", "run.steps=2", "run.ops_backend='torch'",
            "data.synthetic_tasks=6", "data.image_size=16", "sampling.group_size=4", "sampling.groups_per_step=2",
            "sampling.num_steps=3", "algo.advantage.filter_std=-1.0", "algo.advantage.filter_mean=-1.0",
            "algo.advantage.ban_std=-1.0", "optim.lr=1e-2", "optim.ema_every=0", "log.progress=false",
            "log.tensorboard=false", "log.image_every=0", "checkpoint.every=0"]
    if algo == "nft":
        base += ["algo.nft.kl_beta=0.0"]
    else:
        base += ["algo.grpo.clip_low=0.2", "algo.grpo.clip_high=0.2", "sampling.num_steps=4"]
    return load_config(None, base + list(overrides))
