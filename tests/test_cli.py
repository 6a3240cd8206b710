"""The `editrl` command line: help, both eval subcommands end to end (a fake reward registered as a kind, the
tiny mllm_logit model), results JSON and cache files, clear user errors with exit status 2, and bugs that keep
their traceback (exit status 1)."""
from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import types

import pytest

from editrl_engine import cli
from editrl_engine import reward as reward_package
from editrl_engine.engine.config import ConfigError

from .eval_fakes import FakeReward, write_bench
from .test_eval_editreward_bench import ROWS
from .test_eval_gedit import write_edits

LOADED: list[FakeReward] = []


@pytest.fixture
def fake_kind(monkeypatch):
    """Register the test double as reward kind "fake" through load_reward's table of kinds."""
    module = types.ModuleType("editrl_test_fake_reward")
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)

    def load(path=None, preset=None, device=None, dtype=None, backend="eager", **options):
        LOADED.append(FakeReward(name=str(path)))
        return LOADED[-1]

    module.load = load
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(reward_package.KINDS, "fake", module.__name__)
    LOADED.clear()
    return LOADED


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0 and "eval" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["eval", "editreward-bench", "--help"])
    text = capsys.readouterr().out
    assert "--avg-k" in text and "--cache" in text and "ties" in text
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


def test_editreward_bench_end_to_end_with_cache_and_results(tmp_path, fake_kind, capsys):
    write_bench(tmp_path / "bench", ROWS)
    args = ["eval", "editreward-bench", "--data", str(tmp_path / "bench"), "--reward", "fake:judge",
            "--cache", str(tmp_path / "cache.jsonl"), "--out", str(tmp_path / "out" / "result.json"),
            "--avg-k", "2", "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "macro 0.5000" in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["dimensions"]["overall"]["macro"] == 0.5 and result["avg_k"] == 2
    assert set(fake_kind[-1].avg_ks) == {2}
    assert cli.main(args) == 0 and fake_kind[-1].calls == 0                           # all from the cache
    assert cli.main(args[:-1] + ["--limit", "3"]) == 0


def test_gedit_end_to_end(tmp_path, fake_kind, capsys):
    write_edits(tmp_path)
    assert cli.main(["eval", "gedit", "--edits", str(tmp_path), "--reward", "fake:x", "--out",
                     str(tmp_path / "g.json"), "--no-progress"]) == 0
    assert "macro O" in capsys.readouterr().out
    assert json.loads((tmp_path / "g.json").read_text())["types"]["color_alter"]["mean_o"] == pytest.approx(4.0)


def test_errors_are_one_line_with_status_2(tmp_path, fake_kind, capsys):
    (tmp_path / "rows.jsonl").write_text('{"instruction": "x"}\n')
    assert cli.main(["eval", "editreward-bench", "--data", str(tmp_path), "--reward", "fake:x"]) == 2
    assert "rows.jsonl row 1: missing field" in capsys.readouterr().err
    write_bench(tmp_path / "ok", ROWS[:1])
    assert cli.main(["eval", "editreward-bench", "--data", str(tmp_path / "ok"), "--reward", "nosuch:x"]) == 2
    assert "unknown reward kind" in capsys.readouterr().err
    assert cli.main(["eval", "editreward-bench", "--data", str(tmp_path / "ok"), "--reward", "mllm_logit"]) == 2
    assert "needs weights" in capsys.readouterr().err


def test_editreward_bench_with_the_tiny_logit_reward(tmp_path, capsys):
    write_bench(tmp_path, ROWS[:3])
    assert cli.main(["eval", "editreward-bench", "--data", str(tmp_path), "--reward", "mllm_logit",
                     "--preset", "tiny", "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["rows"] == 3 and result["parse_failure_rate"] == 0.0
    assert 0.0 <= result["dimensions"]["overall"]["macro"] <= 1.0


def test_a_config_error_is_one_line_with_status_2(capsys):
    assert cli.main(["train", "no-such-config"]) == 2
    assert "editrl: error: no config 'no-such-config'" in capsys.readouterr().err
    assert cli.main(["train", "demo", "--set", "optim.no_such_key=1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("editrl: error: ") and "no_such_key" in err and "Traceback" not in err


def test_user_errors_of_rerank_and_serve_are_one_line_with_status_2(tmp_path, capsys):
    assert cli.main(["rerank", "--policy", "tiny", "--reward", "mllm_logit", "--reward-preset", "tiny", "--out",
                     str(tmp_path / "o"), str(tmp_path / "missing.png"), "x"]) == 2
    assert "editrl: error: source image" in capsys.readouterr().err
    assert cli.main(["rerank", "--policy", "demo", "--task", "9001", "--out", str(tmp_path / "o")]) == 2
    assert "SEED:INDEX" in capsys.readouterr().err
    assert cli.main(["serve", "--reward", "mllm_logit:/nowhere", "--max-batch", "0"]) == 2
    assert "editrl: error: bad serve settings: max_batch must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("error", [KeyError("a bug"), ValueError("a bug"), FileNotFoundError("a bug")])
def test_an_unexpected_error_is_a_bug_not_a_user_error(monkeypatch, capsys, error):
    def broken(args):
        raise error

    monkeypatch.setattr(cli, "_run_demo", broken)
    with pytest.raises(type(error), match="a bug"):              # it propagates, with its traceback
        cli.main(["demo"])
    assert "editrl: error:" not in capsys.readouterr().err


def test_a_user_error_raised_by_a_command_is_status_2(monkeypatch, capsys):
    def misconfigured(args):
        raise ConfigError("optim.lr must be > 0, got -1")

    monkeypatch.setattr(cli, "_run_demo", misconfigured)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "editrl: error: optim.lr must be > 0, got -1\n"


def test_a_bug_exits_1_with_its_traceback():
    program = ("import sys; from editrl_engine import cli\n"
               "def broken(args): raise KeyError('a bug of ours')\n"
               "cli._run_demo = broken\nsys.exit(cli.main(['demo']))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and "KeyError: 'a bug of ours'" in done.stderr
    assert "editrl: error:" not in done.stderr
