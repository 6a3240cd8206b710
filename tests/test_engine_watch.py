"""The gold-judge watch: the [eval] config, the divergence alarm on hand-written sequences, the detail rates, a
tiny run whose training reward rises while a fake gold judge falls (the alarm fires at the evaluation it should,
warns in log.txt / stderr / metrics.jsonl, and stops the run with a checkpoint), evaluation samples that do not
change while the policy does not, and a watch that costs nothing when it is off."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from editrl_engine.engine import ConfigError, Trainer, dump_toml, load_config
from editrl_engine.engine.checkpoint import load_torch
from editrl_engine.engine.config import REWARD_KINDS, EvalConfig
from editrl_engine.engine.metrics import read_metrics
from editrl_engine.engine.watch import DivergenceAlarm, detail_rates, held_out_tasks
from editrl_engine.reward.base import RewardBatch, RewardModel, check_triples

from .engine_fakes import BrightnessReward, tiny_config

HAS_TB = importlib.util.find_spec("tensorboard") is not None


# ---- fakes ------------------------------------------------------------------------------------------------------
class RisingReward(BrightnessReward):
    """A training reward the policy 'games': 0.1 x brightness (spread within a group) + 0.05 per call, so every
    evaluation sees a higher training reward than the one before. Records every batch of images it scores."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def score(self, sources, instructions, edited, **options):
        batch = super().score(sources, instructions, edited)
        self.seen.append(torch.stack([torch.as_tensor(e) for e in edited]))
        batch.reward = 0.1 * batch.reward + 0.05 * self.calls
        return batch


class FallingGold(RewardModel):
    """A gold judge that scores lower at each call (0.9 - 0.1 x calls), with verifier-like details."""
    kind = "falling-gold"

    def __init__(self):
        self.calls = 0
        self.seen: list[torch.Tensor] = []

    def score(self, sources, instructions, edited, **_):
        n = check_triples(sources, instructions, edited)
        self.calls += 1
        self.seen.append(torch.stack([torch.as_tensor(e) for e in edited]))
        details = [{"named_edited": i % 2 == 0, "others_kept": True, "success": 10.0 * i / n, "answer": "yes",
                    "probabilities": [0.5, 0.5]} for i in range(n)]
        return RewardBatch(torch.full((n,), 0.9 - 0.1 * self.calls), details)


def watch_config(out_dir, *overrides: str):
    """The tiny run with the watch on: 3 held-out tasks, every step, the alarm after 2 diverging evaluations."""
    return tiny_config(out_dir, "eval.every=1", "data.eval_tasks=3", "eval.alarm_evals=2", "eval.alarm_tolerance=0.01",
                       "sampling.eval_steps=3", "eval.gold.kind='programmatic'", *overrides)


# ---- the config ---------------------------------------------------------------------------------------------------
def test_eval_config_defaults_are_off_and_round_trip(tmp_path):
    e = load_config(None).eval
    assert e == EvalConfig() and e.every == 0 and not e.gold.enabled and e.stop_on_divergence is False
    assert (e.alarm_evals, e.alarm_tolerance, e.samples, e.seed) == (2, 0.01, 1, 1234)
    config = load_config(None, ["eval.every=5", "eval.stop_on_divergence=true", "eval.gold.kind='mllm_logit'",
                                "eval.gold.preset='tiny'", "eval.samples=2", "eval.alarm_tolerance=0"])
    assert config.eval.alarm_tolerance == 0.0 and isinstance(config.eval.alarm_tolerance, float)
    path = tmp_path / "again.toml"
    path.write_text(dump_toml(config))
    assert load_config(path) == config and "[eval.gold]" in path.read_text()
    combined = load_config(None, ["eval.gold.weights={mllm_logit = 0.7, programmatic = 0.3}"])
    assert combined.eval.gold.enabled and combined.eval.gold.weights == {"mllm_logit": 0.7, "programmatic": 0.3}
    path.write_text(dump_toml(combined))
    assert load_config(path) == combined


def test_the_configs_reward_kinds_are_the_reward_packages():
    from editrl_engine.engine.config import DTYPE_NAMES
    from editrl_engine.engine.trainer import DTYPES
    from editrl_engine.reward import KINDS
    assert set(REWARD_KINDS) == set(KINDS)
    assert set(DTYPE_NAMES) == set(DTYPES)                  # what eval.gold.dtype accepts, the trainer can build


