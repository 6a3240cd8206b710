#!/usr/bin/env python3
"""One prepared GPU run: install the carried wheels, stage the package, run the CUDA tests and every benchmark.

    bash bench/gpu_suite.sh                    # on the GPU machine, in the repository root: the plan, <= 480 s
    bash bench/gpu_suite.sh --dry-run          # anywhere: print the plan and check it; exit 1 on any problem
    bash bench/gpu_suite.sh --dry-run --deep   # ... and parse each bench step's arguments with the script's parser
    bash bench/gpu_suite.sh --list-wheels      # the `pip download` command that fills .whl/ (run it in the
                                               # project's test environment)
    bash bench/gpu_suite.sh --only fused_ops,reward   # some steps only (install and stage are always kept)

The GPU machine (one H200, torch 2.11 and Triton 3.6 preinstalled, Python 3.12) reaches no network, so every
other package comes as a wheel in .whl/ of the repository (untracked files travel with the working tree; do not
commit them). Wheels to carry (distribution names; --list-wheels pins the versions of the interpreter it runs
in and prints the download command, python 3.12, manylinux x86_64, --no-deps):

    runtime   diffusers transformers peft accelerate safetensors tokenizers huggingface-hub hf-xet numpy pillow
              tqdm regex pyyaml requests urllib3 idna certifi charset-normalizer packaging psutil
              importlib-metadata zipp kernels lazy-importer opentelemetry-api tomlkit truststore httpx httpcore
              httpx2 httpcore2 h11 anyio typer click shellingham rich markdown-it-py mdurl pygments
              annotated-doc
    serve     fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn
              prometheus-client python-multipart
    tests     pytest pluggy iniconfig

That is the closure of the project's requirements (pyproject: numpy diffusers transformers peft safetensors
pillow tqdm; the serve extra; httpx for bench/serve.py's clients; pytest) over the packages installed in
the project's test environment, less torch and what torch itself requires (filelock fsspec jinja2 markupsafe
mpmath networkx setuptools sympy typing-extensions triton: present wherever torch is).
tests/test_gpu_suite_plan.py recomputes that closure and fails when a wheel is missing from this list.

The plan (PLAN below; `--dry-run` prints it): each step runs under `timeout -k 5 <budget>` in the repository
root, its output in a log; a failed or timed-out step is recorded and the suite goes on. The required steps'
budgets plus RESERVE_S (the runner's own work: summary, archives) are asserted to fit TOTAL_S = 480 s, and a
deadline of TOTAL_S from the start of gpu_suite.sh bounds every step (a step gets min(budget, time left)).
"Extra" steps come last and only use the time the required steps left over (each needs at least its min_s):
their results are a bonus, never at the expense of the required ones.

Decisions:
  * The package is staged, not built: editrl_engine/ plus kernels/ (as editrl_engine/kernels, the layout
    pyproject's wheel mapping gives) plus configs/ are copied to /tmp/editrl_pkg, which goes on PYTHONPATH
    after /tmp/site (the wheels). No `pip install -e .`: that needs scikit-build-core, pybind11, CMake and a
    compiler there, and time. The C++ extension (editrl_engine._C) is not built: it is the fused ops' CPU
    backend only (the ops refuse CUDA tensors on it); every GPU step uses Triton, and EDITRL_REQUIRE_BACKENDS is
    "triton" alone. pytest runs as `python -P -m pytest` so that the repository root (which has editrl_engine/
    without its kernels) is not put first on sys.path; `python bench/<x>.py` puts bench/ there, not the root.
  * TRITON_INTERPRET=0 explicitly: tests/conftest.py sets it to 1 unless the variable is set, so unsetting it is
    not enough.
  * CUDA tests (pytest_cuda): bench/cuda_parity.py (every fused op's compiled Triton kernels on CUDA tensors
    against the float64 reference, forward and backward, at the benchmark shapes and a ragged one, float32 and
    bf16) and tests/test_policy_attention.py (its CUDA case: the bf16 attention probe picks a fused kernel).
    Not run there: the ops tests of tests/ (no CUDA cases: CPU tensors through the interpreter);
    tests/test_triton_gpu_split.py (fakes a GPU's launch geometry on CPU tensors, needs the interpreter);
    tests/test_backends.py (three of its tests assert the interpreter on CPU tensors and fail with
    TRITON_INTERPRET=0); tests/test_import_names.py (its probes run `python -I`, which ignores PYTHONPATH, so
    they would not see Hugging Face's `kernels` in /tmp/site and would call the repository's kernels/ a
    shadow of it; stage_and_probe's probe checks the staged layout instead: editrl_engine and its kernels
    import from /tmp/editrl_pkg). All of these run in the CPU suite.
  * Benchmark sizes: each fits its budget with margin on an H200 (estimates, not measurements: this suite has
    not run on a GPU yet). fused_ops: both FLUX sizes, every op, eager vs triton, no torch.compile (the compile
    variant of the two targeted ops is the extra step fused_ops_compile). rollout: the FLUX.1-Kontext-dev sized
    policy (12 B, bf16, random weights) at 512², batch 2 (the default is 8), 2 repeats, eager, attention cudnn
    and flash (sdpa only dispatches to one of them), no loader rows; 1024² is the extra step rollout_1024
    (--merge). reward: the 7B-sized Qwen2.5-VL judge, G = 12, 512², eager, without EditScore (its Avg@4
    generation, 64 tokens per judge call, takes minutes). e2e and serve: --quick (tiny models on the GPU: they
    check the engine's and the server's CUDA paths; the FLUX + 7B training step and the 7B server, several
    minutes each, need their own window). bench/demo.py is not run (EXCLUDED below).
  * Outputs ($OUT; at most 8 files come back, none deeper than $OUT/a/b/file): gpu_suite_summary.json (every
    step: command, budget, timeout, rc, status, wall seconds, the log's tail; the device; each result file's
    rows with errors and its targets' verdicts; rewritten after every step), gpu_suite_logs.tar.gz (every step's
    log and pytest's junit XML) and results/<benchmark>-<gpu-slug>.json (the bench/results/ files this run
    wrote; when more than MAX_RESULT_FILES, one gpu_results.tar.gz instead: unpack it with tar xzf).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 480            # one device call: install, every required step, the runner's own work
RESERVE_S = 10           # the runner's own work after the last step, and timeout's kill grace
KILL_GRACE_S = 5         # timeout -k: SIGKILL this long after SIGTERM
MIN_STEP_S = 5           # a step with less time left than this is skipped, not started
MAX_OUT_FILES = 8
MAX_RESULT_FILES = MAX_OUT_FILES - 2          # beside the summary and the logs archive
SITE = "/tmp/site"                            # the carried wheels, installed with --target
PKG = "/tmp/editrl_pkg"                       # the staged package
WORK = "/tmp/gpu_suite"                       # logs and the device probe, on the GPU machine
WHEEL_DIR = ".whl"

WHEELS = (
    # runtime: pyproject's requirements and what they require
    "diffusers", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "huggingface-hub", "hf-xet",
    "numpy", "pillow", "tqdm", "regex", "pyyaml", "requests", "urllib3", "idna", "certifi", "charset-normalizer",
    "packaging", "psutil", "importlib-metadata", "zipp", "kernels", "lazy-importer", "opentelemetry-api", "tomlkit",
    "truststore", "httpx", "httpcore", "httpx2", "httpcore2", "h11", "anyio", "typer", "click", "shellingham",
    "rich", "markdown-it-py", "mdurl", "pygments", "annotated-doc",
    # serve: the [serve] extra (bench/serve.py runs a server and its clients)
    "fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "uvicorn",
    "prometheus-client", "python-multipart",
    # tests
    "pytest", "pluggy", "iniconfig",
)
TORCH_PROVIDED = ("torch", "triton", "filelock", "fsspec", "jinja2", "markupsafe", "mpmath", "networkx",
                  "setuptools", "sympy", "typing-extensions")
# roots of the closure the wheels must cover (tests/test_gpu_suite_plan.py recomputes it)
WHEEL_ROOTS = ("numpy", "diffusers", "transformers", "peft", "safetensors", "pillow", "tqdm", "fastapi", "uvicorn",
               "prometheus-client", "python-multipart", "httpx", "pytest")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# bench scripts with a main that the plan does not run, and why
EXCLUDED = {
    # CPU acceptance of `editrl demo` over three RL seeds (about 2 min per seed); its JSON always names the CPU
    # (demo-cpu.json) and the demo's tiny editor has nothing to measure on a GPU.
    "bench/demo.py": "CPU-only acceptance run of the demo (3 seeds x ~2 min); writes demo-cpu.json whatever the device",
    # the demo with staleness 0 vs 1 over three seeds: the same CPU-only tiny editor, six runs
    "bench/demo_staleness.py": "CPU-only: the demo's learning with pipeline.staleness 0 vs 1 (6 runs x ~2 min)",
    # the verifier-training demo over three seeds: a CPU-only tiny verifier on the synthetic shapes task
    "bench/demo_verifier.py": "CPU-only acceptance run of `editrl demo-verifier` (3 seeds); writes "
                              "demo-verifier-cpu.json whatever the device",
    # why the verifier demo's VLM does not learn: SFT runs of the CPU-only tiny VLM verifier, minutes each
    "bench/verifier_image_dependence.py": "CPU-only diagnosis of the demo verifier's SFT (3 variants x ~6 min); "
                                          "writes verifier-image-dependence-cpu.json",
    # which held-out pair kinds the demo's SFT verifier gets wrong: reads demo_verifier.py's kept run folders
    "bench/verifier_pair_kinds.py": "CPU-only diagnosis of the demo verifier's SFT checkpoints (needs "
                                    "demo_verifier.py --work); writes verifier-pair-kinds-cpu.json",
    # this runner itself
    "bench/gpu_suite.py": "the runner of this plan",
}

STEP_ENV = {                                  # every step's environment, on top of the machine's
    "TRITON_INTERPRET": "0",                  # compiled kernels (tests/conftest.py would default it to 1)
    "EDITRL_REQUIRE_BACKENDS": "triton",      # a Triton that cannot run fails the tests instead of skipping them
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",   # no network there
    "HF_HUB_DISABLE_TELEMETRY": "1", "DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
    # caches under /tmp (the machine's home may not be writable): Triton's kernels, Hugging Face, matplotlib
    "TRITON_CACHE_DIR": f"{WORK}/cache/triton", "HF_HOME": f"{WORK}/cache/huggingface",
    "XDG_CACHE_HOME": f"{WORK}/cache", "MPLCONFIGDIR": f"{WORK}/cache/matplotlib",
}


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    budget_s: int                   # the step's timeout
    command: str                    # bash; {py} {site} {pkg} {work} {slug} are filled in at run time
    needs: tuple[str, ...] = ()     # repository files the command uses (the dry run checks they exist)
    bench: str | None = None        # a bench script whose flags `args` the dry run checks against its parser
    args: tuple[str, ...] = ()
    extra: bool = False             # runs only in time the required steps left over
    min_s: int = 0                  # an extra step starts only with at least this much time left
    python_path: bool = True        # PYTHONPATH = the wheels and the staged package
    what: str = ""


def bench_step(name: str, script: str, args: tuple[str, ...], budget_s: int, what: str, **kw) -> Step:
    return Step(name, budget_s, f"{{py}} {script} " + " ".join(shlex.quote(a) for a in args), needs=(script,),
                bench=script, args=args, what=what, **kw)


INSTALL = (f"if ! ls {WHEEL_DIR}/*.whl >/dev/null 2>&1; then "
           f"echo 'no {WHEEL_DIR}/*.whl: the machine must have every package already'; "
           f"elif {{py}} -m pip --version >/dev/null 2>&1; then ls {WHEEL_DIR}/*.whl | wc -l; "
           f"{{py}} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target {{site}} "
           f"{WHEEL_DIR}/*.whl; "
           f"else echo 'no pip: unzipping the wheels'; mkdir -p {{site}} && "
           f"for w in {WHEEL_DIR}/*.whl; do {{py}} -m zipfile -e \"$w\" {{site}} || exit 1; done; fi")
STAGE = ("rm -rf {pkg} && mkdir -p {pkg} && cp -r editrl_engine {pkg}/ && "
         "cp -r kernels {pkg}/editrl_engine/kernels && cp -r configs {pkg}/editrl_engine/configs && "
         "find {pkg} \\( -name __pycache__ -o -name '*.so' \\) -prune -exec rm -rf {} + && "
         "{py} bench/gpu_suite.py --probe {work}/device.json")
PYTEST_FILES = ("tests/test_policy_attention.py", "bench/cuda_parity.py")
PYTEST = ("{py} -P -m pytest -v -p no:cacheprovider -rfEs --junitxml={work}/logs/pytest_cuda.xml "
          + " ".join(PYTEST_FILES))

PLAN: tuple[Step, ...] = (
    Step("install_wheels", 40, INSTALL, python_path=False,
         what="the carried wheels into /tmp/site (pip --no-index --no-deps --no-compile --target)"),
    Step("stage_and_probe", 30, STAGE, needs=("editrl_engine/__init__.py", "kernels", "configs",
                                              "bench/gpu_suite.py"),
         what="copy the package to /tmp/editrl_pkg; import everything; record the device"),
    Step("pytest_cuda", 75, PYTEST, needs=PYTEST_FILES + ("tests/conftest.py", "tests/helpers.py",
                                                          "bench/kernel_cases.py"),
         what="Triton kernels on CUDA vs the float64 reference; the CUDA cases of tests/"),
    bench_step("fused_ops", "bench/fused_ops.py", ("--device", "cuda", "--no-compile"), 30,
               "every op at 512² and 1024², eager vs triton, 100 repeats -> kernels-<gpu>.json"),
    # budgets from the first H200 run (bench/results/*-nvidia-h200.json): the steps took 4, 23, 64, 17, 113 (the
    # 7B judge's random weights are built on the host), 43, 26 and 27 s
    bench_step("reward", "bench/reward.py",
               ("--device", "cuda", "--backends", "eager", "--skip-editscore", "--skip-remote"), 130,
               "7B-sized Qwen2.5-VL logit reward, G = 12, 512²: per-sample, batched, group -> reward-<gpu>.json"),
    bench_step("rollout", "bench/rollout.py",
               ("--device", "cuda", "--sizes", "512", "--batch", "2", "--repeats", "2", "--compile", "eager",
                "--attention", "cudnn,flash", "--loader-images", "0"), 60,
               "FLUX.1-Kontext-dev sized, 512², batch 2, grpo and nft, eager -> rollout-<gpu>.json"),
    bench_step("e2e", "bench/e2e.py", ("--device", "cuda", "--quick", "--skip-separate"), 40,
               "the training engine vs the plain loop, tiny models on the GPU -> e2e-<gpu>.json"),
    bench_step("serve", "bench/serve.py", ("--device", "cuda", "--quick"), 45,
               "the reward server over loopback HTTP, tiny judge on the GPU -> serve-<gpu>.json"),
    # extras: only in the time left over
    bench_step("fused_ops_compile", "bench/fused_ops.py",
               ("--device", "cuda", "--ops", "sde_logprob,nft_loss",
                "--out", "bench/results/kernels-compile-{slug}.json"),
               150, "the targeted ops with the torch.compile variant -> kernels-compile-<gpu>.json",
               extra=True, min_s=60),
    bench_step("rollout_1024", "bench/rollout.py",
               ("--device", "cuda", "--sizes", "1024", "--batch", "2", "--repeats", "2", "--compile", "eager",
                "--attention", "cudnn,flash", "--rollouts", "grpo", "--loader-images", "0", "--merge"),
               120, "1024² rows merged into rollout-<gpu>.json (the matmul-share target)", extra=True, min_s=60),
    bench_step("reward_remote", "bench/reward.py",
               ("--device", "cuda", "--backends", "eager", "--skip-editscore",
                "--out", "bench/results/reward-remote-{slug}.json"), 300,
               "the 7B-sized logit judge also served by editrl serve on loopback: c = 1 / 8 / 32, prefix cache on / "
               "off, two servers with group or per-request routing -> reward-remote-<gpu>.json", extra=True,
               min_s=200),
    bench_step("verifier_train", "bench/verifier_train.py", ("--device", "cuda"), 240,
               "verifier training, Qwen2.5-VL-7B sized (built on the GPU), 512²: SFT and GCPO step time, trace "
               "sampling with and without the shared prefix -> verifier-train-<gpu>.json", extra=True, min_s=120),
    bench_step("rollout_families", "bench/rollout.py",
               ("--device", "cuda", "--family", "qwen-image-edit-plus,flux2", "--sizes", "512", "--batch", "2",
                "--repeats", "2", "--compile", "eager", "--attention", "cudnn,flash", "--loader-images", "0",
                "--merge"),
               300, "Qwen-Image-Edit-2509 and FLUX.2 [klein] 4B sized rows (1 and 2 references, built on the host) "
                    "merged into rollout-<gpu>.json", extra=True, min_s=180),
)


def required(plan) -> list[Step]:
    return [s for s in plan if not s.extra]


def required_total(plan) -> int:
    return sum(s.budget_s for s in required(plan)) + RESERVE_S


assert required_total(PLAN) <= TOTAL_S, f"the required steps need {required_total(PLAN)} s > {TOTAL_S} s"


def slug(text: str) -> str:
    """bench/common.py's slug: 'NVIDIA H200' -> 'nvidia-h200' (kept in step; tests compare the two)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fill(command: str, **values: str) -> str:
    """The command with {py} {site} ... replaced; other braces (find's {}) stay."""
    for key, value in values.items():
        command = command.replace("{" + key + "}", value)
    return command


