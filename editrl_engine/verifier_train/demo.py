"""`editrl demo-verifier`: a verifier trained on the synthetic shapes task on the CPU, SFT then GCPO.

Two verifiers (`--verifier`):
  small  (the default) small_model.SmallVerifier, a purpose-built 0.55 M-parameter model that sees the source, the
         edited image and their difference and writes the verifier's verdict JSON, trained whole. It is there
         because the VLM below cannot learn the demo in five minutes on 2 cores (its docstring says why).
  vlm    the `verifier` reward's own Qwen2.5-VL code path, prompts and parser at the `demo` preset (width 96, 4
         layers: the 2-layer `tiny` cannot keep the verdict JSON in order), with a LoRA on the language model, the
         output head and the vision tower, shown 128 + 2 (edited - source) in place of each edited image
         (`--edited-view difference`, its default): a random-weight VLM has no sight, and shown the edited image
         itself it fits the trace format and never reads the edit (held-out accuracy 0;
         bench/verifier_image_dependence.py measures why). About 1 s an SFT step on 2 cores: ~20 minutes a seed.
Both train through the same VerifierTrainer: the same traces, parser, GCPO rewards, evaluation and checkpoints.

Their data (demo_task.py): every candidate edit of the training tasks with its object-level trace (SFT) and the
pairs whose object-level rewards differ (GCPO). The demo prints held-out strict pairwise accuracy (chance 0.5; after
SFT; after GCPO; ties and unparseable answers count as wrong), per-principle verdict accuracy, accuracy by pair kind
and example traces, and writes its run folder: metrics.jsonl, summary.json and the model (model/ or lora/).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

from ..atomic import write_text_atomic
from ..data.synthetic import make_tasks
from ..engine.checkpoint import LATEST, checkpoint_root, step_dir
from ..reward import verifier_prompts as vp
from .config import load_verifier_config
from .demo_task import build, held_out_pairs, verdict
from .model import LANGUAGE_TARGETS
from .small_model import SmallVerifier
from .trainer import VerifierTrainer

SIZE = 32
VERIFIERS = ("small", "vlm")
# settings by name: each verifier's full demo and its --quick smoke run (the tests'): SETTINGS["small-quick"]
SETTINGS = {
    # N = 16 traces an image: at N = 8 46-55 % of GCPO's groups had zero variance and held-out accuracy dipped up
    # to 11.3 points below the SFT start (bench/results/demo-verifier-small-n8-cpu.json; docs/design.md)
    "small": dict(verifier="small", edited_view="image", train_tasks=1000, eval_tasks=150, sft_steps=800,
                  gcpo_steps=20, gcpo_eval_every=5,
                  sft=["sft.batch=16", "sft.lr=2e-3", "sft.warmup=50", "sft.schedule='cosine'",
                       "sft.min_lr_ratio=0.05"],
                  gcpo=["gcpo.pairs=8", "gcpo.traces=16", "gcpo.lr=3e-4", "gcpo.kl_beta=0.01",
                        "gcpo.temperature=1.0", "gcpo.max_new_tokens=32", "gcpo.updates_per_batch=1",
                        "gcpo.micro_batch=64"]),
    "small-quick": dict(verifier="small", edited_view="image", train_tasks=6, eval_tasks=4, sft_steps=3,
                        gcpo_steps=2, gcpo_eval_every=1, sft=["sft.batch=4", "sft.lr=1e-3"],
                        gcpo=["gcpo.pairs=2", "gcpo.traces=2", "gcpo.lr=1e-4", "gcpo.max_new_tokens=32"]),
    # GCPO samples N = 8 traces an image: at N = 4 most groups had zero variance (0.38-1.0 a step) and GCPO ended
    # below its start (docs/design.md has the runs)
    "vlm": dict(verifier="vlm", edited_view="difference", train_tasks=1000, eval_tasks=150, sft_steps=900,
                gcpo_steps=20, gcpo_eval_every=5,
                sft=["sft.batch=16", "sft.lr=5e-4"],
                gcpo=["gcpo.pairs=4", "gcpo.traces=8", "gcpo.lr=1e-4", "gcpo.kl_beta=0.01", "gcpo.temperature=0.7",
                      "gcpo.max_new_tokens=96", "gcpo.updates_per_batch=1", "gcpo.micro_batch=16"]),
    "vlm-quick": dict(verifier="vlm", edited_view="difference", train_tasks=6, eval_tasks=4, sft_steps=3,
                      gcpo_steps=2, gcpo_eval_every=1, sft=["sft.batch=4", "sft.lr=1e-3"],
                      gcpo=["gcpo.pairs=2", "gcpo.traces=2", "gcpo.lr=1e-4", "gcpo.max_new_tokens=16"]),
}

# LoRA on the output head too: the tiny preset's frozen random head (rows of norm ~0.11 after a frozen RMSNorm of a
# width-32 state) caps every logit near +-0.64, so with adapters on the projections only the SFT loss cannot fall
# below ~5.6 nats a token (measured: 6.7 -> 6.4 in 65 steps; with the head adapted 5.1 at step 10, 2.8 at step 20).
TARGETS = LANGUAGE_TARGETS + "|lm_head"
# and on the vision tower's projections and patch merger, whose random features are all the verifier sees of an image
# (bench/verifier_image_dependence.py: on the edited image itself they gave the only loss gap there was)
VISION_TARGETS = r"|.*visual.*\.(qkv|attn\.proj|gate_proj|up_proj|down_proj|mlp\.0|mlp\.2)"


def demo_config(out: str, seed: int, settings: dict, *extra: str):
    targets = TARGETS + VISION_TARGETS
    return load_verifier_config(None, [
        "model.preset='demo'", "model.lora_rank=32", "model.lora_alpha=64.0", f"model.lora_targets='{targets}'",
        f"run.seed={seed}",
        f"run.out_dir='{out}'", f"sft.steps={settings['sft_steps']}", f"gcpo.steps={settings['gcpo_steps']}",
        "run.eval_every=0", f"gcpo.eval_every={settings['gcpo_eval_every']}",
        f"run.checkpoint_every={settings['sft_steps']}", "run.keep=3",          # the SFT model is kept (more_sft)
        "run.progress=false",
        *settings["sft"], *settings["gcpo"], *extra])


def principle_accuracy(judged: list[dict], which: list) -> dict[str, float]:
    """Per principle kind: how often the verifier's verdict (pass / partial / fail) is the object-level one
    (unparseable answers count as wrong)."""
    hits = {"follow": [], "keep": [], "quality": []}
    for result, (_task, a, b) in zip(judged, which):
        for text, candidate in zip(result["texts"], (a, b)):
            parsed, error = vp.parse_verdicts(text, 3)
            expected = candidate.scores
            for k, kind in enumerate(hits):
                hits[kind].append(not error and parsed["verdicts"][k]["verdict"] == verdict(expected[k]))
    return {kind: sum(v) / len(v) for kind, v in hits.items()}


def pair_kind_accuracy(judged: list[dict], which: list) -> dict[str, dict]:
    """Per kind of held-out pair ("target>erased": the exact target preferred over every shape erased): how many
    there are and the strict accuracy on them, the view that shows which judgements the verifier has not learnt."""
    kinds: dict[str, list[bool]] = {}
    for result, (_task, a, b) in zip(judged, which):
        kinds.setdefault(f"{a.name}>{b.name}", []).append(result["preferred"] > result["rejected"])
    return {kind: {"pairs": len(v), "accuracy": sum(v) / len(v)} for kind, v in sorted(kinds.items())}


def probe_change(probed: dict[int, list[float]]) -> dict | None:
    """The reward probe's change from its first evaluation (GCPO's start) to its last: the mean over its pairs of
    each pair's change, with the standard error over pairs; None without two probes."""
    if len(probed) < 2:
        return None
    first, last = probed[min(probed)], probed[max(probed)]
    change = [b - a for a, b in zip(first, last)]
    stderr = statistics.stdev(change) / math.sqrt(len(change)) if len(change) > 1 else math.nan
    return {"pairs": len(change), "mean": statistics.mean(change), "stderr": stderr}