@pytest.mark.parametrize("override, words", [
    ("eval.evry=1", ["eval.evry", "valid keys", "every"]),
    ("eval.gold.knd='x'", ["eval.gold.knd", "valid keys", "kind"]),
    ("eval.every=1.5", ["eval.every", "int"]),
    ("eval.every=-1", ["eval.every", ">= 0"]),
    ("eval.stop_on_divergence=1", ["eval.stop_on_divergence", "true or false"]),
    ("eval.alarm_tolerance='a'", ["eval.alarm_tolerance", "float"]),
    ("eval.alarm_tolerance=-0.1", ["eval.alarm_tolerance", ">= 0"]),
    ("eval.alarm_evals=0", ["eval.alarm_evals", ">= 1"]),
    ("eval.samples=0", ["eval.samples", ">= 1"]),
    ("eval.gold.kind='clip'", ["eval.gold.kind", "mllm_logit"]),
    ("eval.gold.weights={clip = 1.0}", ["eval.gold.weights.clip"]),
    ("eval.gold.weights={mllm_logit = 0}", ["eval.gold.weights.mllm_logit", "> 0"]),
    ("eval.gold.dtype='fp8'", ["eval.gold.dtype"]),
    ("eval.stop_on_divergence=true", ["eval.stop_on_divergence", "eval.gold.kind"]),
])
def test_eval_mistakes_name_the_key(override, words):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    for word in words:
        assert word in str(error.value)


def test_a_manifest_run_must_name_its_held_out_rows(tmp_path):
    config = load_config(None, ["eval.every=10", "data.manifest='train.jsonl'"])
    with pytest.raises(ValueError, match="eval.manifest"):
        held_out_tasks(config)
    with pytest.raises(ValueError, match="eval.manifest"):
        Trainer(config, reward=BrightnessReward(), tasks=object())           # before any model is built
    with pytest.raises(ValueError, match="optim.ema_every"):
        Trainer(load_config(None, ["eval.every=1", "eval.use_ema=true", "optim.ema_every=0"]), tasks=object())


def test_held_out_tasks_are_the_datas_held_out_set_cut_to_eval_tasks():
    config = load_config(None, ["eval.every=1", "data.eval_tasks=5", "eval.tasks=3"])
    tasks = held_out_tasks(config)
    from editrl_engine.engine.tasks import TaskSet
    full = TaskSet.from_config(config.data, held_out=True)
    assert tasks.keys == full.keys[:3] and len(tasks.rows) == 3


# ---- the alarm rule ---------------------------------------------------------------------------------------------
def fire_points(pairs, evals=2, tolerance=0.01):
    alarm = DivergenceAlarm(evals, tolerance)
    return [alarm.update(train, gold) for train, gold in pairs]


def test_alarm_fires_at_the_kth_consecutive_diverging_evaluation():
    pairs = [(0.5, 0.8), (0.6, 0.7), (0.7, 0.6), (0.8, 0.5)]       # train up, gold down from the 2nd on
    assert fire_points(pairs, evals=2) == [False, False, True, True]
    assert fire_points(pairs, evals=1) == [False, True, True, True]
    assert fire_points(pairs, evals=3) == [False, False, False, True]


def test_alarm_stays_quiet_when_both_rise_or_gold_is_flat():
    assert not any(fire_points([(0.1, 0.1), (0.2, 0.2), (0.3, 0.3), (0.4, 0.4)]))            # both rise
    assert not any(fire_points([(0.1, 0.5), (0.2, 0.495), (0.3, 0.49), (0.4, 0.485)]))       # gold flat within 0.01
    assert not any(fire_points([(0.5, 0.8), (0.5, 0.7), (0.5, 0.6), (0.5, 0.5)]))            # train flat: no hacking
    assert not any(fire_points([(0.5, 0.8), (0.4, 0.7), (0.3, 0.6)]))                        # both fall
    assert fire_points([(0.1, 0.5), (0.2, 0.495), (0.3, 0.49)], tolerance=0.0) == [False, False, True]


