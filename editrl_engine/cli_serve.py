"""`editrl rerank` and `editrl serve`: their argparse subcommands. Each module they need is imported when run.

    editrl rerank --policy DIR|tiny --reward KIND[:DIR] [--reward-preset tiny] --n 8 --out OUT image.png "instr"
    editrl rerank --policy demo [--lora runs/demo/lora] --task 9001:3 --n 8 --out OUT     # the embedded default
    editrl serve --reward KIND[:DIR] [--reward-preset tiny] [--policy DIR|tiny] [--host 127.0.0.1] [--port 8000]

add_rerank(subparsers) / add_serve(subparsers) build the parsers and set `run=`; a user error raises InputError
(a ValueError) or MissingPathError (a FileNotFoundError) of editrl_engine/errors.py with a message naming the problem
and the fix, which the `editrl` entry point prints (exit status 2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError, MissingPathError, UserError

DTYPES = ("float32", "bfloat16", "float16")
FAMILIES = ("flux-kontext", "qwen-image-edit", "qwen-image-edit-plus", "flux2")   # = policy.FAMILIES (a test checks)


def _model_arguments(parser: argparse.ArgumentParser, policy_required: bool, reward_required: bool = True) -> None:
    reward = parser.add_argument_group("reward")
    reward.add_argument("--reward", required=reward_required, metavar="KIND[:DIR]",
                        help="reward kind (mllm_logit, editscore, verifier, programmatic), optionally with ':' and "
                             "the local folder of its weights, e.g. mllm_logit:/models/Qwen2.5-VL-7B-Instruct; "
                             "programmatic:MANIFEST.jsonl reads the synthetic tasks it verifies"
                             + ("" if reward_required else "; with --task the default is programmatic, verifying "
                                                           "that task"))
    reward.add_argument("--reward-preset", metavar="NAME", help="build the reward from a preset instead of weights "
                                                                 "(tiny: random weights, for smoke tests)")
    reward.add_argument("--reward-backend", default="eager", help="scoring backend (default: eager)")
    remote_reward_arguments(reward)
    policy = parser.add_argument_group("policy")
    policy.add_argument("--policy", required=policy_required, metavar="DIR|tiny" + ("|demo" if policy_required else ""),
                        help="the editing policy: a local diffusers-format folder, or 'tiny' (random weights)"
                             + ("; or 'demo', the embedded demo editor (its shipped supervised warm-up; add --lora "
                                "runs/demo/lora for the one `editrl demo` trained)" if policy_required
                                else "; enables POST /v1/rerank"))
    policy.add_argument("--family", default="flux-kontext", choices=FAMILIES,
                        help="the policy's model family (default: flux-kontext)")
    run = parser.add_argument_group("device")
    run.add_argument("--device", default="cpu", help="torch device for both models (default: cpu)")
    run.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype (default: float32)")


def remote_reward_arguments(group) -> None:
    """--reward-endpoint / --reward-model / --reward-api-key-env: the judge served over HTTP (every command that
    takes a --reward has them)."""
    group.add_argument("--reward-endpoint", action="append", metavar="URL",
                       help="score with the judge served at this OpenAI-compatible /v1 base URL (vLLM, SGLang, a "
                            "hosted API, editrl serve) instead of loading it here; repeat for several servers (each "
                            "group of candidates stays on one)")
    group.add_argument("--reward-model", metavar="NAME", help="with --reward-endpoint: the served model name "
                                                              "(default: the first of GET /v1/models)")
    group.add_argument("--reward-api-key-env", metavar="NAME", help="with --reward-endpoint: the environment "
                                                                    "variable holding the server's API key")
    group.add_argument("--reward-no-top-k", action="store_true", help="with --reward-endpoint: never send top_k "
                                                                      "(for hosted APIs that refuse it)")


def remote_reward_from(args: argparse.Namespace, kind: str, path: str):
    """The remote judge the --reward-endpoint flags describe, or None without them."""
    if not getattr(args, "reward_endpoint", None):
        if any(getattr(args, name, None) for name in ("reward_model", "reward_api_key_env", "reward_no_top_k")):
            raise InputError("--reward-model, --reward-api-key-env and --reward-no-top-k go with --reward-endpoint URL")
        return None
    if path:
        raise InputError(f"--reward {kind}:{path} with --reward-endpoint: a served judge's weights live on its "
                         f"server; give --reward {kind}")
    from .reward import load_reward
    extra = {"send_top_k": False} if args.reward_no_top_k else {}
    return load_reward(kind, endpoint=args.reward_endpoint, model=args.reward_model,
                       api_key_env=args.reward_api_key_env, **extra)


def load_reward_from(args: argparse.Namespace):
    import torch

    from .reward import KINDS, load_reward

    kind, _, path = args.reward.partition(":")
    if kind not in KINDS:
        raise InputError(f"--reward {args.reward}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    remote = remote_reward_from(args, kind, path)
    if remote is not None:
        return remote
    if kind == "programmatic":
        if not path:
            raise InputError("--reward programmatic needs the tasks it verifies: give programmatic:MANIFEST.jsonl "
                             "(a synthetic-task manifest with specs, e.g. written by write_synthetic)")
        from .data import read_manifest
        return load_reward("programmatic", tasks=read_manifest(path))
    if not path and not args.reward_preset:
        raise InputError(f"--reward {kind} needs weights: give --reward {kind}:DIR (a local folder) or "
                         "--reward-preset tiny")
    return load_reward(kind, path=path or None, preset=None if path else args.reward_preset, device=args.device,
                       dtype=getattr(torch, args.dtype), backend=args.reward_backend)


def load_policy_from(args: argparse.Namespace):
    import torch

    from .policy import load_policy

    if args.policy is None:
        return None
    dtype = getattr(torch, args.dtype)
    if args.policy == "tiny":
        return load_policy(args.family, preset="tiny", device=args.device, dtype=dtype)
    if not Path(args.policy).is_dir():
        raise MissingPathError(f"--policy {args.policy}: no such folder; give a local diffusers-format folder of "
                               f"a {args.family} model, or 'tiny'")
    return load_policy(args.family, path=args.policy, device=args.device, dtype=dtype)


# ---- editrl rerank --------------------------------------------------------------------------------------------
def demo_task_from(spec: str):
    """--task SEED:INDEX -> the demo's synthetic task `index` of `seed` (engine/demo/task.py: 16x16, remove one of
    1-2 shapes; the demo's held-out tasks are seed 9001, indices 0-63)."""
    from .engine.demo import task as demo_task

    seed, sep, index = spec.partition(":")
    if not sep or not seed.strip().lstrip("-").isdigit() or not index.strip().isdigit():
        raise InputError(f"--task {spec!r}: give SEED:INDEX of a demo task, e.g. --task "
                         f"{demo_task.HELDOUT_SEED}:3 (the demo's held-out tasks are seed {demo_task.HELDOUT_SEED}, "
                         f"indices 0-{demo_task.HELDOUT_SIZE - 1})")
    return demo_task.task(int(seed), int(index))