def training_rows(seed: int, settings: dict, edited_view: str | None = None) -> tuple[list, list]:
    """A seed's SFT rows and GCPO preference pairs (demo_task.build over settings["train_tasks"] tasks), shown as
    the settings' verifier is shown them unless edited_view says otherwise."""
    tasks = make_tasks(settings["train_tasks"], seed=seed, size=SIZE)
    sft_rows, pairs, _ = build(tasks, seed, edited_view or settings["edited_view"])
    return sft_rows, pairs


def eval_set(seed: int, settings: dict, edited_view: str | None = None):
    """A seed's fixed held-out pairs and their candidates (demo_task.held_out_pairs), shown as the settings' verifier
    is shown them unless edited_view says otherwise."""
    return held_out_pairs(settings["eval_tasks"], seed=10_000 + seed, size=SIZE,
                          edited_view=edited_view or settings["edited_view"])


def new_model(settings: dict, seed: int, sft_rows: list) -> SmallVerifier | None:
    """The settings' verifier before training: a SmallVerifier (its vocabulary from the SFT rows), or None for the
    VLM, which the trainer builds from its config."""
    if settings["verifier"] not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}, got {settings['verifier']!r}")
    return SmallVerifier.for_rows(sft_rows, seed=seed) if settings["verifier"] == "small" else None


