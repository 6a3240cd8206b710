"""--reward-endpoint on the commands that take a judge (rerank, serve, eval): the judge served elsewhere is used,
and flags that cannot go together are refused naming the fix."""
from __future__ import annotations

import pytest

from editrl_engine import cli
from editrl_engine.cli_serve import load_reward_from
from editrl_engine.reward.remote.judges import RemoteLogitReward

from .openai_fake import FakeServer, logprob_answer


@pytest.fixture(scope="module")
def fake():
    server = FakeServer([logprob_answer({"4": 1.0})])
    yield server
    server.stop()


@pytest.mark.parametrize("command", [["serve"], ["rerank", "--policy", "tiny", "--n", "2", "--out", "o", "a.png", "x"]])
def test_rerank_and_serve_load_the_served_judge(fake, command):
    args = cli.build_parser().parse_args(command + ["--reward", "mllm_logit", "--reward-endpoint", fake.url])
    reward = load_reward_from(args)
    assert isinstance(reward, RemoteLogitReward) and reward.chat.model == "fake-judge"


def test_eval_loads_the_served_judge(fake):
    args = cli.build_parser().parse_args(["eval", "editreward-bench", "--data", "d", "--reward", "mllm_logit",
                                          "--reward-endpoint", fake.url, "--reward-model", "judge-7b"])
    reward = cli._load_reward(args)
    assert isinstance(reward, RemoteLogitReward) and reward.chat.model == "judge-7b"


@pytest.mark.parametrize("flags, words", [
    (["--reward", "mllm_logit:/models/x", "--reward-endpoint", "http://h:1/v1"], "weights live on its server"),
    (["--reward", "mllm_logit", "--reward-preset", "tiny", "--reward-model", "m"], "go with --reward-endpoint"),
])
def test_conflicting_flags_are_refused(flags, words):
    args = cli.build_parser().parse_args(["serve"] + flags)
    with pytest.raises(ValueError, match=words):
        load_reward_from(args)
