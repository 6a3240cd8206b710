#!/usr/bin/env python
"""End-to-end benchmark of one training step (rollout -> score -> update): the engine against a plain loop.

Colocated, per model size, on the same policy and reward objects and the same sizes, DiffusionNFT both times:
  engine      editrl_engine.engine.Trainer with its defaults: the step's rollouts batched (one sampling batch of
              all the step's samples, each group encoded once), scoring on a worker thread through the reward's
              shared-prefix group path (score_groups), the fused ops on the device's best backend (cpp on CPU,
              triton on CUDA), and pipelining with staleness 1 (step k + 1 is rolled out while step k's rewards
              are computed, then step k trains)
  sequential  the plain loop written below: per group, encode the source, roll out the group's G samples, decode;
              then the reward called once per image (one score() call per sample); then the update with the torch
              reference ops (backend="torch"); no overlap, no threads of its own
Both update the LoRA over the whole local batch (optim.micro_batch = 0, the engine's default), K = int(0.99 T)
NFT timesteps per sample, three forwards per timestep (old adapter, reference for the KL term, current), one
AdamW step, the old adapter's soft update and the EMA. The low-variance filter and prompt ban are switched off in
both (algo.advantage.filter_std / filter_mean / ban_std = -1): random-weight rewards give every group a std near
0, the default filter would then mark every sample invalid and the engine would skip the update altogether.

Timing: the engine's per-step metrics (trainer.history: time_step is the wall time between the ends of two
steps; with staleness 1 it holds step k + 1's rollout, step k's wait for rewards and step k's update), the plain
loop timed on the host clock around each part. Warm-up steps are dropped; the engine's last step is dropped too
(nothing is left to roll out, so it would only drain the pipeline). images/s = images per step / median step
time; the time split is that of the median step. On CUDA the parts end with a device synchronize (the engine's
steps end on host reads of the rewards and loss statistics).

Separate reward ranks (2 gloo processes, spawned here; rank 0 policy, rank 1 reward; on CPU one torch thread
each, since the two share the cores): the share of scoring hidden by pipelining =
1 - (policy rank's time waiting for rewards, time_idle) / (reward rank's time scoring, time_score), over the
steady-state steps; the whole run's figure (its first and last steps fill and drain the pipeline) uses the
reward rank's own seconds_scoring.

Sizes. CPU: the "tiny" flux-kontext policy at 16² (synthetic shapes task) and a "medium" one (a wider and deeper
Flux transformer built here, 32² images), both with the tiny mllm_logit reward (Qwen2.5-VL, random weights).
CUDA: FLUX.1-Kontext-dev sized policy (12 B transformer, T5-XXL, bf16, random weights) at 512² with gradient
checkpointing and a Qwen2.5-VL-7B sized reward, colocated on one GPU.
Target: engine >= 2x the sequential loop's images/s; separate reward ranks hide >= 80 % of scoring time.
Prints tables and the targets; writes bench/results/e2e-<device>.json atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from common import (
    built_on,
    busy_note,
    cpu_busy_fraction,
    describe_device,
    error_text,
    finite_or_none,
    format_table,
    pick_device,
    print_targets,
    results_file,
    synchronize,
    versions,
    write_json_atomic,
)

from editrl_engine import backends
from editrl_engine.algo import nft as nft_algo
from editrl_engine.algo.advantages import AdvantageConfig, step_advantages
from editrl_engine.algo.sampler import GroupSampler
from editrl_engine.engine import Trainer, load_config
from editrl_engine.engine.tasks import TaskSet
from editrl_engine.policy.base import Condition
from editrl_engine.policy.lora import nft_decay
from editrl_engine.policy.samplers import nft_rollout

SEVEN_B_REWARD = "qwen2.5-vl-7b"
FLUX_POLICY = "flux.1-kontext-dev"
# A "medium" CPU policy: the tiny preset's VAE and text encoders (their widths fix joint / pooled dims at 32), a
# transformer of 2 double + 4 single blocks, 4 heads of 32 (2.3 M parameters against the tiny one's 0.08 M).
MEDIUM_TRANSFORMER = dict(in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=32,
                          num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32,
                          axes_dims_rope=(8, 12, 12))
SIZES = {  # per device type: the model sizes measured colocated
    "cpu": [dict(name="tiny", policy="tiny", reward="tiny", dtype="float32", image_size=16, group_size=8,
                 groups_per_step=8, num_steps=6, warmup=1, repeats=5),
            dict(name="medium", policy="medium", reward="tiny", dtype="float32", image_size=32, group_size=8,
                 groups_per_step=4, num_steps=6, warmup=1, repeats=4)],
    "cuda": [dict(name="flux-kontext-dev", policy=FLUX_POLICY, reward=SEVEN_B_REWARD, dtype="bfloat16",
                  image_size=512, group_size=8, groups_per_step=2, num_steps=6, warmup=1, repeats=3,
                  micro_batch=2, gradient_checkpointing=True)],
}
# separate reward ranks: sizes where scoring is a large share of the policy rank's step (see the report's notes)
SEPARATE = {"cpu": dict(name="tiny-separate", policy="tiny", reward="tiny", dtype="float32", image_size=16,
                        group_size=8, groups_per_step=8, num_steps=3, warmup=1, repeats=6, threads=1),
            "cuda": dict(name="flux-kontext-dev-separate", policy=FLUX_POLICY, reward=SEVEN_B_REWARD,
                         dtype="bfloat16", image_size=512, group_size=8, groups_per_step=2, num_steps=6, warmup=1,
                         repeats=3, micro_batch=2, gradient_checkpointing=True)}
QUICK = dict(name="quick", policy="tiny", reward="tiny", dtype="float32", image_size=16, group_size=2,
             groups_per_step=2, num_steps=2, warmup=1, repeats=1)
SPEEDUP_TARGET = 2.0
HIDDEN_TARGET = 0.80
NOT_FILTERED = ["algo.advantage.filter_std=-1", "algo.advantage.filter_mean=-1", "algo.advantage.ban_std=-1"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto picks CUDA when torch sees a GPU (default: auto)")
    parser.add_argument("--sizes", type=lambda text: text.split(","),
                        help="comma-separated model sizes to measure colocated (default: all of the device's: "
                             "tiny,medium on CPU; flux-kontext-dev on CUDA)")
    parser.add_argument("--repeats", type=int, help="timed steps per loop (default: per size, 3-5)")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads for the colocated runs, both loops (run.threads; default: 1 on "
                             "CPU, see the notes; 0 leaves torch's default)")
    parser.add_argument("--skip-separate", action="store_true", help="do not measure separate reward ranks")
    parser.add_argument("--out", type=Path, help="JSON file, or a directory to write e2e-<device>.json into "
                                                 "(default: bench/results/e2e-<device>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model at 16², 2 groups of 2, 2 sampling steps, 1 timed step per loop "
                             "(the separate-ranks run too); its numbers are not a benchmark")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], dict]:
    """The colocated sizes and the separate-ranks size of this run."""
    if args.quick:
        sizes, separate = [dict(QUICK)], dict(QUICK, name="quick-separate", threads=1)
    else:
        known = {s["name"]: s for s in SIZES[device.type]}
        names = args.sizes or list(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"--sizes: unknown size {', '.join(unknown)} on {device.type}; choose from "
                             f"{', '.join(known)}")
        two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2    # else 2 gloo ranks on the CPU
        sizes, separate = [dict(known[n]) for n in names], dict(SEPARATE["cuda" if two_gpus else "cpu"])
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    for s in sizes:
        s["threads"] = threads
    if args.repeats:
        for s in sizes + [separate]:
            s["repeats"] = args.repeats
    return sizes, separate


# ---------------------------------------------------------------------------------------------------------
# models and configs
# ---------------------------------------------------------------------------------------------------------
def build_policy(spec: dict, device: torch.device):
    """The size's flux-kontext policy with random weights (seed 0): a preset, or the medium config built here."""
    from editrl_engine.policy import flux_kontext
    from editrl_engine.policy.flux_kontext.config import TransformerConfig
    dtype = getattr(torch, spec["dtype"])
    if spec["policy"] != "medium":
        policy = flux_kontext.load(preset=spec["policy"], device=device, dtype=dtype)
    else:
        config = dataclasses.replace(flux_kontext.PRESETS["tiny"], transformer=TransformerConfig(**MEDIUM_TRANSFORMER))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            components = config.build(device, dtype)
        policy = flux_kontext.FluxKontextPolicy(components, device=device, dtype=dtype, guidance=config.guidance,
                                                origin="bench/e2e.py:medium")
    if spec.get("gradient_checkpointing"):
        policy.apply_run_options(gradient_checkpointing=True)
    return policy


