"""The gold-judge watch: is the training reward still measuring what it should?

A reward that goes up proves nothing by itself: a policy can learn what the judge likes rather than the edit
(reward hacking). With [eval] every = E > 0 the trainer, before the update of steps 0, E, 2E, ..., samples the
held-out tasks from fixed seeds (one Euler sample per task and seed, evaluation.sample_items), scores the SAME
images with the training reward (through the run's scorer, so a reward rank scores them where the run has one)
and with a gold judge ([eval.gold]: any reward [reward] can describe), and merges into that step's metrics row:

    eval/train_reward   mean held-out training reward           eval/train_nan, eval/gold_nan   NaN counts
    eval/gold_reward    mean held-out gold reward               eval/seconds                    time spent
    eval/gap            train - gold                            eval/streak                     diverging evals in a row
    eval/alarm          1 when the DivergenceAlarm fires, else 0
    eval/gold/<field>   the mean of every number / boolean field present in every gold detail dict (booleans are
                        rates; a combined judge's parts are flattened: eval/gold/programmatic/success)

Without a gold judge only eval/train_reward, eval/train_nan and eval/seconds are logged. The alarm's warning goes
to log.txt and stderr; with eval.stop_on_divergence the step finishes, a checkpoint is written and the run stops
(the SIGTERM path). With every = 0 nothing here is built or run.

Several policy ranks split the samples (padded to equal shares, so sharded models run the same forwards) and
gather the rewards; every rank computes the same metrics and the same alarm.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .config import EvalConfig, TrainConfig
from .distributed import Placement, all_gather_rows
from .evaluation import finite_mean, sample_items
from .scoring import ScoreJob, run_lengths, score_job
from .tasks import TaskSet

EVAL_SAMPLE_STEP = -1                     # ScoreJob.sample_ids of evaluation samples: (-1, i); never in the ledger


class DivergenceAlarm:
    """Fires when the gold reward falls while the training reward rises, for `evals` consecutive evaluations.

    Each evaluation is compared with the previous one: it "diverges" when gold < previous gold - tolerance and
    train > previous train + tolerance. update() returns True when the last `evals` evaluations all diverged (and
    keeps returning True while the divergence goes on); any other evaluation resets the count. An evaluation with
    a NaN reward resets the count and is no reference for the next one. The first evaluation never fires.
    """

    def __init__(self, evals: int = 2, tolerance: float = 0.01):
        if evals < 1:
            raise ValueError(f"evals must be >= 1, got {evals}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
        self.evals, self.tolerance = int(evals), float(tolerance)
        self.streak = 0
        self.previous: tuple[float, float] | None = None          # (train, gold) of the last evaluation

    def update(self, train: float, gold: float) -> bool:
        train, gold = float(train), float(gold)
        if not (math.isfinite(train) and math.isfinite(gold)):
            self.streak, self.previous = 0, None
            return False
        if self.previous is not None:
            prev_train, prev_gold = self.previous
            diverging = gold < prev_gold - self.tolerance and train > prev_train + self.tolerance
            self.streak = self.streak + 1 if diverging else 0
        self.previous = (train, gold)
        return self.streak >= self.evals

    def state_dict(self) -> dict:
        return {"streak": self.streak, "previous": list(self.previous) if self.previous is not None else None}

    def load_state_dict(self, state: Mapping) -> None:
        self.streak = int(state["streak"])
        self.previous = tuple(state["previous"]) if state["previous"] is not None else None


def detail_rates(details: Sequence[Mapping], prefix: str = "") -> dict[str, float]:
    """The mean of every number / boolean field that every detail dict has (nested dicts flattened with '/'):
    booleans become rates. NaN values are left out of a field's mean. Strings, lists and fields some sample lacks
    are skipped."""
    flat = [_flatten(d) for d in details]
    if not flat:
        return {}
    common = set(flat[0]).intersection(*flat[1:])
    rates = {}
    for key in sorted(common):
        values = [float(d[key]) for d in flat]
        finite = [v for v in values if math.isfinite(v)]
        rates[prefix + key] = sum(finite) / len(finite) if finite else math.nan
    return rates


def _flatten(detail: Mapping, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in detail.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif (number := _scalar(value)) is not None:
            out[f"{prefix}{key}"] = number
    return out


def _scalar(value) -> float | None:
    """A real number or boolean (python, NumPy, 0-d array or tensor) as a float; None for anything else."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0:
            return None
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    return float(value) if isinstance(value, (bool, int, float)) else None