# ---------------------------------------------------------------------------------------------------------
# checks (the dry run)
# ---------------------------------------------------------------------------------------------------------
def parser_flags(script: Path) -> set[str]:
    """The option strings of every add_argument call in a script (read from its source, nothing imported)."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.startswith("-")}
    return flags


def has_main(script: Path) -> bool:
    """A benchmark is a bench script that runs as a program: it has an `if __name__ == "__main__":` block."""
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [n for n in (node.test.left, *node.test.comparators)]
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                    isinstance(n, ast.Constant) and n.value == "__main__" for n in names):
                return True
    return False


def benchmarks(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "bench").glob("*.py") if has_main(p))


def check_plan(plan, root: Path = ROOT, excluded: dict[str, str] | None = None) -> list[str]:
    """Every problem of a plan: budgets, names, missing files, flags a script does not take, benchmarks that
    are neither planned nor excluded with a reason. Empty when the plan is good."""
    excluded = EXCLUDED if excluded is None else excluded
    problems = []
    names = [s.name for s in plan]
    if len(set(names)) != len(names):
        problems.append(f"step names repeat: {names}")
    for s in plan:
        if not (isinstance(s.budget_s, int) and s.budget_s > 0):
            problems.append(f"{s.name}: budget {s.budget_s!r} is not a positive whole number of seconds")
        if s.extra and not 0 < s.min_s <= s.budget_s:
            problems.append(f"{s.name}: an extra step needs 0 < min_s <= budget_s, got {s.min_s}, {s.budget_s}")
        for need in s.needs + ((s.bench,) if s.bench else ()):
            if not (root / need).exists():
                problems.append(f"{s.name}: {need} does not exist")
        if s.bench and (root / s.bench).is_file():
            flags = parser_flags(root / s.bench)
            unknown = [a.split("=", 1)[0] for a in s.args if a.startswith("-") and a.split("=", 1)[0] not in flags]
            if unknown:
                problems.append(f"{s.name}: {s.bench} takes no {', '.join(unknown)} "
                                f"(it takes {', '.join(sorted(flags))})")
    if required_total(plan) > TOTAL_S:
        problems.append(f"required budgets {sum(s.budget_s for s in required(plan))} s + reserve {RESERVE_S} s = "
                        f"{required_total(plan)} s > {TOTAL_S} s")
    planned = {s.bench for s in plan if s.bench} | {n for s in plan for n in s.needs}
    for script in benchmarks(root):
        if script not in planned and not excluded.get(script, "").strip():
            problems.append(f"{script} is a benchmark (it has a main) that no step runs and EXCLUDED does not list "
                            "with a reason")
    for script in excluded:
        if not (root / script).exists():
            problems.append(f"EXCLUDED names {script}, which does not exist")
    return problems


DEEP_PROBE = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for script, args in json.loads(sys.argv[2]):
    name = script.rsplit("/", 1)[-1][:-3]
    try:
        module = importlib.import_module(name)
        module.parse_args(args)
        out[script + " " + " ".join(args)] = None
    except SystemExit as exc:
        out[script + " " + " ".join(args)] = f"its parser exited with {exc.code}"
    except Exception as exc:
        out[script + " " + " ".join(args)] = f"{type(exc).__name__}: {exc}"
print("DEEP " + json.dumps(out))
"""


