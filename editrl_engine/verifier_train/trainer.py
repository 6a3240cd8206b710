"""VerifierTrainer: the SFT cold start, then GCPO, on the verifier's own model, prompts and parser.

    trainer = VerifierTrainer(config, sft_rows=..., preference_rows=..., eval_rows=...)   # or manifests in config
    summary = trainer.run(resume=False)

Steps 1..sft.steps are SFT (loss on the trace tokens only), then gcpo.steps GCPO steps (gcpo.py): per pair, N traces
for each image sampled from one prefilled prefix, scored by the verifier's parser, rewarded against the other side,
normalised per group, and trained with the clipped token surrogate (updates_per_batch passes) plus β·KL to the SFT
model (a frozen copy of the LoRA taken when GCPO starts). Every step's randomness comes from (seed, step), so a
resumed run is the uninterrupted one. Checkpoints (LoRA adapters, optimizer, step) are written atomically through
engine/checkpoint.py; SIGTERM / SIGINT finish the current step, checkpoint and stop. Metrics go to metrics.jsonl
(and TensorBoard): loss, train reward, held-out strict pairwise accuracy (ties wrong), parse failures, zero-variance
group fraction, KL, clip fraction, trace length, tokens/s, and at GCPO's evaluations the train reward on a fixed
probe of training pairs (gcpo.probe_pairs). The final LoRA is `lora/`: load_reward("verifier", ...,
lora=DIR) judges with it. The model is reached only through VerifierModel's interface (model.py), which the demo's
SmallVerifier (small_model.py) also implements; its final model is `model/`.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import write_text_atomic
from ..engine import checkpoint as ckpt
from ..reward import verifier_prompts as vp
from ..reward.verifier import aggregate
from . import gcpo
from .config import VerifierTrainConfig
from .data import PreferenceRow, SftRow, load_image, read_preferences, read_sft
from .model import Item, Traces, VerifierModel


def trace_score(principles: Sequence[vp.Principle], text: str) -> float:
    """The verifier's final score of a trace (what it scores as a reward, in [0, 1]); NaN when it does not parse."""
    parsed, error = vp.parse_verdicts(text, len(principles))
    if error:
        return math.nan
    return aggregate(principles, [v["score"] for v in parsed["verdicts"]])[0]


def trace_scores(row: PreferenceRow, texts: Sequence[str]) -> torch.Tensor:
    return torch.tensor([trace_score(row.principles, t) for t in texts])


def pair_inputs(row: PreferenceRow) -> tuple[Item, list]:
    """A preference row as the shared item (sources, instruction, principles) and its two loaded candidates."""
    shared = Item(tuple(load_image(s) for s in row.sources), None, row.instruction, row.principles)
    return shared, [load_image(row.preferred), load_image(row.rejected)]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


PROBE_SEED = 1 << 40            # the reward probe's draws, apart from every step's (step_generator)