def load_demo_policy_from(args: argparse.Namespace):
    """--policy demo [--lora DIR]: the demo editor with its shipped warm-up, plus a LoRA `editrl demo` wrote."""
    from .engine.demo.pretrain import load_demo_editor

    if args.family != "flux-kontext":
        raise InputError(f"--policy demo is a flux-kontext model; drop --family {args.family}")
    if args.device != "cpu" or args.dtype != "float32":
        raise InputError("--policy demo runs as the demo trains it, on the CPU in float32; drop --device / --dtype")
    return load_demo_editor(args.lora)


def _rerank_inputs(args: argparse.Namespace):
    """(source, instruction, reward, policy, task or None) from the arguments, every inconsistency named."""
    task = None
    if args.task is not None:
        if args.image is not None or args.instruction is not None:
            raise InputError("--task gives the source image and the instruction; drop IMAGE and INSTRUCTION")
        task = demo_task_from(args.task)
        source, instruction = task.source_image(), task.instruction
    else:
        if args.image is None or args.instruction is None:
            raise InputError("give IMAGE and INSTRUCTION, or --task SEED:INDEX for a demo task")
        source, instruction = Path(args.image), args.instruction
        if not source.is_file():
            raise MissingPathError(f"source image {source} does not exist")
    if args.lora and args.policy != "demo":
        raise InputError("--lora goes with --policy demo (a diffusers folder carries its own LoRA loading)")
    if task is not None and args.reward in (None, "programmatic"):
        from .reward import load_reward
        reward = load_reward("programmatic", tasks=[task])
    elif args.reward is None:
        raise InputError("give --reward KIND[:DIR] (or --task SEED:INDEX, whose default reward is programmatic)")
    else:
        reward = load_reward_from(args)
    policy = load_demo_policy_from(args) if args.policy == "demo" else load_policy_from(args)
    return source, instruction, reward, policy, task