def build_reward(spec: dict, device: torch.device):
    from editrl_engine.reward import load_reward
    dtype = getattr(torch, spec["dtype"])
    with built_on(device, dtype):
        return load_reward("mllm_logit", preset=spec["reward"], device=device, dtype=dtype)


def engine_config(spec: dict, out_dir: Path, steps: int, *, separate: bool = False, device: str = "auto"):
    """The Trainer's config for a size: its defaults, the size's numbers, no logging output, no filtering."""
    overrides = [
        f"run.steps={steps}", f"run.out_dir={out_dir.as_posix()}", f"run.device={device}", f"run.dtype={spec['dtype']}",
        f"policy.preset={spec['policy'] if spec['policy'] != 'medium' else 'tiny'}",
        "reward.kind=mllm_logit", f"reward.preset={spec['reward']}", f"reward.dtype={spec['dtype']}",
        f"data.image_size={spec['image_size']}", f"sampling.group_size={spec['group_size']}",
        f"sampling.groups_per_step={spec['groups_per_step']}", f"sampling.num_steps={spec['num_steps']}",
        f"optim.micro_batch={spec.get('micro_batch', 0)}",
        "log.progress=false", "log.tensorboard=false", "log.image_every=0", "checkpoint.every=0", *NOT_FILTERED]
    if spec.get("gradient_checkpointing"):
        overrides.append("policy.gradient_checkpointing=true")
    overrides.append(f"run.threads={spec.get('threads', 0)}")
    if separate:
        overrides += ["pipeline.placement=separate", "pipeline.reward_ranks=1"]
    return load_config(None, overrides)


