"""One rank of a tiny training run, launched by torchrun in the tests (`python -m tests.torchrun_train OUT_DIR
RESULTS ALGO [KEY=VALUE ...]` from the repository root): the tiny preset with the BrightnessReward fake; writes
its role, the roles it was placed with and, on a policy rank, the trained LoRA parameters to RESULTS/rank-R.pt."""
from __future__ import annotations

import faulthandler
import os
import sys

import torch

from tests.engine_fakes import BrightnessReward, tiny_config


def main(out_dir: str, results: str, algo: str, *overrides: str) -> None:
    faulthandler.enable()
    torch.set_num_threads(1)
    from editrl_engine.engine import Trainer
    from editrl_engine.engine.scoring import RewardLedger
    RewardLedger.audit = True           # keep every sample's use count (as the tests' own processes do)
    trainer = Trainer(tiny_config(out_dir, *overrides, algo=algo), reward=BrightnessReward())
    summary = trainer.train()
    placement = trainer.placement
    state = {"summary": summary, "rank": placement.rank, "policy_ranks": placement.policy_ranks,
             "reward_ranks": placement.reward_ranks, "served_by": placement.served_by,
             "env": {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")}}
    if summary["role"] == "policy":
        from editrl_engine.engine.sharding import full
        state.update(params=[full(p) for p in trainer.params], uses=dict(trainer.ledger.uses))
    torch.save(state, os.path.join(results, f"rank-{placement.rank}.pt"))
    del trainer, state                  # the modules hold the process groups: drop them before closing
    placement.close()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)                         # as tests/test_engine_distributed.py's workers: skip torch's teardown


if __name__ == "__main__":
    main(*sys.argv[1:])