def test_alarm_needs_consecutive_divergence_and_resets():
    pairs = [(0.1, 0.9), (0.2, 0.8), (0.3, 0.85), (0.4, 0.7), (0.5, 0.6), (0.6, 0.65), (0.7, 0.5)]
    # after the first: diverges, gold rises, diverges, diverges (2 in a row: fires), gold rises, diverges
    assert fire_points(pairs) == [False, False, False, False, True, False, False]
    alarm = DivergenceAlarm(2, 0.01)
    for train, gold in [(0.1, 0.9), (0.2, 0.8), (math.nan, 0.7), (0.4, 0.6), (0.5, 0.5)]:
        fired = alarm.update(train, gold)
    assert not fired and alarm.streak == 1                    # the NaN evaluation broke the run of divergences
    again = DivergenceAlarm(2, 0.01)
    again.load_state_dict(alarm.state_dict())
    assert again.update(0.6, 0.4) and alarm.update(0.6, 0.4)  # a checkpointed alarm continues where it was
    with pytest.raises(ValueError):
        DivergenceAlarm(0)


def test_detail_rates_average_the_fields_every_detail_has():
    details = [{"named_edited": True, "others_kept": True, "success": 4.0, "answer": "a", "probs": [1, 2],
                "part": {"reward": 0.5, "ok": False}},
               {"named_edited": False, "others_kept": True, "success": math.nan, "answer": "b", "extra": 1.0,
                "part": {"reward": 0.25, "ok": True}}]
    rates = detail_rates(details, prefix="eval/gold/")
    assert rates == {"eval/gold/named_edited": 0.5, "eval/gold/others_kept": 1.0, "eval/gold/success": 4.0,
                     "eval/gold/part/reward": 0.375, "eval/gold/part/ok": 0.5}
    assert detail_rates([]) == {}


# ---- end to end ---------------------------------------------------------------------------------------------------
def test_alarm_warns_and_stops_the_run_with_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    config = watch_config(out, "run.steps=6", "eval.stop_on_divergence=true")
    gold = FallingGold()
    trainer = Trainer(config, reward=RisingReward(), gold=gold)
    summary = trainer.train()
    # evaluations before steps 0, 1, 2: gold 0.8 -> 0.7 -> 0.6 while the training reward rises: fires at step 2;
    # step 2 finishes, a checkpoint is written, the run stops (the SIGTERM path)
    assert summary["stopped_on_divergence"] and summary["stopped_by_signal"] is None
    assert summary["step"] == 3 and summary["checkpoint"].endswith("step-000003")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000003"
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["eval/alarm"] for r in rows] == [0, 0, 1]
    assert [r["eval/streak"] for r in rows] == [0, 1, 2]
    assert [r["eval/gold_reward"] for r in rows] == pytest.approx([0.8, 0.7, 0.6])
    train = [r["eval/train_reward"] for r in rows]
    assert train[0] < train[1] < train[2]
    for r in rows:
        assert r["eval/gap"] == pytest.approx(r["eval/train_reward"] - r["eval/gold_reward"])
        assert r["eval/gold/named_edited"] == pytest.approx(2 / 3) and r["eval/gold/others_kept"] == 1.0
        assert r["eval/gold/success"] == pytest.approx(10.0 / 3) and r["eval/train_nan"] == r["eval/gold_nan"] == 0
        assert "eval/gold/answer" not in r and "eval/gold/probabilities" not in r
        assert math.isfinite(r["reward_mean"])                        # the training row is all there too
    log = (out / "log.txt").read_text()
    assert "gold-judge watch: 3 held-out samples" in log
    assert "WARNING: gold-judge watch: DIVERGENCE ALARM at step 2" in log
    assert "WARNING: stopped after step 3" in log
    assert "DIVERGENCE ALARM at step 2" in capsys.readouterr().err
    assert gold.calls == 3
    state = load_torch(out / "checkpoints" / "step-000003" / "trainer.pt")
    assert state["watch"]["alarm"]["streak"] == 2


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_policy_ranks_split_the_samples_in_equal_padded_shares(world):
    import dataclasses

    from editrl_engine.engine.distributed import Placement
    from editrl_engine.engine.watch import GoldWatch
    config = load_config(None, ["eval.every=1", "data.eval_tasks=5", "data.image_size=16"])
    shares = []
    for rank in range(world):
        placement = dataclasses.replace(Placement(), rank=rank, world_size=world, policy_ranks=tuple(range(world)))
        watch = GoldWatch(config, placement, gold=FallingGold())
        shares.append(watch._local_items())
    assert len({len(items) for items, _ in shares}) == 1                   # the same forwards on every rank
    gathered = [i for _, indices in shares for i in indices][:5]           # all_gather in rank order, cut to n
    assert gathered == list(range(5))
    assert shares[0][0][0] == (0, 1234)