@dataclasses.dataclass
class WatchResult:
    metrics: dict[str, float]
    alarm: bool
    train_rewards: torch.Tensor             # [n] float32, every held-out sample in order
    gold_rewards: torch.Tensor | None       # [n] or None without a gold judge
    images: torch.Tensor                    # uint8 [n_local, 3, H, W]: this rank's samples (padding included)


def held_out_tasks(config: TrainConfig) -> TaskSet:
    """The watch's held-out tasks: eval.manifest's rows, else [data]'s held-out synthetic tasks; the first
    eval.tasks of them when that is > 0."""
    check_eval_config(config)
    e, data = config.eval, config.data
    if e.manifest:
        tasks = TaskSet.from_manifest(e.manifest)
    else:
        tasks = TaskSet.from_config(data, held_out=True)
    return limit_tasks(tasks, e.tasks)


def check_eval_config(config: TrainConfig, *, tasks_given: bool = False) -> None:
    """What [eval] needs from the other sections: a manifest run has no synthetic held-out set to fall back on (it
    must name its held-out rows), and evaluating the EMA needs one."""
    if config.eval.every <= 0:
        return
    if config.data.manifest and not config.eval.manifest and not tasks_given:
        raise ValueError("eval.every > 0 on a manifest run needs held-out rows: set eval.manifest to a JSONL manifest "
                         "of tasks kept out of data.manifest")
    if config.eval.use_ema and config.optim.ema_every <= 0:
        raise ValueError("eval.use_ema = true needs an EMA: set optim.ema_every > 0 (or eval.use_ema = false)")


def limit_tasks(tasks: TaskSet, count: int) -> TaskSet:
    if count and count < len(tasks.rows):
        keys = tasks.keys[:count]
        return TaskSet(tasks.rows[:count], keys, {k: v for k, v in tasks.images.items() if k in set(keys)})
    return tasks


def build_gold(section, device: torch.device):
    """The gold judge [eval.gold] describes (None without one)."""
    if not section.enabled:
        return None
    from .trainer import reward_from_section
    return reward_from_section(section, device)