def deep_check(plan, root: Path = ROOT, python: str = sys.executable) -> list[str]:
    """Each bench step's arguments parsed by the script's own parse_args (choices and values too), in one
    fresh interpreter with bench/ first on sys.path, as `python bench/<x>.py` has it."""
    specs = [(s.bench, [fill(a, slug="gpu") for a in s.args]) for s in plan if s.bench]
    done = subprocess.run([python, "-c", DEEP_PROBE, str(root / "bench"), json.dumps(specs)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DEEP ")]
    if done.returncode != 0 or not lines:
        return [f"deep check failed to run: {done.stderr.strip()[-2000:]}"]
    return [f"{call}: {error}" for call, error in json.loads(lines[-1][5:]).items() if error]


def dry_run(plan=PLAN, root: Path = ROOT, deep: bool = False) -> int:
    print(f"GPU suite plan: {len(plan)} steps, run in the repository root, each under `timeout -k {KILL_GRACE_S} "
          f"<budget>`, within a {TOTAL_S} s deadline\n")
    width = max(len(s.name) for s in plan)
    for i, s in enumerate(plan, 1):
        kind = f"extra, needs >= {s.min_s} s left" if s.extra else "required"
        print(f"{i:2d}. {s.name:<{width}}  budget {s.budget_s:4d} s  ({kind})  {s.what}")
        print(f"    $ {fill(s.command, py='python3', site=SITE, pkg=PKG, work=WORK, slug='<gpu-slug>')}")
    req = sum(s.budget_s for s in required(plan))
    print(f"\ntotal: required steps {req} s (install included) + runner reserve {RESERVE_S} s = "
          f"{required_total(plan)} s <= {TOTAL_S} s; extra steps (up to "
          f"{sum(s.budget_s for s in plan if s.extra)} s) use only the time left over")
    print("excluded benchmarks:")
    for script, why in EXCLUDED.items():
        print(f"  {script}: {why}")
    print(f"wheels to carry in {WHEEL_DIR}/ ({len(WHEELS)}; `--list-wheels` prints the download command): "
          + " ".join(WHEELS))
    problems = check_plan(plan, root)
    if deep and not problems:
        problems += deep_check(plan, root)
    if problems:
        print("\nPLAN PROBLEMS:")
        for p in problems:
            print(f"  - {p}")
        return 1
    checked = "files exist, flags known to each script's parser" + (", arguments parsed by each script" if deep else "")
    print(f"\nplan OK: {checked}, budgets fit, every benchmark planned or excluded")
    return 0


# ---------------------------------------------------------------------------------------------------------
# wheels
# ---------------------------------------------------------------------------------------------------------
def pinned_wheels() -> tuple[list[str], list[str]]:
    """NAME==VERSION for each wheel installed in this interpreter, and the names that are not installed."""
    pins, missing = [], []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return pins, missing


def download_command(pins: list[str]) -> str:
    platforms = " ".join(f"--platform {p}" for p in PLATFORMS)
    return (f"python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
            f"{platforms} -d {WHEEL_DIR} " + " ".join(pins))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots, skip=frozenset()) -> set[str]:
    """Installed distributions reachable from `roots` through requirements that apply on Linux x86_64, 3.12."""
    from packaging.requirements import Requirement
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    seen, stack = set(), [_norm(r) for r in roots]
    while stack:
        name = stack.pop()
        if name in seen or name in skip:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue                    # not installed here: nothing to follow
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(env):
                stack.append(_norm(requirement.name))
    return seen


def uncovered_wheels() -> list[str]:
    """What this interpreter's packages need beyond WHEELS (the carried wheels would not import there)."""
    provided = closure(["torch", "triton"]) | {_norm(n) for n in TORCH_PROVIDED}
    needed = closure(WHEEL_ROOTS, skip=frozenset(provided))
    return sorted(needed - {_norm(n) for n in WHEELS})


def list_wheels() -> int:
    uncovered = uncovered_wheels()
    if uncovered:
        print(f"# the packages of {sys.executable} also need: {' '.join(uncovered)}; add them to WHEELS in "
              "bench/gpu_suite.py (and its docs)", file=sys.stderr)
        return 1
    pins, missing = pinned_wheels()
    print(f"# {len(pins)} wheels, versions of {sys.executable}; run in the repository root (the machine's "
          f"torch and triton, and {', '.join(TORCH_PROVIDED[2:])}, are not carried):")
    print(download_command(pins))
    if missing:
        print(f"# not installed here, so not carried (nothing here needs them): {' '.join(missing)}",
              file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------------
# the probe (stage_and_probe runs it with the staged PYTHONPATH)
# ---------------------------------------------------------------------------------------------------------
PROBE_IMPORTS = ("numpy", "PIL", "safetensors", "tqdm", "transformers", "diffusers", "peft", "accelerate", "fastapi",
                 "uvicorn", "httpx", "prometheus_client", "python_multipart", "pytest", "triton")


def probe(path: Path) -> int:
    """Import what the steps need, print versions and backends, write the device to `path`."""
    import importlib

    import torch

    failed = []
    for name in PROBE_IMPORTS:
        try:
            module = importlib.import_module(name)
            print(f"  {name} {getattr(module, '__version__', '?')} from {getattr(module, '__file__', '?')}")
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    import editrl_engine
    print(editrl_engine.info())
    try:                                        # the kernels through the package, as the staged layout has them
        from editrl_engine import triton_launchers
        from editrl_engine.kernels import sde
        print(f"  editrl_engine.kernels.sde from {sde.__file__}; launchers {triton_launchers.__name__}")
        if not Path(sde.__file__).resolve().is_relative_to((Path(PKG) / "editrl_engine" / "kernels").resolve()):
            failed.append(f"editrl_engine.kernels imports from {sde.__file__}, not the staged {PKG}")
    except Exception as exc:
        failed.append(f"editrl_engine.kernels: {type(exc).__name__}: {exc}")
    device = {"cuda": torch.cuda.is_available(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
              "python": sys.version.split()[0], "editrl_engine": editrl_engine.__file__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device.update(name=props.name, slug=slug(props.name), capability=f"{props.major}.{props.minor}",
                      memory_gib=round(props.total_memory / 2**30, 1), count=torch.cuda.device_count())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(device, indent=1))
    print(json.dumps(device))
    if not Path(editrl_engine.__file__).resolve().is_relative_to(Path(PKG).resolve()):
        failed.append(f"editrl_engine imports from {editrl_engine.__file__}, not the staged {PKG}")
    if not torch.cuda.is_available():
        failed.append("torch sees no CUDA device")
    for f in failed:
        print(f"PROBE FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def nvidia_smi() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def summarize_result(path: Path) -> dict:
    """What a reader needs first from a bench result file: its device, rows with errors, targets' verdicts."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"file": path.name, "error": f"unreadable: {exc}"}
    rows = data.get("rows") or []
    errors = [r.get("error") for r in rows if isinstance(r, dict) and r.get("error")]
    return {"file": path.name, "benchmark": data.get("benchmark"), "device": (data.get("device") or {}).get("name"),
            "rows": len(rows), "rows_with_error": len(errors), "first_errors": errors[:3],
            "targets": [{"target": t.get("target"), "passed": t.get("passed"), "measured": t.get("measured")}
                        for t in data.get("targets") or [] if isinstance(t, dict)]}


class Runner:
    def __init__(self, plan, *, root: Path, out: Path, work: Path, results: Path, t0: float, total_s: float,
                 python: str = sys.executable):
        self.plan, self.root, self.out, self.work, self.results = plan, root, out, work, results
        self.t0, self.total_s, self.python = t0, total_s, python
        self.logs = work / "logs"
        self.records: list[dict] = []
        self.device: dict = {"nvidia_smi": nvidia_smi()}
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def elapsed(self) -> float:
        return time.time() - self.t0

    def env(self, step: Step) -> dict:
        env = {**os.environ, **STEP_ENV}
        if step.python_path:
            env["PYTHONPATH"] = os.pathsep.join([SITE, PKG] + ([os.environ["PYTHONPATH"]]
                                                              if os.environ.get("PYTHONPATH") else []))
        return env

    def slug(self) -> str:
        return self.device.get("slug") or slug((self.device.get("nvidia_smi") or "unknown-gpu").split(",")[0])

    def run_step(self, index: int, step: Step) -> dict:
        left = self.total_s - RESERVE_S - self.elapsed()
        allowed = int(min(step.budget_s, left))
        record = {"step": step.name, "extra": step.extra, "budget_s": step.budget_s, "what": step.what,
                  "command": fill(step.command, py=self.python, site=SITE, pkg=PKG, work=str(self.work),
                                  slug=self.slug())}
        log = self.logs / f"{index:02d}-{step.name}.log"
        needed = step.min_s if step.extra else min(MIN_STEP_S, step.budget_s)
        if allowed < needed:
            print(f"[{self.elapsed():6.1f} s] {step.name}: SKIPPED, {max(left, 0):.0f} s left (needs {needed} s)",
                  flush=True)
            return {**record, "status": "skipped: out of time", "rc": None, "wall_s": 0.0, "timeout_s": allowed}
        print(f"[{self.elapsed():6.1f} s] {step.name}: start, timeout {allowed} s", flush=True)
        begin = time.time()
        with open(log, "w") as sink:
            sink.write(f"$ {record['command']}\n")
            sink.flush()
            try:
                done = subprocess.run(["timeout", "-k", str(KILL_GRACE_S), str(allowed), "bash", "-c",
                                       record["command"]], cwd=self.root, env=self.env(step), stdout=sink,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=allowed + KILL_GRACE_S + 10)
                rc = done.returncode
            except subprocess.TimeoutExpired:
                rc = 137
        wall = round(time.time() - begin, 1)
        status = "ok" if rc == 0 else "timeout" if rc in (124, 137) else "failed"
        record.update(status=status, rc=rc, wall_s=wall, timeout_s=allowed, log=log.name,
                      log_tail=tail(log, 12 if rc == 0 else 40))
        print(f"[{self.elapsed():6.1f} s] {step.name}: {status.upper()} (rc {rc}) in {wall} s", flush=True)
        if rc != 0:
            print("    | " + tail(log, 15).replace("\n", "\n    | "), flush=True)
        return record

    def read_device(self) -> None:
        try:
            self.device.update(json.loads((self.work / "device.json").read_text()))
        except (OSError, ValueError):
            pass

    def new_results(self) -> list[Path]:
        return sorted(p for p in self.results.glob("*.json") if p.stat().st_mtime >= self.t0 - 1)

    def publish(self, final: bool = False) -> None:
        """The summary, the results and (at the end) the logs archive under $OUT; never more than 8 files."""
        results = self.new_results()
        folder, archive = self.out / "results", self.out / "gpu_results.tar.gz"
        shutil.rmtree(folder, ignore_errors=True)
        archive.unlink(missing_ok=True)
        if len(results) <= MAX_RESULT_FILES:
            if results:
                folder.mkdir(parents=True, exist_ok=True)
                for p in results:
                    shutil.copy2(p, folder / p.name)
            shipped = [f"results/{p.name}" for p in results]
        else:
            with tarfile.open(archive, "w:gz") as tar:
                for p in results:
                    tar.add(p, arcname=f"results/{p.name}")
            shipped = [archive.name]
        if final:
            with tarfile.open(self.out / "gpu_suite_logs.tar.gz", "w:gz") as tar:
                for p in sorted(self.logs.iterdir()):
                    tar.add(p, arcname=f"logs/{p.name}")
        summary = {
            "suite": "bench/gpu_suite.py", "started_utc": self.started, "finished": final,
            "wall_s": round(self.elapsed(), 1), "deadline_s": self.total_s, "reserve_s": RESERVE_S,
            "required_budget_s": required_total(self.plan) - RESERVE_S,
            "device": {**self.device, "slug": self.slug()}, "steps": self.records,
            "results": [summarize_result(p) for p in results],
            "out_files": ["gpu_suite_summary.json"] + (["gpu_suite_logs.tar.gz"] if final else []) + shipped,
            "env": STEP_ENV, "python_path": [SITE, PKG],
        }
        tmp = self.out / ".gpu_suite_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_suite_summary.json")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.logs, ignore_errors=True)          # a warm machine keeps /tmp: no stale logs ...
        (self.work / "device.json").unlink(missing_ok=True)    # ... nor a stale probe
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        print(f"GPU suite: {len(self.plan)} steps, deadline {self.total_s:.0f} s, GPU {self.device['nvidia_smi']}, "
              f"out {self.out}", flush=True)
        for index, step in enumerate(self.plan, 1):
            self.records.append(self.run_step(index, step))
            self.read_device()
            self.publish()
        self.publish(final=True)
        width = max([len(r["step"]) for r in self.records] + [4])
        print(f"\n{'step':<{width}}  {'status':<20}  {'rc':>4}  {'wall s':>7}  {'budget':>6}")
        for r in self.records:
            print(f"{r['step']:<{width}}  {r['status']:<20}  {str(r['rc']):>4}  {r['wall_s']:7.1f}  {r['budget_s']:6d}")
        summary = json.loads((self.out / "gpu_suite_summary.json").read_text())
        for result in summary["results"]:
            verdicts = [{True: "PASS", False: "FAIL", None: "n/e"}[t["passed"]] for t in result.get("targets", [])]
            print(f"  {result['file']}: {result.get('rows')} rows, {result.get('rows_with_error')} with an error; "
                  f"targets {' '.join(verdicts) or '-'}")
        print(f"device: {summary['device'].get('name') or summary['device'].get('nvidia_smi')}; "
              f"{self.elapsed():.0f} s in all; wrote {', '.join(summary['out_files'])} to {self.out}")
        failed = [r["step"] for r in self.records if r["status"] not in ("ok",) and not r["extra"]]
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check it; run nothing")
    parser.add_argument("--deep", action="store_true", help="with --dry-run: parse each bench step's arguments with "
                                                            "the script's own parser (imports torch and the project)")
    parser.add_argument("--list-wheels", action="store_true", help="print the pip download command for .whl/")
    parser.add_argument("--only", type=lambda text: text.split(","), help="comma-separated steps to run "
                        "(install_wheels and stage_and_probe are always run)")
    parser.add_argument("--out", type=Path, help="where the results go (default: $OUT, else /tmp/gpu_suite/out)")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args.probe)
    if args.list_wheels:
        return list_wheels()
    plan = PLAN
    if args.only:
        unknown = [n for n in args.only if n not in {s.name for s in PLAN}]
        if unknown:
            parser.error(f"--only: no step {', '.join(unknown)}; steps: {', '.join(s.name for s in PLAN)}")
        plan = tuple(s for s in PLAN if s.name in args.only or s.name in ("install_wheels", "stage_and_probe"))
    if args.dry_run:
        return dry_run(plan, ROOT, deep=args.deep)
    out = args.out or Path(os.environ.get("OUT") or f"{WORK}/out")
    t0 = float(os.environ.get("GPU_SUITE_T0") or time.time())
    runner = Runner(plan, root=ROOT, out=out, work=Path(WORK), results=ROOT / "bench" / "results", t0=t0,
                    total_s=TOTAL_S)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
