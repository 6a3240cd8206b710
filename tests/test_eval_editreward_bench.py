"""EditReward-Bench runner on a small synthetic file: hand-computed accuracies (ties and NaN wrong), groups,
dimensions from sub-scores, Avg@K, the score cache, and errors that name the file and row."""
from __future__ import annotations

import json
import math

import pytest

from editrl_engine.eval import BenchDataError, ScoreCache, editreward_bench
from editrl_engine.eval.score_cache import ImageRef

from .eval_fakes import NAN_RED, FakeReward, NoEnsembleReward, solid, write_bench

# overall dimension: subject-add 1/2 (one tie), subject-remove 0/1, color_alter 1/2 (one NaN), ps_human 1/1
ROWS = [
    {"task": "subject-add", "dimension": "overall", "first": (200, 0, 0), "second": (100, 0, 0)},
    {"task": "subject_add", "dimension": "overall", "first": (100, 0, 0), "second": (100, 0, 0)},
    {"task": "subject-remove", "dimension": "overall", "first": (50, 0, 0), "second": (100, 0, 0)},
    {"task": "color_alter", "dimension": "overall", "first": (NAN_RED, 0, 0), "second": (100, 0, 0)},
    {"task": "color_alter", "dimension": "overall", "first": (200, 0, 0), "second": (50, 0, 0)},
    {"task": "ps_human", "dimension": "overall", "first": (200, 0, 0), "second": (100, 0, 0)},
    # prompt_following decided by G (R says the opposite); consistency by B, here a tie
    {"task": "text_change", "dimension": "prompt_following", "first": (100, 200, 0), "second": (200, 100, 0)},
    {"task": "text_change", "dimension": "consistency", "first": (200, 0, 90), "second": (100, 0, 90)},
]


@pytest.fixture
def bench(tmp_path):
    write_bench(tmp_path, ROWS, embed_first=True)
    return tmp_path


def test_accuracies_groups_and_dimensions_by_hand(bench):
    rows = editreward_bench.read_rows(bench)
    assert [r["task"] for r in rows[:2]] == ["subject-add", "subject-add"]          # '_' and '-' both accepted
    assert rows[0]["outputs"][0].data is not None                                     # embedded bytes
    result = editreward_bench.evaluate(FakeReward(), rows, progress=False)
    overall = result["dimensions"]["overall"]
    accuracy = {t: v["accuracy"] for t, v in overall["tasks"].items()}
    assert accuracy == {"subject-add": 0.5, "subject-remove": 0.0, "color_alter": 0.5, "ps_human": 1.0}
    assert overall["tasks"]["subject-add"]["ties"] == 1 and overall["tasks"]["color_alter"]["nan"] == 1
    assert overall["macro"] == pytest.approx(0.5) and result["headline"]["macro"] == pytest.approx(0.5)
    assert overall["groups"] == {"Subject": 0.25, "Appearance": 0.5, "Scene": None, "Advanced": 1.0}
    assert not overall["complete"] and len(overall["missing_tasks"]) == 9
    assert result["dimensions"]["prompt_following"]["macro"] == 1.0
    assert result["dimensions"]["prompt_following"]["score_from"] == {"prompt_following": 1}
    assert result["dimensions"]["consistency"]["macro"] == 0.0                         # a tie is wrong
    assert result["images"]["unique"] == 15 and result["images"]["failures"] == 1    # row 2's two are one image
    assert result["parse_failure_rate"] == pytest.approx(1 / 15)
    json.dumps(result, allow_nan=False)                                               # JSON-ready


def test_without_subscores_the_overall_reward_decides_every_dimension(bench):
    class Plain(FakeReward):
        def score(self, *args, **kwargs):
            batch = super().score(*args, **kwargs)
            batch.details = [{} for _ in batch.details]
            return batch

    result = editreward_bench.evaluate(Plain(), editreward_bench.read_rows(bench), progress=False)
    assert result["dimensions"]["prompt_following"]["macro"] == 0.0                  # R prefers the second
    assert result["dimensions"]["consistency"]["macro"] == 1.0
    assert result["dimensions"]["consistency"]["score_from"] == {"reward": 1}


def test_all_thirteen_tasks_make_a_complete_macro(tmp_path):
    rows = [{"task": t, "dimension": "overall", "first": (200 if i % 2 else 10, 0, 0), "second": (100, 0, 0)}
            for i, t in enumerate(editreward_bench.TASKS)]
    write_bench(tmp_path, rows)
    overall = editreward_bench.evaluate(FakeReward(), editreward_bench.read_rows(tmp_path),
                                        progress=False)["dimensions"]["overall"]
    assert overall["complete"] and overall["macro"] == pytest.approx(6 / 13)
    assert overall["groups"]["Scene"] == pytest.approx(0.5)                           # background 0 (i=7), extract 1