def start_from_sft_model(run_dir: str | Path, into: str | Path, settings: dict) -> None:
    """Copies the SFT model's checkpoint of a demo run folder (its LoRA, optimizer state and step) into `into` as
    its latest checkpoint, so a trainer there resumes from it."""
    sft_model = step_dir(Path(run_dir), settings["sft_steps"])
    if not (sft_model / "trainer.pt").is_file():
        raise FileNotFoundError(f"{sft_model}: the SFT model's checkpoint is missing; run the demo first")
    root = checkpoint_root(Path(into))
    shutil.copytree(sft_model, root / sft_model.name, dirs_exist_ok=True)
    write_text_atomic(root / LATEST, sft_model.name + "\n")


def more_sft(seed: int, out: str, settings: dict, history: list[dict], rows: tuple) -> dict:
    """The other use of GCPO's time: SFT for as many more steps as GCPO's wall time buys at the measured SFT step
    time, continued from the SFT model's checkpoint (its weights, optimizer state and step) at the lr SFT ended
    with, then the held-out accuracy."""
    sft_seconds = [r["seconds"] for r in history if r.get("stage") == "sft"]
    gcpo_seconds = sum(r["seconds"] for r in history if r.get("stage") == "gcpo")
    extra = max(1, round(gcpo_seconds / (sum(sft_seconds) / len(sft_seconds))))
    start_from_sft_model(Path(out).parent, out, settings)
    end_lr = demo_config(out, seed, settings).sft.lr_at(settings["sft_steps"])       # SFT goes on at its last lr
    longer = dict(settings, sft_steps=settings["sft_steps"] + extra, gcpo_steps=0,
                  sft=[*settings["sft"], "sft.warmup=0", "sft.schedule='constant'", f"sft.lr={end_lr}"])
    sft_rows, pairs, eval_rows = rows
    trainer = VerifierTrainer(demo_config(out, seed, longer, "run.checkpoint_every=0"), sft_rows=sft_rows,
                              preference_rows=pairs, eval_rows=eval_rows, model=new_model(settings, seed, sft_rows))
    trainer.run(resume=True)
    return {"extra_sft_steps": extra, "gcpo_seconds": gcpo_seconds,
            "after_more_sft": trainer.history[-1]["eval_accuracy"]}


