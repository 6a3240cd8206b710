"""Quiet runs: `editrl train` and the construction of the tiny policies and judges print the project's own lines
and nothing else (no library notices the project could avoid: transformers' torchvision fallback, diffusers'
"experimental feature" banner, Python warnings).

Each run happens in a fresh subprocess (warnings printed once per process, `warning_once` caches and import-time
notices would otherwise be hidden by whatever this test process imported first), from a temporary working
directory, with the libraries' verbosity and Python's warning filters left at their defaults.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

# Lines that libraries print and the project should never cause. A line matching any of these is noise even if
# it also looks like one of ours.
NOISE = [re.compile(p) for p in (
    r"requires torchvision",                                 # transformers: <X>ImageProcessor falls back to <X>Pil
    r"falling back to `",
    r"experimental feature",                                 # diffusers: set_attention_backend's banner
    r"\b(Future|Deprecation|PendingDeprecation|User|Runtime|Resource)Warning\b",
    r"^\s*warnings\.warn\(",                                 # the source line Python prints under a warning
    r"^\[(transformers|diffusers)\]",                        # transformers' / diffusers' logger prefix
    r"^(WARNING|INFO|DEBUG):",                               # a logging.lastResort / basicConfig record
    r"^Traceback \(most recent call last\)",
)]

TRAIN_LINE = re.compile(r"^step \d+: reward (nan|-?\d+\.\d+), \d+(\.\d+)? images/s; checkpoint \S+; run folder \S+$")
MODELS_DONE = "quiet-runs: models built"


def foreign_lines(text: str, own: list[re.Pattern]) -> list[str]:
    """The lines of `text` the project did not print: known library noise, or anything none of `own` matches."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [line for line in lines
            if any(p.search(line) for p in NOISE) or not any(p.fullmatch(line) for p in own)]


def start(args: list[str], cwd) -> subprocess.Popen:
    """`python args...` in `cwd` with the libraries' default verbosity and warning filters, stdout + stderr piped."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "TQDM_DISABLE")}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 180) -> str:
    try:
        text, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        text, _ = process.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{text}")
    assert process.returncode == 0, text
    return text


def test_the_classifier_finds_library_noise_among_our_lines():
    ours = "step 1: reward 0.5936, 3.80 images/s; checkpoint /tmp/q/checkpoints/step-000001; run folder /tmp/q"
    noisy = textwrap.dedent("""\
        Attention backends are an experimental feature and the API may be subject to change.
        [transformers] `CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`
        /venv/lib/python3.11/site-packages/foo.py:12: FutureWarning: `bar` is deprecated
          warnings.warn(
        /venv/lib/python3.11/site-packages/baz.py:3: UserWarning: something
        some other library line
        """) + ours + "\n"
    found = foreign_lines(noisy, [TRAIN_LINE])
    assert len(found) == 6 and ours not in found
    assert found[0].startswith("Attention backends") and found[-1] == "some other library line"
    assert foreign_lines(ours + "\n\n", [TRAIN_LINE]) == []
    assert foreign_lines("step 1: reward nan, 0.6 images/s; checkpoint c; run folder r\n", [TRAIN_LINE]) == []
    # a line of ours that carries a library's warning is still reported
    assert foreign_lines(ours + " UserWarning: x", [TRAIN_LINE, re.compile(".*")]) == [ours + " UserWarning: x"]


TRAIN = ["-m", "editrl_engine.cli", "train", "demo", "--set", "run.steps=1", "--set", "data.synthetic_tasks=8",
         "--set", "data.eval_tasks=2", "--set", "sampling.groups_per_step=1", "--set", "sampling.group_size=2",
         "--set", "sampling.num_steps=2", "--set", "sampling.eval_steps=2", "--set", "log.progress=false"]


MODELS = f"""
from editrl_engine.data import make_tasks, task_images
from editrl_engine.policy import load_policy
from editrl_engine.reward import load_reward

tasks = make_tasks(1, seed=0, size=32)
sources, _ = task_images(tasks)
sources, instructions = list(sources), [t.instruction for t in tasks]
for family in ("flux-kontext", "qwen-image-edit"):          # build, encode, schedule, LoRA save: the run path
    policy = load_policy(family, preset="tiny", attention="math")
    policy.add_lora(rank=2, alpha=2.0)
    cond = policy.encode(sources, instructions)
    policy.sigmas(2, cond)
    policy.save_lora("lora-" + family)
load_reward("mllm_logit", preset="tiny").score(sources, instructions, sources)
load_reward("mllm_logit", preset="tiny", family="qwen3-vl").score(sources, instructions, sources)
load_reward("editscore", preset="tiny", max_new_tokens=2)
load_reward("verifier", preset="tiny", sampling={{"max_new_tokens": 2}})
print({MODELS_DONE!r})
"""


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict[str, str]:
    """What `editrl train` (one full step of the demo, shrunk) and the tiny models' script print. The two
    subprocesses run side by side: most of each is importing and single-threaded setup."""
    train_dir, models_dir = tmp_path_factory.mktemp("train"), tmp_path_factory.mktemp("models")
    out = train_dir / "run"
    processes = {"train": start([*TRAIN, "--set", f"run.out_dir='{out}'"], cwd=train_dir),
                 "models": start(["-c", MODELS], cwd=models_dir)}
    try:
        printed = {name: finish(process) for name, process in processes.items()}
    finally:
        for process in processes.values():                  # one failed: do not leave the other running
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert (out / "checkpoints" / "step-000001" / "lora").is_dir()          # a full step, checkpoint included
    return printed


def test_editrl_train_prints_only_its_own_lines(printed):
    assert foreign_lines(printed["train"], [TRAIN_LINE]) == [], printed["train"]
    assert len(printed["train"].strip().splitlines()) == 1


def test_tiny_policies_and_judges_build_quietly(printed):
    assert foreign_lines(printed["models"], [re.compile(re.escape(MODELS_DONE))]) == [], printed["models"]
    assert MODELS_DONE in printed["models"]
