#!/usr/bin/env bash
# One prepared GPU run, at most 480 s in all (the wheel install included): bench/gpu_suite.py holds the plan
# (ordered steps, each with its command and time budget), its docs and the runner; this wrapper only starts
# the clock and hands over. From anywhere:
#
#   bash bench/gpu_suite.sh                  # on the GPU machine: install .whl/*.whl into /tmp/site, stage the
#                                            # package, CUDA tests, every benchmark; results and a summary in $OUT
#   bash bench/gpu_suite.sh --dry-run        # print every step, its command and budget, the total; check the plan
#   bash bench/gpu_suite.sh --dry-run --deep # ... and parse each bench step's arguments with the script's parser
#   bash bench/gpu_suite.sh --list-wheels    # the `pip download` command for the wheels to carry in .whl/
#   bash bench/gpu_suite.sh --only fused_ops,rollout   # some steps (install and staging always run)
#   bash bench/gpu_suite.sh --help           # the docs: wheel names, decisions, outputs
#
# Wheels to carry (see --help for why each): diffusers transformers peft accelerate safetensors tokenizers
# huggingface-hub hf-xet numpy pillow tqdm regex pyyaml requests urllib3 idna certifi charset-normalizer packaging
# psutil importlib-metadata zipp kernels lazy-importer opentelemetry-api tomlkit truststore httpx httpcore httpx2
# httpcore2 h11 anyio typer click shellingham rich markdown-it-py mdurl pygments annotated-doc fastapi starlette
# pydantic pydantic-core annotated-types typing-inspection uvicorn prometheus-client python-multipart pytest
# pluggy iniconfig. torch and triton (and torch's own requirements) are the machine's.
#
# PYTHON picks the interpreter (default python3: on the GPU machine, the one with torch; for --list-wheels, run it
# with the project's test environment activated so that the versions pinned are the ones the project is tested with).
set -uo pipefail
export GPU_SUITE_T0="${GPU_SUITE_T0:-$(date +%s.%N)}"
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
exec "${PYTHON:-python3}" bench/gpu_suite.py "$@"