def run(seed: int, out: str, settings: dict, log=print, same_time_sft: bool = False,
        edited_view: str | None = None) -> dict:
    """One seed of the demo; same_time_sft: also train a second verifier on SFT alone for GCPO's time
    (`more_sft`), for the comparison the benchmark reports; edited_view: what the verifier is shown of each edited
    image (demo_task.EDITED_VIEWS; default: the settings')."""
    started = time.perf_counter()
    edited_view = edited_view or settings["edited_view"]
    sft_rows, pairs = training_rows(seed, settings, edited_view)
    eval_rows, which = eval_set(seed, settings, edited_view)
    log(f"demo-verifier seed {seed}: {len(sft_rows)} SFT traces, {len(pairs)} training pairs, {len(eval_rows)} "
        f"held-out pairs, edited images shown as {edited_view!r}")
    trainer = VerifierTrainer(demo_config(out, seed, settings), sft_rows=sft_rows, preference_rows=pairs,
                              eval_rows=eval_rows, model=new_model(settings, seed, sft_rows))
    trainer.run()
    evals = [r for r in trainer.history if "eval_accuracy" in r]
    judged = trainer.judged[trainer.step]                          # the last evaluation's greedy traces
    summary = {
        "seed": seed, "verifier": settings["verifier"], "edited_view": edited_view, "chance": 0.5,
        "before": evals[0]["eval_accuracy"],
        "after_sft": next(r["eval_accuracy"] for r in evals if r["step"] == settings["sft_steps"]),
        "after_gcpo": evals[-1]["eval_accuracy"], "parse_failures_after_sft": next(
            r["eval_parse_failures"] for r in evals if r["step"] == settings["sft_steps"]),
        "gcpo_accuracy_min": min(r["eval_accuracy"] for r in evals if r["step"] >= settings["sft_steps"]),
        "gcpo_train_reward": [r["train_reward"] for r in trainer.history if "train_reward" in r],
        "gcpo_probe_reward": [[r["step"], r["probe_reward"]] for r in evals if "probe_reward" in r],
        "gcpo_probe_change": probe_change(trainer.probed),
        "identical_pairs": sum(j["texts"][0] == j["texts"][1] for j in judged) / len(judged),
        "per_principle": principle_accuracy(judged, which),
        "per_pair_kind_after_sft": pair_kind_accuracy(trainer.judged[settings["sft_steps"]], which),
        "per_pair_kind": pair_kind_accuracy(judged, which),
        "examples": [{"instruction": row.instruction, "preferred": j["texts"][0], "rejected": j["texts"][1]}
                     for row, j in list(zip(eval_rows, judged))[:3]],
        "seconds": time.perf_counter() - started,
        "probe_seconds": sum(r.get("probe_seconds", 0.0) for r in evals),
    }
    if same_time_sft:
        summary.update(more_sft(seed, f"{out}/more-sft", settings, trainer.history, (sft_rows, pairs, eval_rows)))
    write_text_atomic(Path(out) / "summary.json", json.dumps(summary, indent=2))
    return summary


def main(args: argparse.Namespace) -> dict:
    settings = SETTINGS[getattr(args, "verifier", "small") + ("-quick" if args.quick else "")]
    summary = run(args.seed, args.out, settings, edited_view=getattr(args, "edited_view", None))
    fmt = lambda x: "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
    print(f"held-out strict pairwise accuracy ({settings['eval_tasks']} tasks): chance 0.500, untrained "
          f"{fmt(summary['before'])}, after SFT {fmt(summary['after_sft'])}, after GCPO {fmt(summary['after_gcpo'])}")
    print(f"pairs given the same verdict text for both images: {summary['identical_pairs']:.3f}")
    print("per-principle verdict accuracy after GCPO: " + ", ".join(f"{k} {fmt(v)}"
                                                                     for k, v in summary["per_principle"].items()))
    print("accuracy by pair kind after GCPO: " + ", ".join(f"{k} {fmt(v['accuracy'])} ({v['pairs']})"
                                                             for k, v in summary["per_pair_kind"].items()))
    for example in summary["examples"][:2]:
        print(f"  {example['instruction']}\n    preferred: {example['preferred'][:160]}\n"
              f"    rejected:  {example['rejected'][:160]}")
    print(f"run folder {args.out} ({summary['seconds']:.0f} s)")
    return summary