# ---------------------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------------------
def engine_steps(history: list[dict], warmup: int) -> list[dict]:
    """The steady-state steps of a trainer's history: without the warm-up steps and the last (draining) step."""
    return history[warmup:-1] if len(history) > warmup + 1 else history[-1:]


def run_engine(spec: dict, policy, reward, tasks: TaskSet, device: torch.device, out_dir: Path
               ) -> tuple[dict, Trainer]:
    steps = spec["warmup"] + spec["repeats"] + 1
    config = engine_config(spec, out_dir, steps)
    trainer = Trainer(config, policy=policy, reward=reward, tasks=tasks)
    trainer.train()
    synchronize(device)
    timed = engine_steps(trainer.history, spec["warmup"])
    median = sorted(timed, key=lambda h: h["time_step"])[len(timed) // 2]
    images = config.sampling.group_size * config.sampling.groups_per_step
    split = {"rollout_s": median["time_rollout"], "score_s": median["time_score"],
             "update_s": median["time_update"], "idle_s": median["time_idle"]}
    split["other_s"] = median["time_step"] - split["rollout_s"] - split["idle_s"] - split["update_s"]
    return {"step_s": median["time_step"], "step_s_all": [h["time_step"] for h in timed], "images_per_step": images,
            "images_timed": images * len(timed), "steps_timed": len(timed),
            "images_per_s": images / median["time_step"],
            "split": split, "split_note": "score_s runs on the worker thread, overlapped; other = step - rollout - "
                                          "idle - update", "ops_backend": config.run.ops_backend or "default",
            "staleness": config.staleness, "optimizer_steps": sum(h["optimizer_steps"] for h in trainer.history),
            "score_hidden_frac": statistics.median(h["score_hidden_frac"] for h in timed)}, trainer


# ---------------------------------------------------------------------------------------------------------
# the plain sequential loop
# ---------------------------------------------------------------------------------------------------------
def cat_conditions(conds: list[Condition]) -> Condition:
    """Stack the rows of conditions of one family and size (shared tensors taken from the first)."""
    first = conds[0]
    tensors = {k: t if k in first.shared else torch.cat([c.tensors[k] for c in conds])
               for k, t in first.tensors.items()}
    return dataclasses.replace(first, tensors=tensors)


class SequentialLoop:
    """DiffusionNFT done plainly: per-group rollouts, per-sample reward calls, torch reference losses, no overlap.
    `policy` already carries the "default" LoRA and the "old" adapter (the engine's run added them)."""

    def __init__(self, config, policy, reward, tasks: TaskSet, device: torch.device):
        self.config, self.policy, self.reward, self.tasks, self.device = config, policy, reward, tasks, device
        self.params = policy.lora_parameters()
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.ema = [p.detach().clone() for p in self.params]
        self.sampler = GroupSampler(tasks.rows, group_size=config.sampling.group_size,
                                    groups_per_step=config.sampling.groups_per_step, seed=config.run.seed + 1,
                                    keys=tasks.keys)
        self.adv_config = AdvantageConfig(filter_std=None, filter_mean=None, ban_std=None, ban_mean=None)
        self.nft = config.algo.nft
        self.sample_adapter = self.nft.sample_adapter                          # the engine's: rollouts by "old"
        self.step = 0

    def rollout(self, plan):
        s = self.config.sampling
        x0s, conds, images, triples = [], [], [], []
        for g, (key, row) in enumerate(zip(plan.keys, plan.rows)):
            source = self.tasks.image(key, row)
            cond = self.policy.encode([source], [row.instruction])
            seeds = [1_000_003 * self.step + g * s.group_size + i for i in range(s.group_size)]
            with self.policy.use_adapter(self.sample_adapter):
                out = nft_rollout(self.policy, cond, group_size=s.group_size, num_steps=s.num_steps, seed=seeds)
            decoded = self.policy.decode(out.x0, out.cond).cpu()                        # uint8 [G, 3, H, W]
            x0s.append(out.x0)
            conds.append(out.cond)
            images.append(decoded)
            triples += [(source, row.instruction, image) for image in decoded]
        return torch.cat(x0s), cat_conditions(conds), triples

    def score(self, triples) -> torch.Tensor:
        return torch.cat([self.reward.score([src], [instruction], [image]).reward.float().cpu()
                          for src, instruction, image in triples])                    # [N]

    def update(self, plan, x0: torch.Tensor, cond: Condition, rewards: torch.Tensor) -> None:
        cfg, policy, nft = self.config, self.policy, self.nft
        group_index = torch.tensor(plan.group_index, device=self.device)
        adv = step_advantages(rewards.to(self.device), group_index, plan.keys, self.adv_config, backend="torch")
        r = nft_algo.optimality(adv.advantages, nft, backend="torch")                  # [N]
        sigmas = policy.sigmas(cfg.sampling.num_steps, cond)[:-1].to(self.device)    # [T]
        generator = torch.Generator(device=self.device).manual_seed(self.step)
        t_all = nft_algo.train_timesteps(sigmas, x0.shape[0], nft.timestep_fraction, generator=generator)  # [N, K]
        K = t_all.shape[1]
        n_valid = float(adv.valid.sum().item())
        policy.transformer.train()
        self.optimizer.zero_grad(set_to_none=True)
        n = x0.shape[0]
        size = cfg.optim.micro_batch or n                                             # the engine's micro-batches
        for k in range(K):
            x_t_all, _ = nft_algo.noisy_latents(x0, t_all[:, k], generator=generator)
            for lo in range(0, n, size):
                mb = torch.arange(lo, min(lo + size, n), device=self.device)
                x_t, t, valid = x_t_all[mb], t_all[mb, k], adv.valid[mb]
                part = cond.select(mb)
                with torch.no_grad():
                    with policy.use_adapter("old"):
                        v_old = policy.velocity(x_t, t, part)
                    v_ref = None
                    if nft.kl_beta:
                        with policy.use_adapter(None):
                            v_ref = policy.velocity(x_t, t, part)
                v = policy.velocity(x_t, t, part)
                out = nft_algo.loss(v, v_old, x_t, x0[mb], t, r[mb], nft, v_ref=v_ref, valid=valid, backend="torch")
                (out.loss * (float(valid.sum().item()) / max(n_valid, 1.0) / K)).backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        self.optimizer.step()
        policy.transformer.eval()
        policy.update_old_adapter(nft_decay(self.step + 1, nft.decay_schedule))
        o = cfg.optim
        if o.ema_every and (self.step + 1) % o.ema_every == 0:
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.mul_(o.ema_decay).add_(p.detach(), alpha=1 - o.ema_decay)

    def train_step(self) -> dict:
        plan = self.sampler.next_plan()
        start = time.perf_counter()
        x0, cond, triples = self.rollout(plan)
        synchronize(self.device)
        rolled = time.perf_counter()
        rewards = self.score(triples)
        scored = time.perf_counter()
        self.update(plan, x0, cond, rewards)
        synchronize(self.device)
        end = time.perf_counter()
        self.step += 1
        return {"step_s": end - start, "rollout_s": rolled - start, "score_s": scored - rolled,
                "update_s": end - scored, "images": len(triples)}


def run_sequential(spec: dict, config, policy, reward, tasks: TaskSet, device: torch.device) -> dict:
    loop = SequentialLoop(config, policy, reward, tasks, device)
    for _ in range(spec["warmup"]):
        loop.train_step()
    timed = [loop.train_step() for _ in range(spec["repeats"])]
    median = sorted(timed, key=lambda s: s["step_s"])[len(timed) // 2]
    images = median["images"]
    return {"step_s": median["step_s"], "step_s_all": [s["step_s"] for s in timed], "images_per_step": images,
            "images_timed": sum(s["images"] for s in timed), "steps_timed": len(timed),
            "images_per_s": images / median["step_s"],
            "split": {"rollout_s": median["rollout_s"], "score_s": median["score_s"], "update_s": median["update_s"],
                      "idle_s": 0.0, "other_s": 0.0},
            "split_note": "host clock around each part, one after the other", "ops_backend": "torch",
            "staleness": 0}


def measure_size(spec: dict, device: torch.device, log) -> dict:
    """Engine then sequential loop on one set of models (the loop reuses the engine's LoRA-carrying policy)."""
    row = {"size": spec["name"], "settings": dict(spec), "error": None}
    try:
        log(f"{spec['name']}: building the policy ({spec['policy']}) and reward ({spec['reward']}) on {device}")
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])             # the engine sets run.threads too; the loop shares it
        row["torch_threads"] = torch.get_num_threads()
        policy, reward = build_policy(spec, device), build_reward(spec, device)
        row["policy_parameters"] = sum(p.numel() for p in policy.transformer.parameters())
        row["reward_parameters"] = sum(p.numel() for p in reward.vlm.model.parameters())
        with tempfile.TemporaryDirectory(prefix="editrl-e2e-") as folder:
            config = engine_config(spec, Path(folder) / "run", spec["warmup"] + spec["repeats"] + 1,
                                   device=str(device))
            tasks = TaskSet.from_config(config.data)
            log(f"{spec['name']}: engine, {spec['warmup']} warm-up + {spec['repeats']} timed steps (+1 draining)")
            row["engine"], trainer = run_engine(spec, policy, reward, tasks, device, Path(folder) / "run")
            row["policy_parameters_lora"] = sum(p.numel() for p in trainer.params)
            log(f"{spec['name']}: sequential loop, {spec['warmup']} warm-up + {spec['repeats']} timed steps")
            row["sequential"] = run_sequential(spec, config, trainer.policy, reward, tasks, device)
        row["speedup"] = row["engine"]["images_per_s"] / row["sequential"]["images_per_s"]
        row["same_images"] = row["engine"]["images_timed"] == row["sequential"]["images_timed"]
        # the most any overlap of rollout and scoring can give while the update's work stays what it is
        row["speedup_bound_by_update"] = row["sequential"]["step_s"] / row["engine"]["split"]["update_s"]
        log(f"{spec['name']}: engine {row['engine']['images_per_s']:.3g} img/s, sequential "
            f"{row['sequential']['images_per_s']:.3g} img/s, {row['speedup']:.2f}x")
    except Exception as exc:  # a size that cannot run here (memory, a missing build) is a row with the reason
        row["error"] = error_text(exc)
    return row


