"""The pipelined rollout -> score -> update loop (DiffusionNFT by default, Flow-GRPO by config).

    trainer = Trainer(load_config("demo"))        # checks the config; starts nothing
    summary = trainer.train(resume=False)         # joins the process group, builds the models, runs

One step on a policy rank (train_step): draw the step's groups (GroupSampler), roll out this rank's samples in
chunks and hand each chunk to the scorer, take the rewards of the step being trained, all-gather them, group
advantages with low-variance filtering and prompt banning, the loss's gradients, an all-reduce, clipping, AdamW,
the algorithm's after-step work (NFT: the old adapter's soft update) and the EMA. The algorithm is an object
(engine/algorithms) the trainer calls through one interface. With staleness 1 (NFT's default) the rollouts of
step k + 1 are made and scored while step k waits for its rewards and trains, so scoring hides behind sampling;
with staleness 0 (GRPO's default, its ratios need on-policy samples) only the chunks of one step overlap.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
import warnings
from pathlib import Path

import torch

from ..algo.sampler import GroupSampler
from ..errors import InputError, MissingPathError
from ..policy import load_policy
from ..policy.lora import adapter_state_dict, save_adapter
from . import checkpoint as ckpt
from .batch import Batch, Rollout, rollout_from_record, rollout_record
from .config import RewardConfig, TrainConfig, dump_toml
from .distributed import (
    Placement,
    all_gather_rows,
    all_reduce_gradients,
    all_reduce_sum,
    broadcast_parameters,
    init_placement,
)
from .rollouts import rollout_step
from .scoring import LocalScorer, RemoteScorer, RewardLedger, serve_rewards
from .sharding import full, load_into
from .tasks import TaskSet, require_sources_taken
from .timing import StepClock
from .weights import load_full_weights

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_reward(config: TrainConfig, device: torch.device):
    """The training reward [reward] describes."""
    return reward_from_section(config.reward, device)


def reward_from_section(r: RewardConfig, device: torch.device):
    """A reward from a [reward]-shaped section ([reward], or the watch's [eval.gold])."""
    from ..reward import load_reward
    kind = dict(r.weights) if r.weights else r.kind
    options = {}
    if r.kind == "editscore" and not r.weights:
        if r.lora:
            options["lora"] = r.lora
        if r.avg_k > 1:
            options.update(passes=r.avg_k, greedy=False)
        options.update(templates=r.templates, pq_images=r.pq_images, reduction=r.reduction)
    if r.kind == "mllm_logit" and not r.weights:
        options.update(layout=r.layout, jpeg_quality=r.jpeg_quality)
    if r.remote:                                  # a served judge (reward/remote/): no weights, device or dtype here
        return load_reward(kind, endpoint=list(r.endpoint), model=r.model or None, api_key_env=r.api_key_env or None,
                           **({} if r.send_top_k else {"send_top_k": False}), **options)
    return load_reward(kind, path=r.path or None, preset=r.preset or None, device=r.device or device,
                       dtype=DTYPES[r.dtype], backend=r.backend, **options)


def resolve_package_path(path: str) -> str:
    """'package:engine/demo/x.safetensors' -> that file inside the installed package; other paths unchanged."""
    if path.startswith("package:"):
        import importlib.resources
        return str(importlib.resources.files("editrl_engine") / path.removeprefix("package:"))
    return path


def build_policy(config: TrainConfig, device: torch.device):
    p = config.policy
    policy = load_policy(p.family, path=p.path or None, preset=p.preset or None, device=device,
                         dtype=DTYPES[config.run.dtype], attention=p.attention, autocast=config.run.autocast)
    if p.init:
        load_full_weights(policy, resolve_package_path(p.init))
    policy.apply_run_options(gradient_checkpointing=p.gradient_checkpointing, compile=p.compile)
    return policy


@dataclasses.dataclass
class Pending:
    """A step rolled out on this rank whose rewards may still be coming: the futures live beside the rollout."""
    rollout: Rollout
    futures: list = dataclasses.field(default_factory=list)   # one scoring future per chunk, in order
    scored: list | None = None                # ScoredJob per chunk once collected

    def collect(self) -> float:
        """Wait for every chunk's rewards; returns the seconds spent waiting."""
        start = time.perf_counter()
        if self.scored is None:
            self.scored = [f.result() for f in self.futures]
            self.futures = []
        return time.perf_counter() - start


class StopRequested(Exception):
    pass


class Trainer:
    def __init__(self, config: TrainConfig, *, placement: Placement | None = None, policy=None, reward=None,
                 tasks: TaskSet | None = None, eval_tasks: TaskSet | None = None, logger=None, gold=None):
        """Checks the config and builds what needs no model and no process group; train() starts the rest."""
        if config.eval.every > 0:
            from .watch import check_eval_config
            check_eval_config(config, tasks_given=eval_tasks is not None)      # before any model is built
        self.config = config
        self.backend = config.run.ops_backend or None
        self.algorithm = config.algo.build(config, self.backend)
        self.staleness = config.staleness
        self.out_dir = config.out_dir
        self.tasks = tasks or TaskSet.from_config(config.data)
        self.eval_tasks = eval_tasks
        self._placement = placement
        self._policy, self._reward, self._logger, self._gold = policy, reward, logger, gold
        self.watch = None                                    # GoldWatch when eval.every > 0 (built in train())
        self.stop_reason: str | None = None                  # "divergence": the watch asked the run to stop
        self.stop_signal: int | None = None
        self.ledger = RewardLedger()
        self.clock = StepClock()
        self.step = 0
        self.history: list[dict] = []
        self.ready = False

    # ---- set-up ----------------------------------------------------------------------------------------------
    @property
    def placement(self) -> Placement:
        """This process's place in the run; the first use joins the torchrun process group."""
        if self._placement is None:
            self._placement = init_placement(self.config)
            if self.config.run.threads:
                torch.set_num_threads(self.config.run.threads)
        return self._placement

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def setup(self) -> None:
        """Build the policy with its LoRA, the algorithm's adapters, optimizer, schedule, EMA and group sampler
        (policy ranks; once)."""
        cfg, place = self.config, self.placement
        if self.ready or not place.is_policy:
            return
        self.policy = self._policy or build_policy(cfg, self.device)
        require_sources_taken(self.tasks, self.policy, "policy")
        with torch.random.fork_rng(devices=[]):              # LoRA A-matrices drawn from the run's seed
            torch.manual_seed(cfg.run.seed)
            init = {"init": cfg.policy.lora_init} if cfg.policy.lora_init != "default" else {}
            self.policy.add_lora(cfg.policy.lora_rank, cfg.policy.lora_alpha, list(cfg.policy.lora_targets) or None,
                                 **init)
        self.algorithm.attach(self.policy)
        self.params = self.policy.lora_parameters()
        broadcast_parameters(self.params, place)
        self.algorithm.start(self.policy)
        self.fsdp = cfg.pipeline.fsdp and place.policy_world > 1
        if self.fsdp:
            from .sharding import shard_transformer
            shard_transformer(self.policy.transformer, place)
            self.params = self.policy.lora_parameters()              # FSDP2 replaced them with sharded ones
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        warm = max(o.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.ema = [p.detach().clone() for p in self.params] if o.ema_every else None
        self.sampler = GroupSampler(self.tasks.rows, group_size=cfg.sampling.group_size,
                                    groups_per_step=cfg.sampling.groups_per_step, seed=cfg.run.seed,
                                    world_size=place.policy_world, keys=self.tasks.keys)
        self.ready = True

    def _make_scorer(self):
        if self.placement.reward_ranks:
            return RemoteScorer(self.placement)
        self.reward = self._reward or build_reward(self.config, self.device)
        require_sources_taken(self.tasks, self.reward, "reward")
        return LocalScorer(self.reward)

    def _open_logger(self):
        """The run's logger, opened at the current step (a resumed run drops the later lines of the old one)."""
        if self._logger is None:
            from .metrics import RunLogger
            self._logger = RunLogger(self.out_dir, total_steps=self.config.run.steps, start_step=self.step,
                                     tensorboard=self.config.log.tensorboard, progress=self.config.log.progress,
                                     enabled=self.placement.is_main)
        return self._logger

    @property
    def logger(self):
        return self._open_logger()

    # ---- the loop ----------------------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict:
        """Run until run.steps; returns a summary (last metrics, checkpoint path, reward-rank stats)."""
        if not self.placement.is_policy:                     # a reward rank: serve until the policy ranks stop
            reward = self._reward or build_reward(self.config, self.device)
            require_sources_taken(self.tasks, reward, "reward")
            stats = serve_rewards(reward, self.placement)
            self.placement.barrier()
            return {"role": "reward", **stats}
        self.setup()
        if self.config.eval.every > 0:                       # the gold-judge watch; nothing of it exists otherwise
            from .watch import GoldWatch
            self.watch = GoldWatch(self.config, self.placement, tasks=self.eval_tasks, gold=self._gold)
        pending = self.load_latest() if resume else None
        if self.placement.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_text_atomic(self.out_dir / "config.toml", dump_toml(self.config))
        scorer = self._make_scorer()
        self._open_logger()
        if self.watch is not None:
            self.logger.log_text(self.watch.describe())
        total = self.config.run.steps
        self.clock = StepClock()
        last_checkpoint = None
        with self._signals():
            try:
                if pending is None and self.step < total:
                    pending = self._start_rollouts(scorer)
                while self.step < total:
                    watched = self._watch_step(scorer) if self.watch is not None else None
                    pending = self.train_step(pending, scorer, watched)
                    if self._should_stop():
                        last_checkpoint = self.save_checkpoint(pending)
                        raise StopRequested
                    every = self.config.checkpoint.every
                    if (every and self.step % every == 0) or self.step == total:
                        last_checkpoint = self.save_checkpoint(pending)
            except StopRequested:
                self._log_stop(last_checkpoint)
            finally:
                scorer.close()
                self.logger.close()
        self.placement.barrier()
        return {"role": "policy", "step": self.step, "checkpoint": str(last_checkpoint) if last_checkpoint else None,
                "last": self.history[-1] if self.history else {}, "stopped_by_signal": self.stop_signal,
                "stopped_on_divergence": self.stop_reason == "divergence"}

    def train_step(self, pending: Pending, scorer, watched: dict | None = None) -> Pending | None:
        """One training step on `pending` (this step's rollouts); returns the next step's, already started."""
        more = self.step + 1 < self.config.run.steps
        upcoming = self._start_rollouts(scorer) if self.staleness == 1 and more else None
        waited = pending.collect()
        started = time.perf_counter()
        rewards, failures = self._gather_rewards(pending)
        batch, metrics = self._advantages(pending.rollout, rewards)
        metrics.update(self._update(batch, failures))
        self._after_update()
        update_seconds = time.perf_counter() - started
        if self.staleness == 0 and more:
            upcoming = self._start_rollouts(scorer)
        scored_seconds = sum(s.seconds for s in pending.scored)
        metrics.update(self.clock.step_metrics(waited=waited, update=update_seconds, score=scored_seconds,
                                               images=pending.rollout.plan.num_samples))
        metrics.update(staleness=self.staleness, lr=self.scheduler.get_last_lr()[0], **(watched or {}))
        self._record(metrics, pending)
        return upcoming

    # ---- the step's parts ----------------------------------------------------------------------------------------
    def _start_rollouts(self, scorer) -> Pending:
        """Roll out the next plan's local samples; each chunk goes to the scorer as soon as it is decoded."""
        rollout, futures = rollout_step(self.policy, self.algorithm, self.sampler.next_plan(),
                                        self.placement.policy_rank, self.tasks, self.config.sampling.rollout_batch,
                                        scorer.submit)
        self.clock.add_rollout(rollout.seconds)
        return Pending(rollout, futures)

    def _gather_rewards(self, pending: Pending) -> tuple[torch.Tensor, float]:
        """The step's rewards of every policy rank [N] (each consumed once, on the ledger), and this rank's
        parse failures."""
        for s in pending.scored:
            self.ledger.consume(s.sample_ids)
        local = torch.cat([s.rewards for s in pending.scored])                             # [n]
        return all_gather_rows(local.to(self.device), self.placement), float(sum(s.failures for s in pending.scored))

    def _advantages(self, rollout: Rollout, rewards: torch.Tensor) -> tuple[Batch, dict[str, float]]:
        """Group advantages of the global rewards [N]; bans solved groups; this rank's rows as a Batch."""
        plan = rollout.plan
        group_index = torch.tensor(plan.group_index, device=self.device)                   # [N]
        adv = self.algorithm.advantages(rewards, group_index, plan.keys)
        self.sampler.ban(adv.ban)
        local = plan.rank_slice(self.placement.policy_rank)
        valid = adv.valid[local]                                                          # [n]
        batch = Batch(rollout, adv.advantages[local], valid, valid.tolist(), list(range(valid.shape[0])))
        return batch, dict(adv.stats)

    def _update(self, batch: Batch, failures: float) -> dict[str, float]:
        """optim.updates_per_step optimizer steps, each on a part of the batch: gradients, all-reduce, clip, AdamW.
        A part with no valid row on any rank takes no step, or with optim.step_when_filtered an AdamW step on zero
        gradients (counted in filtered_steps, not optimizer_steps)."""
        place, o = self.placement, self.config.optim
        parts = batch.split(max(1, o.updates_per_step))
        counts = torch.tensor([float(p.local_valid) for p in parts] + [failures])
        counts = all_reduce_sum(counts.to(self.device), place).cpu().tolist()            # [parts + 1]
        totals: dict[str, torch.Tensor] = {}
        grad_norms, filtered_steps = [], 0
        self.policy.transformer.train()
        for part, global_valid in zip(parts, counts[:-1]):
            self.optimizer.zero_grad(set_to_none=True)
            if global_valid == 0:
                if o.step_when_filtered:                    # zero gradients, not None: AdamW skips None grads
                    for p in self.params:
                        p.grad = torch.zeros_like(p)
                    self.optimizer.step()
                    filtered_steps += 1
                continue
            part.global_valid = global_valid
            stats = self.algorithm.backward(self.policy, part, grad_scale=place.policy_world if self.fsdp else 1.0)
            if not self.fsdp:                               # FSDP2 reduce-scatters in backward
                all_reduce_gradients(self.params, place)
            clip = o.grad_clip if o.grad_clip > 0 else float("inf")
            grad_norms.append(full(torch.nn.utils.clip_grad_norm_(self.params, clip)))
            self.optimizer.step()
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + value
        self.policy.transformer.eval()
        metrics = {"parse_failures": counts[-1], "optimizer_steps": len(grad_norms), "filtered_steps": filtered_steps,
                   "grad_norm": torch.stack(grad_norms).max().item() if grad_norms else 0.0}
        if totals:                                          # one transfer for the loss statistics
            names = list(totals)
            values = torch.stack([torch.as_tensor(totals[k], device=self.device).float() for k in names])
            metrics.update(zip(names, all_reduce_sum(values, place).cpu().tolist()))
        return metrics

    def _after_update(self) -> None:
        """The schedule (it advances per training step, stepped or not), the algorithm's after-step work, the EMA."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.algorithm.after_step(self.policy, self.step)
        o = self.config.optim
        if self.ema is not None and (self.step + 1) % o.ema_every == 0:
            decay = o.ema_decay_at(self.step + 1)                 # optim.ema_schedule; steps done, this one included
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def _record(self, metrics: dict, pending: Pending) -> None:
        self.history.append({"step": self.step, **metrics})       # steps count from 0
        self.logger.log_step(self.step, metrics)
        self._maybe_log_images(pending)
        self.step += 1

    def _watch_step(self, scorer) -> dict | None:
        """The gold-judge evaluation due before this step's update (None when none is due): its metrics, the alarm's
        warning, and the request to stop when eval.stop_on_divergence."""
        watch = self.watch
        if not watch.due(self.step):
            return None
        swap = self._swap_ema() if self.config.eval.use_ema else contextlib.nullcontext()
        with swap:
            result = watch.evaluate(self.policy, scorer.submit)
        self.clock.exclude(result.metrics["eval/seconds"])         # not part of the step's time or images/s
        if result.alarm:
            self.logger.log_warning(watch.alarm_message(self.step, result))
            if self.config.eval.stop_on_divergence and self.stop_reason is None:
                self.stop_reason = "divergence"                    # this step finishes, then checkpoint and stop
        return result.metrics

    def _log_stop(self, checkpoint) -> None:
        if self.stop_signal is None and self.stop_reason == "divergence":
            self.logger.log_warning(f"stopped after step {self.step}: the gold judge diverged from the training "
                                    f"reward (eval.stop_on_divergence); checkpoint {checkpoint}; continue with "
                                    "--resume")
        else:
            self.logger.log_text(f"stopped by signal {self.stop_signal} after step {self.step}; checkpoint "
                                 f"{checkpoint}; continue with --resume")

    # ---- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, tasks: TaskSet, *, seed: int = 1234, use_ema: bool = False, num_steps: int | None = None,
                 reward=None) -> dict:
        """Held-out reward: deterministic Euler samples (one per task, fixed seeds) scored by the run's reward."""
        from .evaluation import evaluate_policy
        reward = reward or getattr(self, "reward", None) or build_reward(self.config, self.device)
        swap = self._swap_ema() if use_ema else contextlib.nullcontext()
        with swap:
            return evaluate_policy(self.policy, reward, tasks, num_steps=num_steps or self.config.sampling.eval_steps,
                                   seed=seed)

    @contextlib.contextmanager
    def _swap_ema(self):
        if self.ema is None:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    # ---- images --------------------------------------------------------------------------------------------------
    def _maybe_log_images(self, pending: Pending) -> None:
        every = self.config.log.image_every
        if not every or (self.step + 1) % every or not self.placement.is_main:
            return
        from .figures import candidate_grid
        rollout, G = pending.rollout, self.config.sampling.group_size
        n = len(rollout.indices) // G * G
        if n == 0:
            return
        rewards = torch.cat([s.rewards for s in pending.scored])[:n].view(-1, G)           # [P, G]
        sources = torch.stack(rollout.sources[:n:G])                                        # [P, 3, H, W]
        candidates = rollout.images[:n].view(-1, G, *rollout.images.shape[1:])             # [P, G, 3, H, W]
        self.logger.log_images(self.step, "candidates", candidate_grid(sources, candidates, rewards))

    # ---- checkpoints and signals ---------------------------------------------------------------------------------
    def save_checkpoint(self, pending: Pending | None) -> Path:
        """An atomic checkpoint folder: the LoRA adapters (diffusers-loadable), trainer.pt (shared state) and one
        rank-<r>.pt per policy rank (its RNG, its pending rollout with rewards, its ledger)."""
        place = self.placement
        if pending is not None:
            pending.collect()                              # its rewards are part of the saved state
        stage = ckpt.staging_dir(self.out_dir, self.step)
        if place.is_main:
            ckpt.begin(self.out_dir, self.step)
        place.policy_barrier()
        # gathered on every policy rank (collectives when sharded), written by the first
        adapters = {name: adapter_state_dict(self.policy.transformer, name)
                    for name in ("default", *self.algorithm.extra_adapters)}
        params = [full(p) for p in self.params]
        algorithm = self.algorithm.state_dict(self.policy)
        ema = [full(e) for e in self.ema] if self.ema is not None else None
        optimizer = self.optimizer.state_dict()
        if place.is_main:
            for name, state in adapters.items():
                folder = "lora" if name == "default" else f"lora_{name}"
                save_adapter(self.policy.transformer, self.policy.lora_pipeline_class, stage / folder,
                             adapter=name, state=state)
            ckpt.save_torch({
                "step": self.step, "params": params, "algorithm": algorithm,
                "optimizer": None if self.fsdp else optimizer, "scheduler": self.scheduler.state_dict(),
                "ema": ema, "sampler": self.sampler.state_dict(), "history": self.history, "fsdp": self.fsdp,
                "watch": self.watch.state_dict() if self.watch is not None else None,
            }, stage / "trainer.pt")
            ckpt.write_text_atomic(stage / "config.toml", dump_toml(self.config))
        local = None if pending is None else {"rollout": rollout_record(pending.rollout), "scored": pending.scored}
        ckpt.save_torch({"rng": ckpt.rng_state(), "pending": local, "ledger": self.ledger.state_dict(),
                         "optimizer": optimizer if self.fsdp else None},       # sharded optimizer state per rank
                        stage / f"rank-{place.policy_rank}.pt")
        place.policy_barrier()
        final = ckpt.step_dir(self.out_dir, self.step)
        if place.is_main:
            final = ckpt.commit(self.out_dir, self.step, self.config.checkpoint.keep)
        place.policy_barrier()
        return final

    def load_latest(self) -> Pending | None:
        """Restore the newest checkpoint of the run folder; returns the pending batch it carried (or None)."""
        path = ckpt.latest(self.out_dir)
        if path is None:
            raise MissingPathError(f"--resume: no checkpoint under {ckpt.checkpoint_root(self.out_dir)}; start "
                                    "without --resume")
        state = ckpt.load_torch(path / "trainer.pt")
        if state.get("fsdp", False) != self.fsdp:
            raise InputError(f"{path} was written with pipeline.fsdp={state.get('fsdp', False)}; resume with the "
                             "same setting and the same number of policy ranks")
        for p, saved in zip(self.params, state["params"], strict=True):
            load_into(p, saved)
        algorithm = state["algorithm"] if "algorithm" in state else {"old_params": state["old_params"]}   # older files
        self.algorithm.load_state_dict(self.policy, algorithm)
        if state["ema"] is not None and self.ema is not None:
            for e, saved in zip(self.ema, state["ema"], strict=True):
                load_into(e, saved)
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.history = state["step"], state["history"]
        if self.watch is not None:
            self.watch.load_state_dict(state.get("watch"))
        rank_file = path / f"rank-{self.placement.policy_rank}.pt"
        if not rank_file.is_file():
            raise MissingPathError(f"{rank_file} is missing: this checkpoint was written by fewer policy ranks; "
                                    "resume with the same number of ranks")
        local = ckpt.load_torch(rank_file)
        self.optimizer.load_state_dict(local["optimizer"] if self.fsdp else state["optimizer"])
        ckpt.set_rng_state(local["rng"])
        self.ledger.load_state_dict(local["ledger"])
        if local["pending"] is None:
            return None
        rollout = rollout_from_record(local["pending"]["rollout"]).to(self.device)
        return Pending(rollout, scored=local["pending"]["scored"])

    @contextlib.contextmanager
    def _signals(self):
        """SIGTERM and Ctrl-C finish the current step, write a checkpoint and stop; a second Ctrl-C aborts."""
        import threading
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _should_stop(self) -> bool:
        stop = self.stop_signal is not None or self.stop_reason is not None
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        return bool(all_reduce_sum(flag, self.placement).item() > 0)
