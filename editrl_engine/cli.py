"""The `editrl` command line: one argparse subcommand per job; each job's module is imported only when run.

    editrl eval editreward-bench --data DIR --reward KIND[:PATH] [--preset tiny] [--avg-k K] [--cache FILE]
                                 [--out FILE] [--limit N]
    editrl eval gedit --edits DIR --reward KIND[:PATH] [...]

A command is added by writing `_add_<name>(subparsers)` that builds its parser and sets `run=`, and listing it
in COMMANDS. Nothing in the package imports this module.

A user error (editrl_engine/errors.py: UserError, e.g. CommandError, ConfigError, a missing folder) is printed as
one line `editrl: error: ...` with exit status 2; any other exception is a bug and keeps its traceback (status 1).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


class CommandError(UserError):
    """A bad combination of command-line arguments: printed as `editrl: error: ...`, exit status 2."""


def _reward_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reward")
    group.add_argument("--reward", required=True, metavar="KIND[:PATH]",
                       help="reward kind (editscore, mllm_logit, verifier, programmatic), optionally with ':' and "
                            "the local folder of its weights, e.g. mllm_logit:/models/Qwen2.5-VL-7B-Instruct")
    group.add_argument("--preset", help="build the reward from a preset instead of weights (e.g. tiny: random "
                                        "weights, for smoke tests)")
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype (default: float32)")
    group.add_argument("--backend", default="eager", help="scoring backend (default: eager)")
    group.add_argument("--avg-k", type=int, default=1, metavar="K",
                       help="Avg@K self-ensemble: K sampled judge passes per image, for rewards that have it")
    group.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per score() call")
    remote_reward_arguments(group)
    run = parser.add_argument_group("run")
    run.add_argument("--cache", metavar="FILE", help="per-image score cache (JSONL); reused across runs")
    run.add_argument("--out", metavar="FILE", help="write the full results as JSON here (atomically)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N rows (smoke tests)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_reward(args: argparse.Namespace):
    import torch

    from .reward import KINDS, load_reward

    kind, _, path = args.reward.partition(":")
    if kind not in KINDS:
        raise CommandError(f"--reward {args.reward}: unknown reward kind {kind!r}; choose one of {', '.join(KINDS)}")
    if args.avg_k < 1:
        raise CommandError(f"--avg-k must be >= 1, got {args.avg_k}")
    remote = remote_reward_from(args, kind, path)
    if remote is not None:
        return remote
    if not path and not args.preset and kind not in ("programmatic",):
        raise CommandError(f"--reward {kind} needs weights: give KIND:PATH or --preset")
    return load_reward(kind, path=path or None, preset=args.preset, device=args.device,
                       dtype=getattr(torch, args.dtype), backend=args.backend)


def _finish(args: argparse.Namespace, result: dict, lines: list[str]) -> None:
    from .eval import write_json_atomic

    print("\n".join(lines))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"results: {args.out}")


def _fmt(value) -> str:
    return "  -  " if value is None else f"{value:.4f}"


def _run_editreward_bench(args: argparse.Namespace) -> None:
    from .eval import ScoreCache, editreward_bench

    rows = editreward_bench.read_rows(args.data, limit=args.limit)
    reward = _load_reward(args)
    result = editreward_bench.evaluate(reward, rows, avg_k=args.avg_k, cache=ScoreCache(args.cache),
                                       batch_size=args.batch_size, progress=not args.no_progress)
    lines = [f"EditReward-Bench: {result['rows']} rows, reward {reward.kind}, Avg@{args.avg_k}, "
             f"parse failures {result['parse_failure_rate']:.2%}"]
    for dimension, d in result["dimensions"].items():
        groups = "  ".join(f"{g} {_fmt(v)}" for g, v in d["groups"].items())
        note = "" if d["complete"] else f"  ({len(d['missing_tasks'])} of 13 tasks missing)"
        lines.append(f"  {dimension:16s} macro {_fmt(d['macro'])}  {groups}{note}")
    _finish(args, result, lines)


def _run_gedit(args: argparse.Namespace) -> None:
    from .eval import ScoreCache, gedit

    rows = gedit.read_edits(args.edits, limit=args.limit)
    reward = _load_reward(args)
    result = gedit.evaluate(reward, rows, avg_k=args.avg_k, cache=ScoreCache(args.cache),
                            batch_size=args.batch_size, progress=not args.no_progress)
    lines = [f"GEdit: {result['rows']} edits, reward {reward.kind}, Avg@{args.avg_k}: "
             f"macro O {_fmt(result['macro_o'])} (0-10)"]
    lines += [f"  {t:24s} {_fmt(v['mean_o'])}  n={v['n']}" for t, v in result["types"].items()]
    _finish(args, result, lines)


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a reward or a set of edits on a benchmark",
                                   description="Evaluate a reward model (EditReward-Bench) or a folder of edits "
                                               "(GEdit-style) and print the headline numbers.")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bench = benches.add_parser(
        "editreward-bench", help="pairwise accuracy of a reward on EditReward-Bench",
        description="Strict pairwise accuracy (ties and failures count as wrong) per task, macro mean over the "
                    "13 tasks, the four task groups and the three dimensions (prompt_following, consistency, "
                    "overall) of a reward on EditReward-Bench rows read from a local folder (parquet or JSONL).")
    bench.add_argument("--data", required=True, metavar="DIR", help="folder (or file) of the benchmark rows")
    _reward_arguments(bench)
    bench.set_defaults(run=_run_editreward_bench)
    edits = benches.add_parser(
        "gedit", help="GEdit-style score of a folder of edits",
        description="Score each edit (O = sqrt(SC*PQ) on 0-10), average per task type, then over types. "
                    "The folder holds manifest.jsonl: task_type, instruction, source, edited per line.")
    edits.add_argument("--edits", required=True, metavar="DIR", help="folder with manifest.jsonl (or the file)")
    _reward_arguments(edits)
    edits.set_defaults(run=_run_gedit)


def _run_train(args: argparse.Namespace) -> None:
    from .engine import Trainer, dump_toml, load_config

    config = load_config(args.config, args.set)
    if args.print_config:
        print(dump_toml(config), end="")
        return
    trainer = Trainer(config)
    summary, placement = trainer.train(resume=args.resume), trainer.placement
    del trainer                                        # it holds the process groups; close() needs them unreferenced
    placement.close()                                  # after a failure torchrun stops the other ranks instead
    if summary.get("role") == "policy" and int(__import__("os").environ.get("RANK", "0")) == 0:
        last = summary["last"]
        print(f"step {summary['step']}: reward {last.get('reward_mean', float('nan')):.4f}, "
              f"{last.get('images_per_s', float('nan')):.2f} images/s; checkpoint {summary['checkpoint']}; "
              f"run folder {config.out_dir}")


def _add_train(subparsers) -> None:
    from .engine.config import shipped_configs

    parser = subparsers.add_parser(
        "train", help="train an editing policy with DiffusionNFT or Flow-GRPO",
        description="Run the pipelined rollout -> score -> update loop described by a TOML config. One process "
                    "per GPU: launch with `torchrun --nproc-per-node N -m editrl_engine.cli train CONFIG` (gloo on "
                    "CPU). The run folder gets config.toml, metrics.jsonl, TensorBoard logs, image grids and atomic "
                    "checkpoints (LoRA loadable by the diffusers pipeline). SIGTERM or Ctrl-C finishes the step, "
                    "writes a checkpoint and stops; --resume continues from the newest checkpoint.",
        epilog="shipped configs: " + ", ".join(sorted(shipped_configs())) + ". Example: editrl train demo --set "
               "run.steps=20 --set optim.lr=1e-3")
    parser.add_argument("config", metavar="CONFIG", help="a shipped config's name or a .toml file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-4 --set algo.name=grpo (repeatable; "
                             "values are TOML: numbers, true/false, strings, [arrays])")
    parser.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(run=_run_train)


def _run_demo(args: argparse.Namespace) -> None:
    from .engine.demo.run import run_demo

    run_demo(args.set)


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the embedded default: a few minutes of DiffusionNFT on the CPU",
        description="Train a tiny Kontext-architecture editor on the synthetic shapes editing task with the exact "
                    "programmatic reward and DiffusionNFT, starting from the shipped supervised warm-up (trained "
                    "on imperfect data; `editrl pretrain-demo` reproduces it). Prints the held-out reward and the "
                    "object-level rates (named shape removed, other shape kept) before and after RL and writes "
                    "runs/demo/: metrics.jsonl, reward_curve.png, before_after.png, "
                    "lora/ (diffusers-loadable) and summary.json. Fixed step counts: a run is reproducible.",
        epilog="Example: editrl demo --set run.seed=1 --set run.out_dir=runs/demo-seed1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the demo config (configs/demo.toml), e.g. --set run.seed=1")
    parser.set_defaults(run=_run_demo)


def _run_pretrain_demo(args: argparse.Namespace) -> None:
    from .engine.demo import pretrain as defaults
    from .engine.demo import task
    from .engine.demo.pretrain import pretrain
    path = pretrain(args.out, steps=args.steps or defaults.STEPS, seed=args.seed,
                    ghost=task.GHOST if args.ghost is None else args.ghost)
    print(f"warm-up checkpoint: {path} ({__import__('os').path.getsize(path) / 1e6:.2f} MB)")


def _add_pretrain_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain-demo", help="reproduce the demo's shipped supervised warm-up checkpoint",
        description="Supervised flow-matching warm-up of the demo policy on synthetic shapes edits whose targets "
                    "are deliberately imperfect: the erased shape stays as a faint ghost a few grey levels from the "
                    "background (the supervised model copies it; RL against the exact object-level reward then "
                    "removes it). With the defaults it rebuilds the checkpoint that ships as "
                    "editrl_engine/engine/demo/warmup.safetensors (about 25 minutes on one core).")
    parser.add_argument("--out", default="runs/demo-warmup.safetensors", help="where to write the checkpoint")
    parser.add_argument("--steps", type=int, help="training steps (default: those of the shipped checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initial weights and noise")
    parser.add_argument("--ghost", type=int, metavar="LEVELS",
                        help="grey levels between the erased shape's ghost and the background in the warm-up "
                             "targets; 0 gives exact targets (default: the shipped checkpoint's)")
    parser.set_defaults(run=_run_pretrain_demo)


from .cli_serve import (  # noqa: E402  (argparse only; the server loads when it runs)
    add_rerank,
    add_serve,
    remote_reward_arguments,
    remote_reward_from,
)
from .cli_verifier import add_demo_verifier, add_train_verifier  # noqa: E402

COMMANDS = (_add_eval, _add_train, _add_demo, _add_pretrain_demo, add_rerank, add_serve, add_train_verifier,
            add_demo_verifier)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="editrl", description="editrl-engine: RL of instruction-guided image editors with vision-language "
                                   "rewards. Run `editrl COMMAND --help` for a command's options.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except UserError as error:              # anything else is a bug: its traceback is shown, exit status 1
        print(f"editrl: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