# ---------------------------------------------------------------------------------------------------------
# separate reward ranks
# ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def separate_worker(rank: int, spec: dict, port: int, folder: str, device: str) -> None:
    """One of the two processes: rank 0 trains the policy, rank 1 scores (pipeline.placement = separate)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    steps = spec["warmup"] + spec["repeats"] + 1
    config = engine_config(spec, Path(folder) / "run", steps, separate=True, device=device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    where = torch.device(f"cuda:{rank}") if device == "cuda" else torch.device("cpu")
    tasks = TaskSet.from_config(config.data)
    policy = build_policy(spec, where) if rank == 0 else None
    reward = build_reward(spec, where) if rank == 1 else None
    trainer = Trainer(config, policy=policy, reward=reward, tasks=tasks)
    start = time.perf_counter()
    summary = trainer.train()
    seconds = time.perf_counter() - start
    trainer.placement.close()
    result = {"rank": rank, "summary": summary, "seconds": seconds, "history": trainer.history,
              "threads": torch.get_num_threads()}
    Path(folder, f"rank-{rank}.json").write_text(json.dumps(result, default=float))


def measure_separate(spec: dict, device: torch.device, log) -> dict:
    """2 processes (1 policy rank, 1 reward rank) over gloo; the hidden share of scoring from their metrics."""
    import torch.multiprocessing as mp
    on_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2
    where = "cuda" if on_gpus else "cpu"
    out = {"size": spec["name"], "settings": dict(spec), "device": where, "world_size": 2, "policy_ranks": 1,
           "reward_ranks": 1, "backend": "gloo" if where == "cpu" else "nccl (policy) + gloo (reward pairs)",
           "error": None}
    try:
        with tempfile.TemporaryDirectory(prefix="editrl-e2e-separate-") as folder:
            log(f"{spec['name']}: 2 ranks on {where} (rank 0 policy, rank 1 reward), {spec['warmup']} warm-up + "
                f"{spec['repeats']} timed steps (+1 draining)")
            mp.spawn(separate_worker, args=(spec, free_port(), folder, where), nprocs=2, join=True)
            policy = json.loads(Path(folder, "rank-0.json").read_text())
            reward = json.loads(Path(folder, "rank-1.json").read_text())
    except Exception as exc:
        out["error"] = error_text(exc)
        return out
    history = policy["history"]
    timed = engine_steps(history, spec["warmup"])
    idle, scoring = sum(h["time_idle"] for h in timed), sum(h["time_score"] for h in timed)
    steps = [h["time_step"] for h in timed]
    stats = reward["summary"]
    idle_all = sum(h["time_idle"] for h in history)
    images = spec["group_size"] * spec["groups_per_step"]
    out.update({
        "threads_per_rank": policy["threads"], "steps_timed": len(timed),
        "step_s": statistics.median(steps), "images_per_s": images / statistics.median(steps),
        "time_idle_s": idle, "time_score_s": scoring,
        "time_rollout_s": sum(h["time_rollout"] for h in timed), "time_update_s": sum(h["time_update"] for h in timed),
        "score_share_of_step": scoring / sum(steps),
        "hidden_frac": 1 - idle / scoring if scoring > 0 else math.nan,
        "hidden_frac_per_step": [h["score_hidden_frac"] for h in timed],
        "reward_rank": {k: stats[k] for k in ("jobs", "images", "seconds_scoring")},
        "policy_images": len(history) * images,
        "hidden_frac_whole_run": 1 - idle_all / stats["seconds_scoring"] if stats["seconds_scoring"] > 0 else math.nan,
    })
    return out


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
def finite_tree(value):
    """NaN / inf -> None everywhere in a JSON-bound structure."""
    if isinstance(value, dict):
        return {k: finite_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_tree(v) for v in value]
    if isinstance(value, float):
        return finite_or_none(value)
    return value


def evaluate_targets(rows: list[dict], separate: dict | None, device: torch.device, quick: bool) -> list[dict]:
    targets = []
    note_quick = "not evaluated: --quick smoke run" if quick else None
    for row in rows:
        value = row.get("speedup")
        targets.append({"target": f"{row['size']}: engine images/s / sequential loop images/s",
                        "measured": finite_or_none(value), "required": f">= {SPEEDUP_TARGET:g}x",
                        "passed": None if note_quick or value is None else bool(value >= SPEEDUP_TARGET),
                        "note": note_quick or (row["error"] and f"not measured: {row['error']}")})
    if separate is not None:
        value = separate.get("hidden_frac")
        targets.append({"target": f"{separate['size']}: share of scoring time hidden by pipelining (separate reward "
                                  "rank, steady-state steps)",
                        "measured": finite_or_none(value), "required": f">= {HIDDEN_TARGET:g}",
                        "passed": None if note_quick or value is None else bool(value >= HIDDEN_TARGET),
                        "note": note_quick or (separate["error"] and f"not measured: {separate['error']}")})
    return targets


def fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def rows_table(rows: list[dict]) -> str:
    headers = ["size", "loop", "img/step", "step s", "img/s", "rollout s", "score s", "update s", "idle s",
               "speedup", "error"]
    body = []
    for row in rows:
        for loop in ("sequential", "engine"):
            r = row.get(loop)
            if r is None:
                body.append([row["size"], loop] + ["-"] * 8 + [(row["error"] or "")[:60]])
                continue
            s = r["split"]
            body.append([row["size"], loop, str(r["images_per_step"]), fmt(r["step_s"]), fmt(r["images_per_s"]),
                         fmt(s["rollout_s"]), fmt(s["score_s"]), fmt(s["update_s"]), fmt(s["idle_s"]),
                         f"{row['speedup']:.2f}x" if loop == "engine" else "-", ""])
    return format_table(headers, body)


def separate_table(s: dict) -> str:
    headers = ["size", "threads/rank", "step s", "img/s", "score share", "idle s", "score s", "hidden", "whole run",
               "error"]
    if s["error"]:
        return format_table(headers, [[s["size"]] + ["-"] * 8 + [s["error"][:60]]])
    return format_table(headers, [[s["size"], str(s["threads_per_rank"]), fmt(s["step_s"]), fmt(s["images_per_s"]),
                                   fmt(s["score_share_of_step"]), fmt(s["time_idle_s"]), fmt(s["time_score_s"]),
                                   fmt(s["hidden_frac"]), fmt(s["hidden_frac_whole_run"]), ""]])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    sizes, separate_spec = settings(args, device)
    log = lambda text: print(text, file=sys.stderr, flush=True)
    busy = cpu_busy_fraction() if device.type == "cpu" else None
    torch.manual_seed(0)

    rows = [measure_size(spec, device, log) for spec in sizes]
    separate = None if args.skip_separate else measure_separate(separate_spec, device, log)

    notes = ["filtering off in both loops (algo.advantage.filter_std = filter_mean = ban_std = -1): random-weight "
             "rewards have a near-zero std per group, the default filter would mark every sample invalid and the "
             "engine would skip the update, which is not the step being measured"]
    threads = {r.get("torch_threads") for r in rows if r.get("torch_threads")}
    if device.type == "cpu" and threads == {1}:
        notes.append("1 torch intra-op thread (run.threads = 1) in both loops: with torch's default (one per core) "
                     "the engine's scorer thread and other processes' load oversubscribe the cores, and the same "
                     "rollout took anywhere from 0.25 s to 13 s; with 1 thread the engine's training thread and "
                     "scorer thread each have a core")
    for row in rows:
        if row.get("engine") and row["error"] is None:
            update_share = row["engine"]["split"]["update_s"] / row["engine"]["step_s"]
            notes.append(f"{row['size']}: the update (identical work in both loops: K timesteps x old, reference "
                         f"and current forwards + backward) is {100 * update_share:.0f} % of the engine's step; the "
                         "engine's batching, group scoring and overlap act only on the rest, so hiding all of it "
                         f"would give at most {row['speedup_bound_by_update']:.2f}x (sequential step / engine update)")
    if device.type == "cpu":
        notes.append("CPU run with tiny / medium models: the GPU sizes (FLUX-Kontext-sized policy, 7B-sized reward) "
                     "are not measured here; CPU numbers say little about them")
    if busy is not None:
        notes.append(busy_note(busy))
    if args.quick:
        notes.append("--quick: a smoke run (tiny model, 1 timed step per loop); its numbers are not a benchmark")
    device_info = describe_device(device)
    out = results_file(args.out, "e2e", device_info["slug"])
    report = finite_tree({
        "benchmark": "e2e", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info, "versions": versions(), "cpu_busy_fraction": busy,
        "config": {"quick": args.quick, "sizes": [s["name"] for s in sizes], "algorithm": "nft",
                   "medium_transformer": MEDIUM_TRANSFORMER, "cpp_extension": backends.cpp_module() is not None},
        "method": {"engine": "Trainer.train() with staleness 1; per-step time_step from trainer.history; warm-up and "
                             "last (draining) step dropped",
                   "sequential": "host clock around rollout / score / update of each step; warm-up dropped",
                   "statistic": "median step; images/s = images per step / median step time",
                   "separate": "1 - sum(time_idle) / sum(time_score) over the policy rank's steady-state steps"},
        "rows": rows, "separate": separate,
        "targets": evaluate_targets(rows, separate, device, args.quick), "notes": notes,
    })
    write_json_atomic(out, report)

    print(f"end-to-end DiffusionNFT steps on {device_info['name']} ({torch.get_num_threads()} torch threads)")
    print(rows_table(report["rows"]))
    if separate is not None:
        print("\nseparate reward rank (2 processes):")
        print(separate_table(report["separate"]))
    print("\n".join(f"note: {note}" for note in notes))
    print_targets(report["targets"], fmt)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