class GoldWatch:
    """Held-out samples scored by the training reward and the gold judge, and the divergence alarm on top."""

    def __init__(self, config: TrainConfig, placement: Placement, *, tasks: TaskSet | None = None, gold=None):
        e: EvalConfig = config.eval
        if e.every <= 0:
            raise ValueError("GoldWatch needs eval.every > 0")
        self.config, self.placement = config, placement
        self.every = e.every
        self.tasks = limit_tasks(tasks, e.tasks) if tasks is not None else held_out_tasks(config)
        if not self.tasks.rows:
            raise ValueError("the gold-judge watch has no held-out tasks (see data.eval_tasks, eval.manifest, "
                             "eval.tasks)")
        self.gold = gold if gold is not None else build_gold(e.gold, placement.device)
        self.alarm = DivergenceAlarm(e.alarm_evals, e.alarm_tolerance) if self.gold is not None else None
        self.items = [(i, e.seed + i * e.samples + j) for i in range(len(self.tasks.rows)) for j in range(e.samples)]
        self.num_steps = e.steps or config.sampling.eval_steps
        self.batch_size = e.batch_size or config.sampling.rollout_batch or 0
        self.guidance = config.sampling.guidance or None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def describe(self) -> str:
        gold = "none (held-out training reward only, no alarm)"
        if self.gold is not None:
            g = self.config.eval.gold
            gold = str(dict(g.weights)) if g.weights else g.kind
            if g.path or g.preset:
                gold += f" ({g.path or g.preset})"
        every = f"every {self.every} step" + ("s" if self.every > 1 else "")
        return (f"gold-judge watch: {len(self.items)} held-out samples ({len(self.tasks.rows)} tasks x "
                f"{self.config.eval.samples}) {every}, {self.num_steps} Euler steps, gold judge {gold}")

    def _local_items(self) -> tuple[list[tuple[int, int]], list[int]]:
        """This rank's share of the items (padded with the last item to an equal share) and their global indices."""
        n, world, rank = len(self.items), self.placement.policy_world, self.placement.policy_rank
        share = -(-n // world)
        indices = [min(rank * share + k, n - 1) for k in range(share)]
        return [self.items[i] for i in indices], indices

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        return all_gather_rows(local.to(self.placement.device), self.placement).cpu()[:len(self.items)]

    def _gather_details(self, details: list[dict]) -> list[dict]:
        if self.placement.policy_world == 1:
            return details[:len(self.items)]
        import torch.distributed as dist
        parts: list = [None] * self.placement.policy_world
        dist.all_gather_object(parts, details, group=self.placement.policy_group)
        return [d for part in parts for d in part][:len(self.items)]

    @torch.no_grad()
    def evaluate(self, policy, submit: Callable[[ScoreJob], object]) -> WatchResult:
        """Sample this rank's share, score it with the training reward (`submit`, the run's scorer) and the gold
        judge, gather, and update the alarm. Every policy rank calls this at the same step."""
        start = time.perf_counter()
        items, indices = self._local_items()
        with policy.use_adapter("default"):                       # the trained adapter (not NFT's sampling one)
            images = sample_items(policy, self.tasks, items, num_steps=self.num_steps, batch_size=self.batch_size,
                                  guidance=self.guidance)
        rows = [self.tasks.rows[i] for i, _ in items]
        job = ScoreJob(sample_ids=[(EVAL_SAMPLE_STEP, n) for n in indices],
                       sources=[self.tasks.image(self.tasks.keys[i], self.tasks.rows[i]) for i, _ in items],
                       instructions=[r.instruction for r in rows], edited=images, rows=rows,
                       group_sizes=run_lengths([i for i, _ in items]))
        train_future = submit(job)                                 # scored on the scorer's thread (or reward rank)
        gold_scored = score_job(self.gold, job) if self.gold is not None else None      # meanwhile, here
        train_scored = train_future.result()
        train = self._gather(train_scored.rewards.float())                             # [n]
        metrics = {"eval/train_reward": finite_mean(train), "eval/train_nan": int((~torch.isfinite(train)).sum())}
        gold, alarm = None, False
        if gold_scored is not None:
            gold = self._gather(gold_scored.rewards.float())                            # [n]
            details = self._gather_details(gold_scored.details)
            keep = [d for d, r in zip(details, gold.tolist()) if math.isfinite(r)]      # the judged samples
            metrics["eval/gold_reward"] = finite_mean(gold)
            metrics["eval/gold_nan"] = int((~torch.isfinite(gold)).sum())
            metrics["eval/gap"] = metrics["eval/train_reward"] - metrics["eval/gold_reward"]
            alarm = self.alarm.update(metrics["eval/train_reward"], metrics["eval/gold_reward"])
            metrics["eval/streak"] = self.alarm.streak
            metrics["eval/alarm"] = int(alarm)
            metrics.update(detail_rates(keep, prefix="eval/gold/"))
        metrics["eval/seconds"] = time.perf_counter() - start
        return WatchResult(metrics, alarm, train, gold, images)

    def alarm_message(self, step: int, result: WatchResult) -> str:
        m = result.metrics
        return (f"gold-judge watch: DIVERGENCE ALARM at step {step}: the gold reward fell and the training reward "
                f"rose for {self.alarm.streak} consecutive evaluations (tolerance {self.alarm.tolerance:g}); now "
                f"held-out training reward {m['eval/train_reward']:.4f}, gold reward {m['eval/gold_reward']:.4f} "
                f"(gap {m['eval/gap']:+.4f}). The policy may be hacking the training reward.")

    def state_dict(self) -> dict:
        return {"alarm": self.alarm.state_dict() if self.alarm is not None else None}

    def load_state_dict(self, state: Mapping | None) -> None:
        if state and state.get("alarm") is not None and self.alarm is not None:
            self.alarm.load_state_dict(state["alarm"])