def _run_rerank(args: argparse.Namespace) -> None:
    from .serve.outputs import contact_sheet, write_json_atomic, write_png_atomic
    from .serve.rerank import rerank

    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise InputError(f"--n and --steps must be >= 1, got {args.n} and {args.steps}")
    source, instruction, reward, policy, task = _rerank_inputs(args)
    if args.steps is None:
        from .engine.demo.task import EVAL_STEPS
        args.steps = EVAL_STEPS if args.policy == "demo" else 28
    result = rerank(policy, reward, source, instruction, n=args.n, seed=args.seed, num_steps=args.steps,
                    solver=args.solver)
    out = Path(args.out)
    rewards = [c.reward for c in result.candidates]
    sheet = write_png_atomic(out / "contact_sheet.png",
                             contact_sheet([c.image for c in result.candidates], rewards, result.best_index))
    written = {"contact_sheet": sheet.name, "best": None, "candidates": []}
    if result.best_image is not None:
        written["best"] = write_png_atomic(out / "best.png", result.best_image).name
    elif (out / "best.png").exists():
        (out / "best.png").unlink()                 # no stale best from an earlier run beside this result
    if args.save_candidates:
        written["candidates"] = [str(write_png_atomic(out / "candidates" / f"{c.index:03d}.png", c.image)
                                     .relative_to(out)) for c in result.candidates]
    report = {**result.to_dict(), "source": args.image if task is None else f"task {args.task}",
              "policy_source": args.policy, "lora": args.lora, "reward_source": args.reward or "programmatic",
              "reward_metadata": reward.metadata(), "files": written}
    if task is not None:
        report["task"] = task.to_spec()
        write_png_atomic(out / "source.png", source)
        write_png_atomic(out / "target.png", task.target_image())
    write_json_atomic(out / "result.json", report)

    print(f"rerank: {args.n} candidates of {args.family} ({args.policy}{' + ' + args.lora if args.lora else ''}), "
          f"{args.steps} steps, seed {args.seed}; reward {result.reward_kind}"
          f"{' (shared-prefix group path)' if result.group_path else ''}")
    if task is not None:
        print(f"task {args.task}: {instruction!r}")
    for c in result.candidates:
        mark = "  <- best" if c.index == result.best_index else ""
        value = f"{c.reward:.4f}" if c.error is None else f"NaN ({c.error})"
        print(f"  #{c.index:<3d} seed {c.seed:<6d} reward {value}{_verdict(c.details)}{mark}")
    if result.error:
        print(f"editrl: warning: {result.error}", file=sys.stderr)
    print(f"wrote {out / 'result.json'}, {out / 'contact_sheet.png'}"
          + (f", {out / 'best.png'}" if written["best"] else " (no best.png: no candidate could be chosen)")
          + (f", {out / 'source.png'}, {out / 'target.png'}" if task is not None else ""))


def _verdict(details: dict) -> str:
    """The programmatic reward's object-level verdict of a candidate ('' for other rewards)."""
    if "named_edited" not in details:
        return ""
    kept = details.get("others_kept")
    return (f"  named {'edited' if details['named_edited'] else 'NOT edited'}"
            + ("" if kept is None else f", others {'kept' if kept else 'NOT kept'}"))


def add_rerank(subparsers) -> None:
    parser = subparsers.add_parser(
        "rerank", help="Best-of-N: sample N edits with a policy, keep the one the reward scores highest",
        description="Sample N edits of IMAGE under INSTRUCTION as one group (the pair encoded once, candidate i from "
                    "seed + i), score them through the reward's shared-prefix group path, and write OUT/best.png, "
                    "OUT/contact_sheet.png (every candidate with its reward) and OUT/result.json (atomically). "
                    "A NaN reward never wins; when all are NaN there is no best.png and the JSON says why.")
    parser.add_argument("image", nargs="?", help="the source image (PNG or JPEG); not with --task")
    parser.add_argument("instruction", nargs="?", help="the edit instruction; not with --task")
    _model_arguments(parser, policy_required=True, reward_required=False)
    demo = parser.add_argument_group("embedded demo")
    demo.add_argument("--task", metavar="SEED:INDEX", help="a synthetic demo task instead of IMAGE and INSTRUCTION "
                                                          "(its source, instruction and exact reward; e.g. 9001:3, "
                                                          "a held-out task of `editrl demo`); also writes "
                                                          "OUT/source.png and OUT/target.png")
    demo.add_argument("--lora", metavar="DIR", help="with --policy demo: a LoRA folder written by `editrl demo` "
                                                    "(runs/demo/lora)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--n", type=int, default=8, help="candidates to sample (default: 8)")
    sampling.add_argument("--seed", type=int, default=0, help="candidate i is sampled from seed + i (default: 0)")
    sampling.add_argument("--steps", type=int, default=None, help="sampling steps (default: 28; the demo's 8 "
                                                                   "with --policy demo)")
    sampling.add_argument("--solver", default="euler", choices=("euler", "dpm2"), help="ODE solver (default: euler)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="OUT", help="folder for best.png, contact_sheet.png, "
                                                                    "result.json")
    output.add_argument("--save-candidates", action="store_true", help="also write OUT/candidates/NNN.png")
    parser.set_defaults(run=_run_rerank)


