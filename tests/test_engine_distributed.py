"""torchrun-style placement on CPU with gloo: 2 policy ranks give the same parameters as 1 rank with the same global
batch (gradients really all-reduced through the fused losses), and a separate reward rank gives the same run as
colocated scoring while every reward is used exactly once."""
from __future__ import annotations

import faulthandler
import os
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from .engine_fakes import BrightnessReward, tiny_config
from .helpers import free_port


def _worker(rank: int, world: int, port: int, out_dir: str, overrides: list[str], algo: str, result_dir: str):
    faulthandler.enable()               # a crash in a rank prints every thread's Python stack to the test's stderr
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from editrl_engine.engine import Trainer
    from editrl_engine.engine.scoring import RewardLedger
    RewardLedger.audit = True                   # keep every sample's use count (`uses`) for the checks below
    trainer = Trainer(tiny_config(out_dir, *overrides, algo=algo), reward=BrightnessReward())
    summary = trainer.train()
    state = {"summary": summary}
    if summary["role"] == "policy":
        from editrl_engine.engine.sharding import full
        state.update(params=[full(p) for p in trainer.params], uses=dict(trainer.ledger.uses),
                     history=trainer.history)
    torch.save(state, os.path.join(result_dir, f"rank-{rank}.pt"))
    placement = trainer.placement
    del trainer, state                  # the sharded modules hold the process groups: drop them before closing
    placement.close()
    sys.stdout.flush(), sys.stderr.flush()
    # Results are on disk and the groups are closed. Skip interpreter teardown: torch keeps DTensor sharding caches
    # (which hold the device mesh and its gloo group) until exit and frees them there in no fixed order; that
    # teardown is torch's, not what this test checks, and it has aborted a rank once.
    os._exit(0)


def launch(world: int, tmp_path, overrides=(), algo="nft") -> list[dict]:
    results = tmp_path / f"results-{world}-{algo}"
    results.mkdir()
    context = mp.start_processes(_worker, args=(world, free_port(), str(tmp_path / f"run-{world}-{algo}"),
                                                list(overrides), algo, str(results)),
                                 nprocs=world, start_method="spawn", join=False)
    deadline = time.monotonic() + 300                      # a deadlock must fail the test, not hang CI
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world} ranks did not finish within 300 s (a collective is waiting on a rank that never "
                        "joins it)")
    return [torch.load(results / f"rank-{r}.pt", weights_only=False) for r in range(world)]


def single(tmp_path, overrides=(), algo="nft"):
    from editrl_engine.engine import Trainer
    from editrl_engine.engine.scoring import RewardLedger
    audit, RewardLedger.audit = RewardLedger.audit, True        # keep every sample's use count (`uses`)
    try:
        trainer = Trainer(tiny_config(tmp_path / f"single-{algo}", *overrides, algo=algo), reward=BrightnessReward())
    finally:
        RewardLedger.audit = audit                             # a ledger fixes its audit flag when built
    trainer.train()
    return trainer


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_policy_ranks_equal_one_rank(tmp_path, fsdp):
    overrides = ["run.steps=2", "optim.lr=1e-3"]
    ranks = launch(2, tmp_path, overrides + [f"pipeline.fsdp={str(fsdp).lower()}", "checkpoint.every=1"])
    one = single(tmp_path, overrides)
    for r in ranks:                                              # both ranks hold the same weights ...
        for a, b in zip(r["params"], ranks[0]["params"]):
            assert torch.equal(a, b)
    for a, b in zip(ranks[0]["params"], one.params):            # ... equal to one rank with the global batch
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(ranks[0]["params"][1::2], [torch.zeros_like(p) for p in
                                                                              ranks[0]["params"][1::2]])]
    assert any(moved), "lora_B never left zero: nothing was trained"
    # each rank consumed only its own half of the samples, and together every sample exactly once
    uses = [set(r["uses"]) for r in ranks]
    assert not uses[0] & uses[1] and uses[0] | uses[1] == set(one.ledger.uses)
    assert all(v == 1 for r in ranks for v in r["uses"].values())
    assert ranks[0]["history"][0]["reward_mean"] == pytest.approx(one.history[0]["reward_mean"], abs=1e-6)
    # the checkpoint holds the whole adapter (gathered from the shards under FSDP2), equal to the trained weights
    saved = torch.load(tmp_path / "run-2-nft" / "checkpoints" / "step-000002" / "trainer.pt", weights_only=False)
    for a, b in zip(saved["params"], ranks[0]["params"]):
        assert torch.equal(a, b)


def test_separate_reward_rank_equals_colocated_scoring(tmp_path):
    overrides = ["run.steps=2", "pipeline.placement='separate'", "pipeline.reward_ranks=1",
                 "sampling.rollout_batch=4"]
    policy_rank, reward_rank = launch(2, tmp_path, overrides, algo="grpo")
    assert reward_rank["summary"]["role"] == "reward"
    assert reward_rank["summary"]["images"] == 2 * 8 and reward_rank["summary"]["jobs"] == 2 * 2
    one = single(tmp_path, ["run.steps=2", "sampling.rollout_batch=4"], algo="grpo")
    for a, b in zip(policy_rank["params"], one.params):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-7)
    assert all(v == 1 for v in policy_rank["uses"].values()) and len(policy_rank["uses"]) == 16
