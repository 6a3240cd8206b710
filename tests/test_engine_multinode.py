"""Two nodes on loopback: two torchrun launchers (--nnodes 2, c10d rendezvous) train the same LoRA parameters in
one step as one process with the same global batch; with separate reward ranks each node scores on its own."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .helpers import free_port
from .test_engine_distributed import single

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 150                             # a rendezvous or collective that never completes fails, not hangs


def _launch_node(node: int, nproc: int, port: int, args: list[str], log) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--nproc-per-node={nproc}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=multinode-test",
               f"--rdzv-conf=is_host={int(node == 0)}", "--local-addr=127.0.0.1", "--max-restarts=0",
               "-m", "tests.torchrun_train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def two_nodes(tmp_path, nproc: int, overrides: list[str], algo: str = "nft") -> list[dict]:
    """Both launchers at once, as two machines would start them; the ranks' results in rank order."""
    results, log_path = tmp_path / "results", tmp_path / "two-nodes.log"
    results.mkdir()
    args = [str(tmp_path / "two-nodes"), str(results), algo, *overrides]
    port = free_port()
    with open(log_path, "w") as log:
        nodes = [_launch_node(n, nproc, port, args, log) for n in range(2)]
        deadline = time.monotonic() + DEADLINE_S
        while any(n.poll() is None for n in nodes) and time.monotonic() < deadline:
            time.sleep(0.5)
        for n in nodes:
            if n.poll() is None:
                n.kill()
            n.wait()
    codes = [n.returncode for n in nodes]
    assert codes == [0, 0], (f"two-node torchrun exited with {codes} (negative: killed after {DEADLINE_S} s):\n"
                             f"{log_path.read_text()[-6000:]}")
    return [torch.load(results / f"rank-{r}.pt", weights_only=False) for r in range(2 * nproc)]


def _assert_same_lora(ranks: list[dict], one) -> None:
    policy = [r for r in ranks if r["summary"]["role"] == "policy"]
    assert len(policy) == 2
    for a, b in zip(policy[0]["params"], one.params, strict=True):      # one process, the same global batch
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)
    for a, b in zip(policy[1]["params"], policy[0]["params"]):
        assert torch.equal(a, b)
    assert any(not torch.equal(b, torch.zeros_like(b)) for b in policy[0]["params"][1::2]), \
        "lora_B never left zero: nothing was trained"
    uses = [set(r["uses"]) for r in policy]                          # each node its own half, together all once
    assert not uses[0] & uses[1] and uses[0] | uses[1] == set(one.ledger.uses)


def test_two_nodes_train_the_same_lora_as_one_process(tmp_path):
    overrides = ["run.steps=1", "optim.lr=1e-3"]
    ranks = two_nodes(tmp_path, 1, overrides)
    assert sorted(r["env"]["GROUP_RANK"] for r in ranks) == ["0", "1"]
    _assert_same_lora(ranks, single(tmp_path, overrides))


@pytest.mark.skipif((os.cpu_count() or 1) < 4 and not os.environ.get("EDITRL_SLOW_TESTS"),
                    reason="4 ranks and 2 launchers on fewer than 4 cores: set EDITRL_SLOW_TESTS=1 to run")
def test_two_nodes_score_on_their_own_reward_ranks(tmp_path):
    overrides = ["run.steps=1", "optim.lr=1e-3"]
    ranks = two_nodes(tmp_path, 2, overrides + ["pipeline.placement='separate'", "pipeline.reward_ranks=2"])
    assert [r["summary"]["role"] for r in ranks] == ["policy", "reward", "policy", "reward"]
    assert all(r["served_by"] == {0: 1, 2: 3} for r in ranks)         # node 0: 0 -> 1, node 1: 2 -> 3
    nodes = [r["env"]["GROUP_RANK"] for r in ranks]                    # ... and torchrun's nodes agree
    assert nodes[0] == nodes[1] != nodes[2] == nodes[3]
    assert [r["summary"]["images"] for r in ranks[1::2]] == [4, 4]     # each scored its own node's group of 4
    _assert_same_lora(ranks, single(tmp_path, overrides))