def test_commented_eval_sections_of_the_shipped_configs_load_when_uncommented():
    import re
    import tomllib

    from editrl_engine.engine.config import TrainConfig, from_dict, shipped_configs
    found = 0
    for name, path in shipped_configs().items():
        text = path.read_text()
        if "# [eval]" in text:
            found += 1
            config = from_dict(TrainConfig, tomllib.loads(re.sub(r"^# (\[eval|\w+ = )", r"\1", text, flags=re.M)))
            assert config.eval.every > 0 and config.eval.gold.enabled and config.eval.manifest, name
    assert found >= 4


def test_evaluation_samples_are_fixed_and_both_judges_score_the_same_ones(tmp_path):
    # lr 0: the policy does not move, so the evaluations before step 0 and before step 2 sample the same images;
    # one diverging evaluation (alarm_evals=1) fires the alarm without stopping the run
    out = tmp_path / "run"
    config = watch_config(out, "run.steps=3", "eval.every=2", "optim.lr=0.0", "optim.weight_decay=0.0",
                          "eval.alarm_evals=1", "eval.samples=2", f"log.tensorboard={str(HAS_TB).lower()}")
    reward, gold = RisingReward(), FallingGold()
    summary = Trainer(config, reward=reward, gold=gold).train()
    assert summary["step"] == 3 and not summary["stopped_on_divergence"]
    assert len(gold.seen) == 2 and gold.seen[0].shape == (6, 3, 16, 16)           # 3 tasks x 2 seeds
    assert torch.equal(gold.seen[0], gold.seen[1])
    assert not torch.equal(gold.seen[0][0], gold.seen[0][1])                       # two seeds, two samples
    assert sum(torch.equal(images, gold.seen[0]) for images in reward.seen if images.shape == gold.seen[0].shape) == 2
    rows = read_metrics(out)
    assert [("eval/alarm" in r) for r in rows] == [True, False, True]
    assert [r.get("eval/alarm") for r in rows] == [0, None, 1]
    assert "DIVERGENCE ALARM at step 2" in (out / "log.txt").read_text()
    if HAS_TB:                                                                     # the same scalars in TensorBoard
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        board = EventAccumulator(str(out / "tb")).Reload()
        assert [(e.step, e.value) for e in board.Scalars("eval/alarm")] == [(0, 0.0), (2, 1.0)]
        assert [e.step for e in board.Scalars("eval/gold/named_edited")] == [0, 2]


def test_the_watch_costs_nothing_when_off(tmp_path, monkeypatch):
    import editrl_engine.reward as reward_package
    from editrl_engine.engine import evaluation, watch

    def forbidden(*args, **kwargs):
        raise AssertionError("the watch is off: nothing of it may run")

    monkeypatch.setattr(reward_package, "load_reward", forbidden)            # no gold judge is built
    monkeypatch.setattr(watch.GoldWatch, "__init__", forbidden)
    monkeypatch.setattr(watch.GoldWatch, "evaluate", forbidden)
    monkeypatch.setattr(evaluation, "sample_items", forbidden)
    monkeypatch.setattr(evaluation, "evaluate_policy", forbidden)
    monkeypatch.setattr(Trainer, "evaluate", forbidden)
    out = tmp_path / "run"
    config = tiny_config(out, "run.steps=2", "eval.every=0", "eval.gold.kind='mllm_logit'", "eval.gold.preset='tiny'")
    trainer = Trainer(config, reward=BrightnessReward())
    summary = trainer.train()
    assert summary["step"] == 2 and trainer.watch is None and not summary["stopped_on_divergence"]
    rows = read_metrics(out)
    assert rows and not [k for r in rows for k in r if k.startswith("eval/")]
    assert not [k for h in trainer.history for k in h if k.startswith("eval/")]
    assert "gold-judge" not in (out / "log.txt").read_text()
