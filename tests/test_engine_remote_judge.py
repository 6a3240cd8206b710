"""The engine with a served judge (reward.endpoint): a training step scores over HTTP from the policy rank (no
reward rank), with the same rewards the judge gives in-process; a judge that does not answer gives NaN rewards,
counted, and the run goes on; configs that cannot work are refused naming the fix."""
from __future__ import annotations

import math

import pytest

from editrl_engine.engine import Trainer
from editrl_engine.engine.config import ConfigError
from editrl_engine.engine.trainer import reward_from_section

from .engine_fakes import tiny_config
from .serve_fakes import serve, tiny_judge

VOCAB = 877


def test_a_step_scores_with_a_served_judge_and_matches_it_in_process(tmp_path):
    server = serve(tiny_judge(), max_logprobs=VOCAB)
    try:
        config = tiny_config(tmp_path / "run", "reward.kind='mllm_logit'", f"reward.endpoint=['{server.url}/v1']",
                             "run.steps=1", "pipeline.staleness=0")
        reward = reward_from_section(config.reward, device=None)
        reward.top_logprobs, reward.min_digit_mass = VOCAB, 0.0      # the tiny judge's digits are rare tokens
        trainer = Trainer(config, reward=reward)
        trainer.train()
        record = trainer.history[0]
        assert record["nan_count"] == 0 and math.isfinite(record["reward_mean"]) and record["optimizer_steps"] == 1
        served = server.app.state.server.metrics.accepted_count
        assert served == config.sampling.group_size * config.sampling.groups_per_step
        assert reward.metadata()["remote"]["endpoints"][server.url + "/v1"]["requests"] == served
    finally:
        server.stop()


def test_a_judge_that_does_not_answer_gives_counted_nan_and_the_run_goes_on(tmp_path):
    config = tiny_config(tmp_path / "run", "reward.kind='mllm_logit'", "reward.endpoint=['http://127.0.0.1:9/v1']",
                         "reward.model='judge'",
                         "run.steps=1", "pipeline.staleness=0")
    reward = reward_from_section(config.reward, device=None)
    reward.chat.transport.config = type(reward.chat.transport.config)(retries=0, connect_timeout_s=0.5)
    trainer = Trainer(config, reward=reward)
    trainer.train()
    record = trainer.history[0]
    total = config.sampling.group_size * config.sampling.groups_per_step
    assert record["nan_count"] == total and record["optimizer_steps"] == 0


@pytest.mark.parametrize("overrides, words", [
    (["reward.kind='mllm_logit'", "reward.endpoint=['http://h:1/v1']", "pipeline.placement='separate'"],
     "placement = \"colocated\""),
    (["reward.kind='programmatic'", "reward.endpoint=['http://h:1/v1']"], "kind 'programmatic'"),
    (["reward.kind='mllm_logit'", "reward.preset='tiny'", "reward.endpoint=['http://h:1/v1']"], "reward.preset"),
    (["reward.kind='mllm_logit'", "reward.api_key_env='KEY'"], "go with reward.endpoint"),
])
def test_configs_that_cannot_work_are_refused(tmp_path, overrides, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        tiny_config(tmp_path / "run", *overrides)
