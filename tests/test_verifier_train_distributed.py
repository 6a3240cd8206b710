"""`editrl train-verifier` under torchrun on CPU (gloo, 2 ranks): after SFT both ranks hold the same LoRA, equal to
one process that splits each step's batch the same way and averages the two shards' gradients before AdamW; GCPO
steps keep the ranks identical (their gradients averaged too)."""
from __future__ import annotations

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from .helpers import free_port
from .test_verifier_train_run import config, rows


def _lora(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.peft.named_parameters() if ".default." in n and "lora_" in n}


def _worker(rank: int, world: int, port: int, out_dir: str, overrides: list[str], result_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo")
    from editrl_engine.verifier_train import trainer as trainer_module
    from editrl_engine.verifier_train.trainer import VerifierTrainer
    # the tiny model's 12-token traces never parse, so every GCPO advantage would be 0: score a trace by its length
    # instead, so that each rank's own pairs give it different, nonzero gradients
    trainer_module.trace_score = lambda principles, text: float(len(text) % 5)
    sft, prefs = rows()
    trainer = VerifierTrainer(config(out_dir, *overrides), sft_rows=sft, preference_rows=prefs)
    trainer.run()
    torch.save(_lora(trainer.model), os.path.join(result_dir, f"rank-{rank}.pt"))
    dist.destroy_process_group()


def launch(tmp_path, overrides: list[str]) -> list[dict]:
    results = tmp_path / "results"
    results.mkdir(parents=True)
    context = mp.start_processes(_worker, args=(2, free_port(), str(tmp_path / "run"), overrides, str(results)),
                                 nprocs=2, start_method="spawn", join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("2 verifier ranks did not finish within 300 s")
    return [torch.load(results / f"rank-{r}.pt") for r in range(2)]


def reference_sft(tmp_path, overrides: list[str]) -> dict[str, torch.Tensor]:
    """One process: each step's batch split as the ranks split it, the shards' gradients averaged, AdamW."""
    from editrl_engine.verifier_train.model import Item
    from editrl_engine.verifier_train.trainer import build_model, sft_loss, step_generator
    cfg = config(tmp_path / "reference", *overrides)
    model, (sft, _) = build_model(cfg), rows()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr, weight_decay=cfg.sft.weight_decay)
    for step in range(1, cfg.sft.steps + 1):
        picks = torch.randint(len(sft), (cfg.sft.batch,), generator=step_generator(cfg.run.seed, step)).tolist()
        optimizer.zero_grad(set_to_none=True)
        for shard in (picks[0::2], picks[1::2]):
            chosen = [sft[i] for i in shard]
            items = [Item(r.sources, r.edited, r.instruction, r.principles) for r in chosen]
            (sft_loss(model, model.batch(items, [model.encode_trace(r.trace) for r in chosen])) / 2).backward()
        optimizer.step()
    return _lora(model)


def test_two_ranks_sft_equals_the_averaged_shards_and_gcpo_keeps_them_equal(tmp_path):
    sft_only = ["sft.batch=4", "gcpo.steps=0"]
    ranks = launch(tmp_path / "sft", sft_only)
    expected = reference_sft(tmp_path, sft_only)
    assert ranks[0].keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0][name], ranks[1][name])
    both = launch(tmp_path / "gcpo", ["sft.batch=4", "gcpo.pairs=2"])
    changed = False
    for name in both[0]:
        assert torch.equal(both[0][name], both[1][name]), name
        changed |= not torch.equal(both[0][name], ranks[0][name])
    assert changed                                               # the GCPO steps moved the LoRA