class VerifierTrainer:
    def __init__(self, config: VerifierTrainConfig, *, sft_rows: Sequence[SftRow] | None = None,
                 preference_rows: Sequence[PreferenceRow] | None = None,
                 eval_rows: Sequence[PreferenceRow] | None = None, model: VerifierModel | None = None):
        self.config, self.out_dir = config, Path(config.run.out_dir)
        data = config.data
        self.sft_rows = list(sft_rows) if sft_rows is not None else (read_sft(data.sft) if data.sft else [])
        self.preference_rows = list(preference_rows) if preference_rows is not None else \
            (read_preferences(data.preferences) if data.preferences else [])
        self.eval_rows = list(eval_rows) if eval_rows is not None else \
            (read_preferences(data.eval) if data.eval else [])
        if config.sft.steps and not self.sft_rows:
            raise ValueError("sft.steps > 0 needs SFT rows: set data.sft to a manifest")
        if config.gcpo.steps and not self.preference_rows:
            raise ValueError("gcpo.steps > 0 needs preference rows: set data.preferences to a manifest")
        import torch.distributed as dist
        distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        for row in [*self.preference_rows, *self.eval_rows]:
            if not row.principles:
                raise ValueError(f"preference row {row.instruction!r:.60} has no principles: training scores traces "
                                 "against given principles; add them to the rows")
        self._model = model
        self.step = 0
        self.stop_signal: int | None = None
        self.history: list[dict] = []
        self.judged: dict[int, list[dict]] = {}     # step -> its held-out evaluation's judge_pairs output
        self.probed: dict[int, list[float]] = {}    # step -> the reward probe's per-pair rewards

    # ---- set-up --------------------------------------------------------------------------------------------------
    @property
    def model(self) -> VerifierModel:
        if self._model is None:
            self._model = build_model(self.config)
        return self._model

    def _optimizer(self, stage: str) -> torch.optim.Optimizer:
        section = self.config.sft if stage == "sft" else self.config.gcpo
        weight_decay = getattr(section, "weight_decay", 0.0)
        return torch.optim.AdamW(self.model.parameters(), lr=section.lr, weight_decay=weight_decay)

    def evaluates_at(self, step: int) -> bool:
        """Held-out evaluation after the last step of each stage, every run.eval_every SFT steps and every
        gcpo.eval_every GCPO steps."""
        cfg = self.config
        sft_steps = cfg.sft.steps
        if step in (sft_steps, cfg.total_steps):
            return True
        if step <= sft_steps:
            return bool(cfg.run.eval_every) and step % cfg.run.eval_every == 0
        return bool(cfg.gcpo.eval_every) and (step - sft_steps) % cfg.gcpo.eval_every == 0

    def stage_of(self, step: int) -> str:
        return "sft" if step <= self.config.sft.steps else "gcpo"

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        optimizer, stage = None, None
        if resume and (found := ckpt.latest(self.out_dir)) is not None:
            optimizer, stage = self._load(found)
        with self._signals(), self._logger() as log:
            if self.step == 0 and self.eval_rows and self.rank == 0:
                log({"step": 0, **self.evaluate()})
            while self.step < cfg.total_steps:
                step = self.step + 1
                if self.stage_of(step) != stage:
                    stage = self.stage_of(step)
                    if stage == "gcpo":
                        self.model.freeze_reference()          # the SFT model, frozen, as the KL reference
                    optimizer = self._optimizer(stage)
                start = time.perf_counter()
                record = self.sft_step(step, optimizer) if stage == "sft" else self.gcpo_step(step, optimizer)
                record.update(step=step, stage=stage, seconds=time.perf_counter() - start)
                self.step = step
                if self.rank == 0 and self.eval_rows and self.evaluates_at(step):
                    record.update(self.evaluate())
                log(record)
                if self.rank == 0 and (step == cfg.total_steps or self.stop_signal is not None or (
                        cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0)):
                    self._save(optimizer, stage)
                if self.stop_signal is not None:
                    break
        if self.step == cfg.total_steps and self.rank == 0:
            self.model.save(self.out_dir / self.model.saved_as)
        return {"step": self.step, "stopped_by": self.stop_signal, "last": self.history[-1] if self.history else {}}

    # ---- SFT -----------------------------------------------------------------------------------------------------
    def sft_step(self, step: int, optimizer) -> dict:
        cfg, model = self.config, self.model
        picks = torch.randint(len(self.sft_rows), (cfg.sft.batch,), generator=step_generator(cfg.run.seed, step))
        rows = [self.sft_rows[int(i)] for i in picks[self.rank::self.world]]         # this rank's share
        items = [Item(tuple(load_image(s) for s in r.sources), load_image(r.edited), r.instruction, r.principles)
                 for r in rows]
        batch = model.batch(items, [model.encode_trace(r.trace) for r in rows])
        lr = cfg.sft.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = sft_loss(model, batch)
        loss.backward()
        self._average_gradients()
        optimizer.step()
        return {"loss": loss.item(), "lr": lr, "trace_tokens": int(batch["mask"].sum())}

    # ---- GCPO ----------------------------------------------------------------------------------------------------
    def sample_pair_groups(self, row: PreferenceRow, seed: int) -> tuple[Item, list, Traces, torch.Tensor]:
        """GCPO's two groups of one preference row: gcpo.traces traces for each image at the sampling settings
        (the shared prefix prefilled once) and their final scores τ [2N] (NaN: unparseable); also the shared item
        and the loaded candidate images."""
        g = self.config.gcpo
        shared, candidates = pair_inputs(row)
        sampled = self.model.sample_pair(shared, candidates, g.traces, temperature=g.temperature, top_p=g.top_p,
                                         max_new_tokens=g.max_new_tokens, seed=seed)
        return shared, candidates, sampled, trace_scores(row, sampled.texts)

    def gcpo_step(self, step: int, optimizer) -> dict:
        cfg, model, g = self.config, self.model, self.config.gcpo
        generator = step_generator(cfg.run.seed, step)
        picks = torch.randint(len(self.preference_rows), (g.pairs,), generator=generator)
        items, traces, rewards, failures, started = [], [], [], 0, time.perf_counter()
        for p, index in list(enumerate(picks.tolist()))[self.rank::self.world]:          # this rank's pairs
            row = self.preference_rows[index]
            shared, candidates, sampled, tau = self.sample_pair_groups(row, cfg.run.seed * 7919 + step * 131 + p)
            failures += int(torch.isnan(tau).sum())
            r_w, r_l = gcpo.pair_rewards(tau[:g.traces], tau[g.traces:])
            rewards += [r_w, r_l]
            items += [Item(shared.sources, c, row.instruction, row.principles)
                      for c in candidates for _ in range(g.traces)]
            traces += sampled.ids
        sampling_s = time.perf_counter() - started
        grouped = torch.stack(rewards)                                                        # [2P, N]
        advantages, zero = gcpo.group_advantages(grouped)
        advantages = advantages.reshape(-1)                                                   # [2PN]
        chunks = [slice(i, i + g.micro_batch) for i in range(0, len(items), g.micro_batch)]
        batches = [model.batch(items[c], traces[c]) for c in chunks]
        ref = [None] * len(batches)
        if g.kl_beta:
            with torch.no_grad(), model.reference():
                ref = [model.token_logp(b) for b in batches]
        # the sampling policy's log-probs are the first pass's, detached: the parameters have not moved yet, so the
        # forward a separate no-grad pass would run is this one (the ratio is exactly 1 at the first update)
        old: list[torch.Tensor | None] = [None] * len(batches)
        stats = {"clip_fraction": [], "kl": [], "loss": []}
        tokens = sum(int(b["mask"].sum()) for b in batches)
        for _ in range(g.updates_per_batch):
            optimizer.zero_grad(set_to_none=True)
            for i, (b, c, lp_ref) in enumerate(zip(batches, chunks, ref)):
                logp = model.token_logp(b)
                if old[i] is None:
                    old[i] = logp.detach()
                lp_old = old[i]
                loss, part = gcpo.token_loss(logp, lp_old, advantages[c].to(logp.device), b["mask"].to(logp.device),
                                             clip_eps=g.clip_eps, kl_beta=g.kl_beta, logp_ref=lp_ref)
                weight = int(b["mask"].sum()) / max(tokens, 1)
                (loss * weight).backward()
                stats["loss"].append(loss.item() * weight)
                stats["clip_fraction"].append(float(part["clip_fraction"]) * weight)
                stats["kl"].append(float(part["kl"]) * weight)
            self._average_gradients()
            optimizer.step()
        n = g.updates_per_batch
        return {"loss": sum(stats["loss"]) / n, "train_reward": float(grouped[0::2].mean()),
                "parse_failures": failures / len(items), "zero_variance_groups": float(zero.float().mean()),
                "kl": sum(stats["kl"]) / n, "clip_fraction": sum(stats["clip_fraction"]) / n,
                "trace_length": sum(len(t) for t in traces) / len(traces), "tokens_per_s": tokens / sampling_s}

    def _average_gradients(self) -> None:
        """Under torchrun: every rank's LoRA gradients averaged (what DDP does over the trained parameters)."""
        if self.world == 1:
            return
        import torch.distributed as dist
        for parameter in self.model.parameters():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= self.world

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def judge_pairs(self, rows: Sequence[PreferenceRow]) -> list[dict]:
        """Greedy traces for both images of each row and their final scores."""
        items, candidates = zip(*map(pair_inputs, rows)) if rows else ((), ())
        texts = self.model.judge_texts(items, candidates, self.config.gcpo.max_new_tokens)
        out = []
        for r, row in enumerate(rows):
            pair = texts[2 * r: 2 * r + 2]
            scores = [trace_score(row.principles, t) for t in pair]
            out.append({"preferred": scores[0], "rejected": scores[1], "texts": pair})
        return out

    def evaluate(self) -> dict:
        judged = self.judged[self.step] = self.judge_pairs(self.eval_rows)
        correct = [j["preferred"] > j["rejected"] for j in judged]            # NaN compares False: wrong
        unparsed = sum(math.isnan(j[k]) for j in judged for k in ("preferred", "rejected"))
        out = {"eval_accuracy": sum(correct) / len(correct), "eval_parse_failures": unparsed / (2 * len(judged))}
        g = self.config.gcpo
        if g.probe_pairs and g.steps and self.step >= self.config.sft.steps and self.preference_rows:
            started = time.perf_counter()
            out.update(probe_reward=self.probe_reward(), probe_seconds=time.perf_counter() - started)
        return out

    def probe_reward(self) -> float:
        """GCPO's training reward of the current policy on a fixed probe: gcpo.probe_pairs training pairs drawn
        once from the run's seed and sampled from the same seeds at every call (common random numbers), so the
        value moves only as the policy does. The per-step train_reward is the same mean over pairs drawn afresh
        each step and moves with their difficulty as much as with the policy (docs/design.md)."""
        g, seed = self.config.gcpo, self.config.run.seed
        picks = torch.randint(len(self.preference_rows), (g.probe_pairs,),
                              generator=torch.Generator().manual_seed(PROBE_SEED + seed))
        rows = [self.preference_rows[i] for i in picks.tolist()]
        shared, candidates = zip(*map(pair_inputs, rows))
        sampled = self.model.sample_pairs(shared, candidates, g.traces, temperature=g.temperature, top_p=g.top_p,
                                          max_new_tokens=g.max_new_tokens, seed=PROBE_SEED + 1009 * seed)
        rewards = []
        for row, traces in zip(rows, sampled):
            tau = trace_scores(row, traces.texts)                                           # [2N]
            rewards.append(float(gcpo.pair_rewards(tau[:g.traces], tau[g.traces:])[0].mean()))  # preferred group
        self.probed[self.step] = rewards
        return sum(rewards) / len(rewards)

    # ---- checkpoints, signals, logs ------------------------------------------------------------------------------
    def _save(self, optimizer, stage: str) -> Path:
        stage_dir = ckpt.begin(self.out_dir, self.step)
        adapters = self.model.save_adapters(stage_dir / "adapters")
        ckpt.save_torch({"step": self.step, "stage": stage, "optimizer": optimizer.state_dict(),
                         "adapters": adapters, "rng": ckpt.rng_state()}, stage_dir / "trainer.pt")
        return ckpt.commit(self.out_dir, self.step, self.config.run.keep)

    def _load(self, folder: Path):
        state = ckpt.load_torch(folder / "trainer.pt")
        self.model.load_adapters(folder / "adapters", state["adapters"])
        optimizer = self._optimizer(state["stage"])
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        self.step = state["step"]
        return optimizer, state["stage"]

    @contextlib.contextmanager
    def _signals(self):
        def stop(signum, _frame):
            self.stop_signal = signum
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def _logger(self):
        path = self.out_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
        writer = None
        if self.config.run.tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(self.out_dir / "tensorboard"))

        def log(record: dict) -> None:
            self.history.append(record)
            if self.rank != 0:
                return
            kept.append(json.dumps(record))
            write_text_atomic(path, "\n".join(kept) + "\n")
            if writer is not None:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key != "step":
                        writer.add_scalar(key, value, record["step"])
        try:
            yield log
        finally:
            if writer is not None:
                writer.close()


def sft_loss(model: VerifierModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the trace tokens (prompt and image tokens masked out)."""
    logp = model.token_logp(batch)
    mask = batch["mask"].to(logp.device)
    return -(logp * mask).sum() / mask.sum().clamp_min(1)


def build_model(config: VerifierTrainConfig) -> VerifierModel:
    from ..reward import load_reward
    m = config.model
    reward = load_reward("verifier", path=m.path or None, preset=m.preset or None, device=m.device,
                         dtype=getattr(torch, m.dtype), family=m.family or None, seed=config.run.seed,
                         max_image_pixels=m.max_image_pixels)
    generator = reward.generate_fn
    return VerifierModel(generator.vlm, image_size=generator.image_size, lora_rank=m.lora_rank,
                         lora_alpha=m.lora_alpha, targets=m.lora_targets,
                         gradient_checkpointing=m.gradient_checkpointing, autocast=m.autocast, seed=config.run.seed)
