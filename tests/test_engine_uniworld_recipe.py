"""The DiffusionNFT / UniWorld-V2 recipe options on the engine: the reproduction configs' settings, staleness 0's
order (update, old-adapter update, then sample) against staleness 1's, the staleness note --print-config shows,
AdamW on an all-filtered step, the warm-up EMA against its hand-computed recursion, and the Kontext LoRA."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import cli
from editrl_engine.engine import ConfigError, Trainer, dump_toml, load_config
from editrl_engine.engine.config import OptimConfig

from .engine_fakes import BrightnessReward, tiny_config

RECIPES = ("qwen-image-edit-nft-mllm", "flux-kontext-nft-editscore")
KONTEXT_ATTENTION = {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                     "attn.add_v_proj", "attn.to_add_out"}       # Edit-R1 train_nft_kontext.py's target_modules


@pytest.mark.parametrize("name", RECIPES)
def test_reproduction_configs_follow_uniworld_v2(name):
    config = load_config(name)
    assert config.algo.advantage.std == "global" and config.algo.nft.adv_mode == "all"
    assert config.staleness == 0 and config.pipeline.staleness == 0
    o = config.optim
    assert o.step_when_filtered and o.ema_schedule == "warmup" and o.ema_every == 1 and o.ema_decay == 0.9
    assert config.policy.lora_init == "gaussian"
    if name.startswith("flux-kontext"):
        assert set(config.policy.lora_targets) == KONTEXT_ATTENTION and len(config.policy.lora_targets) == 8


def test_defaults_are_unchanged():
    config = load_config(None)
    assert config.staleness == 1 and config.algo.advantage.std == "group"
    assert not config.optim.step_when_filtered and config.optim.ema_schedule == "fixed"
    assert config.policy.lora_init == "default" and config.algo.nft.adv_mode == "all"


@pytest.mark.parametrize("override, key", [("optim.ema_schedule='cosine'", "optim.ema_schedule"),
                                           ("optim.ema_every=-1", "optim.ema_every"),
                                           ("policy.lora_init='xavier'", "policy.lora_init")])
def test_new_keys_are_checked(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_print_config_explains_staleness(capsys):
    text = dump_toml(load_config("flux-kontext-nft-editscore"))
    head, _, _ = text.partition("[pipeline]")
    note = " ".join(line[2:] for line in head.splitlines()[-3:] if line.startswith("# "))
    assert "pipeline.staleness: 1 overlaps" in note and "before step k's update and old-adapter update" in note
    assert "0 is the exact order" in note
    assert cli.main(["train", "flux-kontext-nft-editscore", "--print-config"]) == 0
    assert "# pipeline.staleness: 1 overlaps" in capsys.readouterr().out


@pytest.mark.parametrize("staleness", [0, 1])
def test_staleness_orders_sampling_and_the_old_adapter_update(tmp_path, staleness):
    trainer = Trainer(tiny_config(tmp_path / "run", "run.steps=3", f"pipeline.staleness={staleness}"),
                      reward=BrightnessReward())
    events = []
    start, after = trainer._start_rollouts, trainer.algorithm.after_step
    trainer._start_rollouts = lambda scorer: events.append("sample") or start(scorer)
    trainer.algorithm.after_step = lambda policy, step: events.append(f"old{step}") or after(policy, step)
    trainer.train()
    if staleness == 0:                       # each step's rollouts come from the old adapter the last update left
        assert events == ["sample", "old0", "sample", "old1", "sample", "old2"]
    else:                                    # step k + 1 is sampled before step k's update
        assert events == ["sample", "sample", "old0", "sample", "old1", "old2"]


class Solved(BrightnessReward):
    def score(self, sources, instructions, edited, **_):
        batch = super().score(sources, instructions, edited)
        batch.reward = torch.full_like(batch.reward, 0.95)             # std 0: every group filtered
        return batch


@pytest.mark.parametrize("step_when_filtered", [True, False])
def test_all_filtered_steps_apply_exactly_adamw_weight_decay(tmp_path, step_when_filtered):
    lr, wd = 1e-2, 0.1
    config = tiny_config(tmp_path / "run", "run.steps=2", "algo.advantage.filter_std=0.05",
                         f"optim.lr={lr}", f"optim.weight_decay={wd}",
                         f"optim.step_when_filtered={str(step_when_filtered).lower()}")
    trainer = Trainer(config, reward=Solved())
    trainer.setup()
    before = [p.detach().double().clone() for p in trainer.params]
    trainer.train()
    assert all(h["filtered_frac"] == 1.0 and h["optimizer_steps"] == 0 for h in trainer.history)
    assert [h["filtered_steps"] for h in trainer.history] == ([1, 1] if step_when_filtered else [0, 0])
    # zero gradients keep AdamW's moments at 0, so each step is the decoupled decay p <- p (1 - lr wd) alone
    factor = (1 - lr * wd) ** 2 if step_when_filtered else 1.0
    assert any(b.abs().sum() > 0 for b in before)
    for p, b in zip(trainer.params, before):
        torch.testing.assert_close(p.detach().double(), b * factor, rtol=1e-6, atol=0)


def test_warmup_ema_decay_values():
    o = OptimConfig(ema_schedule="warmup", ema_every=1)
    assert [o.ema_decay_at(s) for s in (1, 2, 3, 80, 500)] == pytest.approx([2 / 11, 3 / 12, 4 / 13, 0.9, 0.9])
    assert OptimConfig().ema_decay_at(1) == 0.9                       # fixed: ema_decay


def test_warmup_ema_follows_the_hand_computed_recursion(tmp_path):
    config = tiny_config(tmp_path / "run", "run.steps=3", "optim.ema_every=1", "optim.ema_schedule='warmup'")
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.setup()
    ema = [p.detach().double().clone() for p in trainer.params]       # the EMA starts at the initial weights
    snapshots, update = [], trainer._update

    def recording(batch, failures):
        out = update(batch, failures)
        snapshots.append([p.detach().double().clone() for p in trainer.params])
        return out

    trainer._update = recording
    trainer.train()
    for decay, params in zip((2 / 11, 3 / 12, 4 / 13), snapshots, strict=True):   # min((1+s)/(10+s), 0.9), s=1,2,3
        ema = [decay * e + (1 - decay) * p for e, p in zip(ema, params)]
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[-1]))
    for e, ref in zip(trainer.ema, ema):
        torch.testing.assert_close(e.double(), ref, rtol=1e-6, atol=1e-8)


def test_kontext_recipe_lora_has_the_attention_targets_and_gaussian_init(tmp_path):
    recipe = load_config("flux-kontext-nft-editscore").policy
    targets = "[" + ", ".join(f"'{t}'" for t in recipe.lora_targets) + "]"
    config = tiny_config(tmp_path / "run", f"policy.lora_targets={targets}", f"policy.lora_init='{recipe.lora_init}'")
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.setup()
    transformer = trainer.policy.transformer
    peft_config = transformer.peft_config["default"]
    assert set(peft_config.target_modules) == KONTEXT_ATTENTION and peft_config.init_lora_weights == "gaussian"
    wrapped = {name for name, m in transformer.named_modules() if hasattr(m, "lora_A")}
    assert wrapped and all(any(name.endswith(t) for t in KONTEXT_ATTENTION) for name in wrapped)
    assert not any(".ff" in name for name in wrapped)
    default = Trainer(tiny_config(tmp_path / "d"), reward=BrightnessReward())
    default.setup()
    assert default.policy.transformer.peft_config["default"].init_lora_weights is True
    assert any(".ff" in name for name, m in default.policy.transformer.named_modules() if hasattr(m, "lora_A"))


def test_gaussian_init_reaches_peft():
    from editrl_engine.policy.flux_kontext import load
    policy = load(preset="tiny")
    policy.add_lora(rank=4, alpha=8.0, init="gaussian")
    a = torch.cat([m.lora_A["default"].weight.flatten() for m in policy.transformer.modules() if hasattr(m, "lora_A")])
    assert policy.transformer.peft_config["default"].init_lora_weights == "gaussian"
    assert a.std().item() == pytest.approx(1 / 4, rel=0.05) and abs(a.mean().item()) < 0.02   # peft: N(0, 1/r)
    with pytest.raises(ValueError, match="LoRA init 'xavier'"):
        load(preset="tiny").add_lora(rank=4, init="xavier")
