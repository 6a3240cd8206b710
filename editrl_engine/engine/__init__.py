"""The engine: the pipelined rollout -> score -> update loop, placement on one node, checkpoints and logs.

    from editrl_engine.engine import Trainer, load_config
    summary = Trainer(load_config("demo", ["run.steps=10"])).train()

- config.py       TrainConfig (TOML files + `--set` overrides)
- tasks.py        the run's tasks, group keys and source images
- distributed.py  torchrun placement: policy ranks, reward ranks, collectives
- algorithms/     the RL algorithms as objects (NFT, GRPO): rollout, advantages, backward, after-step work
- batch.py        the typed step data: Rollout, GRPOTrajectory, Batch (advantages, validity, split)
- rollouts.py     a step's rollouts on one rank, chunk by chunk, handed to the scorer
- scoring.py      scoring off the training thread (local thread or a reward rank), the reward ledger
- seeds.py        every random draw's seed from (run seed, step, sample, stream)
- timing.py       a step's timing metrics
- trainer.py      the loop, checkpoints, signals
- checkpoint.py   atomic checkpoint folders
- weights.py      full-weight safetensors (e.g. the demo's warm-up)
- evaluation.py   held-out reward
- watch.py        the gold-judge watch ([eval]): held-out samples scored by the training reward and a gold
                  judge, and the divergence (reward-hacking) alarm
- metrics.py, figures.py   JSONL / TensorBoard / progress bar; image grids and curves
- demo/           the embedded default run (`editrl demo`)
"""
from .config import ConfigError, TrainConfig, dump_toml, load_config


def __getattr__(name: str):
    if name == "Trainer":                     # imported on first use: the config alone stays light (CLI --help)
        from .trainer import Trainer
        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConfigError", "TrainConfig", "Trainer", "dump_toml", "load_config"]
