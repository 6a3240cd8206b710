"""bench/gpu_suite.py, the one prepared GPU run: its plan fits the window, covers every benchmark, passes only
flags the scripts take, and its checker and runner do what they say (on CPU: nothing here needs a GPU)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module            # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


suite = _load("_gpu_suite_under_test", ROOT / "bench" / "gpu_suite.py")
Step = suite.Step


def test_dry_run_exits_0_and_lists_every_step():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in suite.PLAN:
        line = next((ln for ln in done.stdout.splitlines() if re.match(rf"\s*\d+\. {step.name}\s", ln)), None)
        assert line is not None, f"{step.name} not listed"
        assert f"budget {step.budget_s:4d} s" in line
    assert f"= {suite.required_total(suite.PLAN)} s <= 480 s" in done.stdout
    assert "plan OK" in done.stdout and "PLAN PROBLEMS" not in done.stdout
    for script in suite.EXCLUDED:
        assert script in done.stdout


def test_required_budgets_and_the_install_fit_480_s():
    required = [s for s in suite.PLAN if not s.extra]
    assert required[0].name == "install_wheels" and "pip install" in required[0].command
    assert suite.TOTAL_S == 480
    assert sum(s.budget_s for s in required) + suite.RESERVE_S <= 480
    assert all(isinstance(s.budget_s, int) and s.budget_s > 0 for s in suite.PLAN)
    assert all(0 < s.min_s <= s.budget_s for s in suite.PLAN if s.extra)
    assert [s.extra for s in suite.PLAN] == sorted(s.extra for s in suite.PLAN), "extra steps come last"


def test_every_benchmark_is_planned_or_excluded_with_a_reason():
    planned = {s.bench for s in suite.PLAN if s.bench}
    found = suite.benchmarks(ROOT)
    assert {"bench/fused_ops.py", "bench/rollout.py", "bench/reward.py", "bench/e2e.py", "bench/serve.py"} <= planned
    for script in found:
        assert script in planned or suite.EXCLUDED.get(script, "").strip(), script
    assert "bench/common.py" not in found and "bench/kernel_cases.py" not in found      # helpers, no main
    assert suite.check_plan(suite.PLAN) == []


def test_the_checker_fails_a_plan_that_names_a_missing_file(capsys):
    ghost = Step("ghost", 5, "{py} bench/ghost.py --quick", needs=("bench/ghost.py",), bench="bench/ghost.py",
                 args=("--quick",))
    bad = suite.PLAN + (ghost,)
    problems = suite.check_plan(bad)
    assert any("ghost: bench/ghost.py does not exist" in p for p in problems), problems
    assert suite.dry_run(bad) == 1
    assert "PLAN PROBLEMS" in capsys.readouterr().out
    missing_test = dataclasses.replace(suite.PLAN[2], needs=("tests/test_no_such_file.py",))
    assert any("tests/test_no_such_file.py does not exist" in p for p in suite.check_plan([missing_test]))


def test_the_checker_fails_a_flag_the_script_does_not_take():
    step = suite.bench_step("typo", "bench/rollout.py", ("--device", "cuda", "--size", "512"), 10, "")
    problems = suite.check_plan(suite.PLAN + (step,))
    assert any("typo: bench/rollout.py takes no --size" in p for p in problems), problems


def test_the_checker_fails_a_plan_over_budget():
    heavy = Step("heavy", 480, "true")
    assert any("> 480 s" in p for p in suite.check_plan(suite.PLAN + (heavy,)))
    assert not any("> 480 s" in p for p in suite.check_plan(suite.PLAN + (dataclasses.replace(
        heavy, extra=True, min_s=60),)))                       # an extra step only uses time left over


def test_the_checker_finds_an_unplanned_benchmark(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "helper.py").write_text("X = 1\n")
    (tmp_path / "bench" / "new_bench.py").write_text("def main():\n    pass\n\n\nif __name__ == '__main__':\n"
                                                     "    main()\n")
    problems = suite.check_plan([], root=tmp_path, excluded={})
    assert problems == ["bench/new_bench.py is a benchmark (it has a main) that no step runs and EXCLUDED does "
                        "not list with a reason"]
    assert suite.check_plan([], root=tmp_path, excluded={"bench/new_bench.py": "too slow"}) == []
    assert suite.check_plan([], root=tmp_path, excluded={"bench/new_bench.py": " "}) != []


def test_the_deep_check_parses_the_plan_with_each_scripts_parser():
    bad = suite.bench_step("bad_value", "bench/rollout.py", ("--compile", "sometimes"), 10, "")
    problems = suite.deep_check(suite.PLAN + (bad,))
    assert len(problems) == 1 and problems[0].startswith("bench/rollout.py --compile sometimes:"), problems


def test_list_wheels_prints_the_pinned_download_command(capsys, monkeypatch):
    monkeypatch.setattr(suite, "uncovered_wheels", lambda: [])        # the closure depends on this environment
    assert suite.list_wheels() == 0
    out = capsys.readouterr().out
    command = next(line for line in out.splitlines() if line.startswith("python3 -m pip download"))
    for flag in ("--no-deps", "--only-binary=:all:", "--python-version 3.12", "--implementation cp", "-d .whl",
                 "--platform manylinux_2_28_x86_64", "--platform manylinux_2_17_x86_64",
                 "--platform manylinux2014_x86_64"):
        assert flag in command
    pins, _ = suite.pinned_wheels()
    for pin in pins:
        assert f" {pin}" in command
    assert not any(name in ("torch", "triton") for name in suite.WHEELS)
    monkeypatch.setattr(suite, "uncovered_wheels", lambda: ["a-new-dependency"])
    assert suite.list_wheels() == 1
    assert "a-new-dependency" in capsys.readouterr().err


def test_the_wheel_closure_follows_requirements():
    """The closure --list-wheels checks the carried wheels against (the wheels themselves are chosen from the
    developer's environment when they are downloaded, so the check runs there, not here)."""
    pytest.importorskip("packaging")
    assert {"pytest", "pluggy", "iniconfig"} <= suite.closure(["pytest"])
    assert "pluggy" not in suite.closure(["pytest"], skip=frozenset({"pluggy"}))
    assert suite.closure(["a-distribution-that-is-not-installed"]) == set()


def test_the_slug_is_bench_commons():
    common = _load("_gpu_suite_common", ROOT / "bench" / "common.py")
    for name in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"):
        assert suite.slug(name) == common.slug(name)


def _runner(tmp_path, plan, total_s):
    results = tmp_path / "results"
    results.mkdir()
    return suite.Runner(plan, root=ROOT, out=tmp_path / "out", work=tmp_path / "work", results=results,
                        t0=time.time(), total_s=total_s), results


def test_the_runner_records_every_step_and_goes_on_after_failures(tmp_path):
    report = tmp_path / "results" / "fake-nvidia-h200.json"
    body = json.dumps({"benchmark": "fake", "device": {"name": "NVIDIA H200"}, "rows": [{"error": None},
                       {"error": "boom"}], "targets": [{"target": "t", "passed": True, "measured": 1.0}]})
    plan = (Step("writes", 10, f"echo '{body}' > {report}"),
            Step("fails", 10, "echo bad; exit 3"),
            Step("hangs", 1, "sleep 30"),
            Step("late_extra", 100, "echo never", extra=True, min_s=60))
    runner, _ = _runner(tmp_path, plan, total_s=40)
    begin = time.time()
    assert runner.run() == 1                                   # a required step failed
    assert time.time() - begin < 20                            # the hung step was cut at its 1 s budget
    out = tmp_path / "out"
    summary = json.loads((out / "gpu_suite_summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert [s["step"] for s in summary["steps"]] == ["writes", "fails", "hangs", "late_extra"]
    assert (steps["writes"]["status"], steps["writes"]["rc"]) == ("ok", 0)
    assert (steps["fails"]["status"], steps["fails"]["rc"]) == ("failed", 3) and "bad" in steps["fails"]["log_tail"]
    assert steps["hangs"]["status"] == "timeout" and steps["hangs"]["rc"] == 124 and steps["hangs"]["wall_s"] < 5
    assert steps["late_extra"]["status"] == "skipped: out of time" and steps["late_extra"]["rc"] is None
    for s in summary["steps"]:
        assert {"budget_s", "wall_s", "rc", "command", "status"} <= set(s)
    assert "device" in summary and summary["finished"] is True
    (result,) = summary["results"]
    assert result["file"] == report.name and result["rows"] == 2 and result["rows_with_error"] == 1
    assert result["targets"] == [{"target": "t", "passed": True, "measured": 1.0}]
    assert json.loads((out / "results" / report.name).read_text())["benchmark"] == "fake"
    with tarfile.open(out / "gpu_suite_logs.tar.gz") as tar:
        assert {"logs/01-writes.log", "logs/02-fails.log", "logs/03-hangs.log"} <= set(tar.getnames())
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert sorted(summary["out_files"]) == sorted(p.relative_to(out).as_posix() for p in files)


def test_more_results_than_fit_come_back_as_one_archive(tmp_path):
    runner, results = _runner(tmp_path, (), total_s=30)
    old = results / "kernels-cpu.json"
    old.write_text("{}")
    past = time.time() - 3600
    os.utime(old, (past, past))                                # written before this run: not shipped
    for k in range(suite.MAX_RESULT_FILES + 1):
        (results / f"bench{k}-gpu.json").write_text(json.dumps({"benchmark": f"bench{k}", "rows": []}))
    assert runner.run() == 0
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["gpu_results.tar.gz", "gpu_suite_logs.tar.gz", "gpu_suite_summary.json"]
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"results/bench{k}-gpu.json"
                                                for k in range(suite.MAX_RESULT_FILES + 1))


def test_the_docs_name_every_wheel_to_carry():
    help_text = " ".join(suite.__doc__.split())
    wrapper = " ".join((ROOT / "bench" / "gpu_suite.sh").read_text().replace("#", " ").split())
    for name in suite.WHEELS:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", help_text), f"--help does not name {name}"
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", wrapper), f"gpu_suite.sh does not name {name}"