# ---- editrl serve ---------------------------------------------------------------------------------------------
def serve_config(args: argparse.Namespace):
    from .serve.server import ServeConfig

    return ServeConfig(host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       max_queue=args.max_queue, timeout_s=args.timeout_s, max_body_mb=args.max_body_mb,
                       max_candidates=args.max_candidates, rerank_steps=args.rerank_steps, api_key=api_key_from(args),
                       model_name=args.served_model_name, prefix_cache_mb=args.prefix_cache_mb,
                       max_logprobs=args.max_logprobs, max_tokens=args.max_tokens)


def api_key_from(args: argparse.Namespace) -> str:
    """The key of --api-key, or of the environment variable --api-key-env names ("" = no key)."""
    if args.api_key and args.api_key_env:
        raise InputError("give --api-key or --api-key-env, not both")
    if not args.api_key_env:
        return args.api_key or ""
    import os
    key = os.environ.get(args.api_key_env, "")
    if not key:
        raise InputError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty; "
                         f"export {args.api_key_env}=<key> or pass --api-key")
    return key


def _run_serve(args: argparse.Namespace) -> None:
    try:
        from .serve.runner import serve_forever
        from .serve.server import create_app
    except ModuleNotFoundError as error:
        raise UserError(f"editrl serve needs the web stack, and {error.name!r} is not installed: "
                        "pip install 'editrl-engine[serve]'") from error

    from .serve.auth import is_loopback

    config = serve_config(args)               # bad settings fail before the models load
    if not is_loopback(args.host) and not config.api_key:
        print(f"editrl: warning: listening on {args.host}, not loopback, without an API key: anyone who can reach "
              "it can use it; set --api-key-env NAME (or --api-key)", file=sys.stderr)
    reward = load_reward_from(args)
    policy = load_policy_from(args)
    app = create_app(reward, policy, config)
    print(f"serving reward {reward.kind}" + (f" and policy {args.family} ({args.policy})" if policy else "")
          + f" on http://{args.host}:{args.port} (max batch {args.max_batch} candidates, max wait "
            f"{args.max_wait_ms} ms, queue {args.max_queue}" + ("; API key required" if config.api_key else "")
          + "); Ctrl-C drains and stops", file=sys.stderr)
    serve_forever(app, log_level=args.log_level)


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a reward (and Best-of-N reranking) over HTTP with dynamic batching",
        description="POST /v1/score (instruction, source, candidates as base64 PNG/JPEG or a multipart upload) -> "
                    "rewards and details; POST /v1/rerank (with --policy) -> the best and every candidate; "
                    "POST /v1/chat/completions and GET /v1/models (OpenAI-compatible, on the judge's model: the "
                    "protocol remote judges speak); "
                    "GET /healthz; GET /metrics (Prometheus); GET /openapi.json. Concurrent requests are scored "
                    "together (up to --max-batch candidates, waiting at most --max-wait-ms). SIGINT / SIGTERM "
                    "stop accepting and answer every request already admitted.")
    _model_arguments(parser, policy_required=False)
    http = parser.add_argument_group("http")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)")
    http.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    http.add_argument("--max-batch", type=int, default=32, help="candidates per model call (default: 32)")
    http.add_argument("--max-wait-ms", type=float, default=5.0,
                      help="how long to wait for more requests to fill a batch (default: 5)")
    http.add_argument("--max-queue", type=int, default=256,
                      help="requests waiting before 503 + Retry-After (default: 256)")
    http.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout, then 504 (default: 30)")
    http.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit, then 413 (default: 32)")
    http.add_argument("--max-candidates", type=int, default=64, help="candidates per /v1/score request "
                                                                     "(default: 64)")
    http.add_argument("--rerank-steps", type=int, default=28, help="sampling steps of /v1/rerank (default: 28)")
    http.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    access = parser.add_argument_group("access")
    access.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every route but "
                                                         "/healthz (401 otherwise); prefer --api-key-env")
    access.add_argument("--api-key-env", metavar="NAME", help="read the API key from this environment variable (it "
                                                              "stays out of the process list and shell history)")
    chat = parser.add_argument_group("chat completions")
    chat.add_argument("--served-model-name", default="", metavar="NAME",
                      help="the model name of /v1/models and chat answers (default: the reward's kind)")
    chat.add_argument("--prefix-cache-mb", type=float, default=256.0,
                      help="KV cache kept for shared prompt prefixes across requests, LRU (0 = off; default: 256)")
    chat.add_argument("--max-logprobs", type=int, default=20, help="most top_logprobs per request (default: 20)")
    chat.add_argument("--max-tokens", type=int, default=2048, help="most new tokens per choice, and the default "
                                                                    "(default: 2048)")
    parser.set_defaults(run=_run_serve)