def test_the_cache_avoids_rescoring_and_keys_on_the_judge_and_avg_k(bench):
    rows = editreward_bench.read_rows(bench)
    path = bench / "cache.jsonl"
    reward = FakeReward()
    first = editreward_bench.evaluate(reward, rows, cache=ScoreCache(path), batch_size=5, progress=False)
    assert reward.images == 15 and reward.calls == 3
    again = FakeReward()
    second = editreward_bench.evaluate(again, rows, cache=ScoreCache(path), progress=False)
    assert again.images == 0 and second["dimensions"] == first["dimensions"]
    assert second["images"]["cached"] == 15
    with path.open("a") as f:
        f.write('{"key": "trunc')                                                    # a run died mid-write
    assert len(ScoreCache(path)) == 15
    other = FakeReward(name="another judge")
    editreward_bench.evaluate(other, rows, cache=ScoreCache(path), progress=False)
    assert other.images == 15
    ensemble = FakeReward()
    editreward_bench.evaluate(ensemble, rows, cache=ScoreCache(path), avg_k=4, progress=False)
    assert ensemble.images == 15 and set(ensemble.avg_ks) == {4}


def test_avg_k_needs_a_reward_that_has_it(bench):
    rows = editreward_bench.read_rows(bench)
    with pytest.raises(ValueError, match="Avg@K"):
        editreward_bench.evaluate(NoEnsembleReward(), rows, avg_k=2, progress=False)
    editreward_bench.evaluate(NoEnsembleReward(), rows, avg_k=1, progress=False)


def test_limit_and_duplicate_images_are_scored_once(tmp_path):
    rows = [{"task": "extract", "dimension": d, "first": (200, 0, 0), "second": (100, 0, 0), "instruction": "x"}
            for d in ("overall", "overall")]
    write_bench(tmp_path, rows)
    assert len(editreward_bench.read_rows(tmp_path, limit=1)) == 1
    reward = FakeReward()
    result = editreward_bench.evaluate(reward, editreward_bench.read_rows(tmp_path), progress=False)
    assert reward.images == 2 and result["images"]["unique"] == 2                     # same pixels, same key


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("instruction"), "row 2: missing field"),
    (lambda r: r.update(output_images=r["output_images"][:1]), "row 2: output_images must list two"),
    (lambda r: r.update(task_type="rotate"), "row 2: unknown task_type 'rotate'"),
    (lambda r: r.update(dimension="beauty"), "row 2: dimension 'beauty'"),
    (lambda r: r.update(input_image="images/nope.png"), "row 2 input_image: image file"),
    (lambda r: r.update(input_image={"bytes": "@@not base64@@"}), "row 2 input_image: embedded image"),
])
def test_malformed_rows_name_the_file_and_row(bench, change, message):
    path = bench / "rows.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records[1])
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(BenchDataError, match=message) as info:
        editreward_bench.read_rows(bench)
    assert "rows.jsonl" in str(info.value)


def test_bad_json_empty_folders_and_undecodable_images(tmp_path):
    with pytest.raises(BenchDataError, match="no .parquet or .jsonl"):
        editreward_bench.read_rows(tmp_path)
    (tmp_path / "rows.jsonl").write_text("{not json\n")
    with pytest.raises(BenchDataError, match="rows.jsonl row 1: not valid JSON"):
        editreward_bench.read_rows(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="somewhere: cannot decode"):
        ImageRef.parse("bad.png", tmp_path, "somewhere").load()


def test_parquet_rows_with_embedded_images(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from .eval_fakes import png_bytes
    table = pa.Table.from_pylist([{
        "key": "p0", "instruction": "add a hat", "task_type": "subject-add", "dimension": "overall",
        "input_image": {"bytes": png_bytes(solid((1, 2, 3))), "path": None},
        "output_images": [{"bytes": png_bytes(solid((200, 0, 0))), "path": None},
                          {"bytes": png_bytes(solid((100, 0, 0))), "path": None}]}])
    pq.write_table(table, tmp_path / "test.parquet")
    result = editreward_bench.evaluate(FakeReward(), editreward_bench.read_rows(tmp_path), progress=False)
    assert result["dimensions"]["overall"]["macro"] == 1.0


def test_nan_never_counts_as_correct():
    rows = [{"task": "compose", "dimension": "overall"}]
    nan = (math.nan, {})
    assert editreward_bench.summarize(rows, [(nan, (0.1, {}))])["overall"]["macro"] == 0.0
    assert editreward_bench.summarize(rows, [((0.2, {}), nan)])["overall"]["macro"] == 0.0
