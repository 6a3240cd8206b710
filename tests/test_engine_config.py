"""Run configs: every shipped config loads and round-trips; overrides are typed; mistakes name the key."""
from __future__ import annotations

import pytest

from editrl_engine.engine import ConfigError, dump_toml, load_config
from editrl_engine.engine.config import TrainConfig, parse_override, shipped_configs

EXPECTED = {"demo", "flux-kontext-nft-editscore", "flux-kontext-grpo-editscore", "qwen-image-edit-nft-mllm",
            "qwen-image-edit-grpo-verifier"}


def test_every_issue_config_ships():
    assert EXPECTED <= set(shipped_configs())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_round_trips(name, tmp_path):
    config = load_config(name)
    path = tmp_path / "again.toml"
    path.write_text(dump_toml(config))
    assert load_config(path) == config


def test_algorithms_of_the_shipped_configs():
    assert load_config("flux-kontext-grpo-editscore").algo.name == "grpo"
    assert load_config("qwen-image-edit-nft-mllm").algo.name == "nft"
    assert load_config("qwen-image-edit-grpo-verifier").reward.kind == "verifier"
    assert load_config("flux-kontext-grpo-editscore").algo.grpo.clip_high == 5e-4


def test_overrides_are_typed_and_win():
    config = load_config("flux-kontext-nft-editscore", ["optim.lr=1e-3", "run.steps=7", "policy.compile=true",
                                                        "data.edits=['recolor']", "run.name=abc",
                                                        "algo.nft.kl_beta=0"])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.run.steps == 7 and config.policy.compile is True
    assert config.data.edits == ("recolor",) and config.run.name == "abc"
    assert config.algo.nft.kl_beta == 0.0


def test_default_staleness_follows_the_algorithm():
    assert TrainConfig().staleness == 1
    assert load_config(None, ["algo.name='grpo'"]).staleness == 0
    assert load_config(None, ["pipeline.staleness=0"]).staleness == 0


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["optim.lrr", "valid keys", "lr"]),
    ("nosection.x=1", ["nosection"]),
    ("optim.lr=abc", ["optim.lr", "float"]),
    ("run.steps=1.5", ["run.steps", "int"]),
    ("policy.compile=1", ["policy.compile", "true or false"]),
    ("optim.lr", ["section.key=value"]),
])
def test_mistakes_name_the_key(override, words):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    for word in words:
        assert word in str(error.value)


def test_a_folder_named_like_a_config_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_config("demo") == load_config(shipped_configs()["demo"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("missing.toml")


def test_unknown_config_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="demo"):
        load_config("no-such-config")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nsteps = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_parse_override_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a.b=word") == (["a", "b"], "word")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=\"x=y\"") == (["a", "b"], "x=y")
