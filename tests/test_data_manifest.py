"""Edit manifests: round trip, relative paths, validation errors naming line and field, atomic writes, group keys."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from editrl_engine.data import EditRow, GroupKey, ManifestError, file_digest, group_key, read_manifest, write_manifest


def full_row(folder, name="a", **changes) -> EditRow:
    row = EditRow(id=name, source=folder / "images" / f"{name}.png", instruction=f"Make the {name} blue.",
                  task_type="recolor", requirement="Only the colour changes.",
                  principles=("Follow: it is blue", "Keep: the rest"), target=folder / "targets" / f"{name}.png",
                  spec={"shapes": [{"kind": "circle", "size": 5}], "edit": {"kind": "recolor"}})
    return dataclasses.replace(row, **changes)


def test_round_trip_keeps_every_field_and_writes_relative_paths(tmp_path):
    outside = tmp_path.parent / "elsewhere.png"
    rows = [full_row(tmp_path, "a"),
            EditRow(id="b", source=tmp_path / "images" / "b.jpg", instruction="Remove the square."),
            full_row(tmp_path, "c", source=outside, principles=(), spec=None)]
    path = write_manifest(tmp_path / "tasks.jsonl", rows)
    assert read_manifest(path) == rows

    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert written[0]["source"] == "images/a.png" and written[0]["target"] == "targets/a.png"
    assert set(written[1]) == {"id", "source", "instruction"}              # optional fields left out when unset
    assert written[2]["source"] == os.path.abspath(outside)                  # outside the folder: absolute


def test_relative_paths_follow_the_manifest_when_its_folder_moves(tmp_path):
    write_manifest(tmp_path / "old" / "tasks.jsonl", [full_row(tmp_path / "old")])
    shutil.move(tmp_path / "old", tmp_path / "new")
    (row,) = read_manifest(tmp_path / "new" / "tasks.jsonl")
    assert row.source == tmp_path / "new" / "images" / "a.png"
    assert row.target == tmp_path / "new" / "targets" / "a.png"


def test_bad_rows_are_reported_by_line_and_field(tmp_path):
    good = {"id": "ok", "source": "a.png", "instruction": "Make it red."}
    lines = [
        json.dumps(good),                                                    # 1
        "{not json",                                                         # 2
        json.dumps({"id": "x", "source": "x.png"}),                          # 3: instruction missing
        "",                                                                  # 4: blank, skipped
        json.dumps({**good, "id": "y", "principles": "keep it"}),            # 5: principles not a list
        json.dumps({**good, "id": "z", "instrucion": "typo"}),               # 6: unknown field
        json.dumps({**good, "instruction": "again"}),                        # 7: duplicate id
        json.dumps(["a", "list"]),                                           # 8: not an object
        json.dumps({**good, "id": "w", "source": 3, "spec": [1]}),           # 9: two bad fields
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    found = {(line, field) for line, field, _ in caught.value.problems}
    assert found == {(2, None), (3, "instruction"), (5, "principles"), (6, "instrucion"), (7, "id"), (8, None),
                     (9, "source"), (9, "spec")}
    message = str(caught.value)
    assert str(path) in message
    assert "line 3, field 'instruction': missing (required)" in message
    assert "line 7, field 'id': duplicate id 'ok' (first on line 1)" in message
    assert "line 2: not valid JSON" in message


def test_write_is_atomic_and_rejects_duplicate_ids(tmp_path, monkeypatch):
    path = write_manifest(tmp_path / "tasks.jsonl", [full_row(tmp_path, "a")])
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(path, [full_row(tmp_path, "b")])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.jsonl"]     # no temporary file left behind

    with pytest.raises(ManifestError, match="duplicate id 'a'"):
        write_manifest(path, [full_row(tmp_path, "a"), full_row(tmp_path, "a")])
    assert path.read_bytes() == before


def test_group_key_is_instruction_and_source_bytes(tmp_path):
    (tmp_path / "one.png").write_bytes(b"same bytes")
    (tmp_path / "copy.png").write_bytes(b"same bytes")
    (tmp_path / "other.png").write_bytes(b"other bytes")
    row = EditRow(id="1", source=tmp_path / "one.png", instruction="Make it red.")
    same_image_other_name = EditRow(id="2", source=tmp_path / "copy.png", instruction="Make it red.")
    other_image = EditRow(id="3", source=tmp_path / "other.png", instruction="Make it red.")
    other_instruction = EditRow(id="4", source=tmp_path / "one.png", instruction="Make it blue.")

    key = group_key(row)
    assert isinstance(key, GroupKey) and key.instruction == "Make it red." and len(key.source_sha256) == 64
    assert group_key(same_image_other_name) == key
    assert group_key(other_image) != key                  # equal instructions on different images: two groups
    assert group_key(other_instruction) != key
    assert group_key(row, source_sha256="given") == GroupKey("Make it red.", "given")


def test_file_digest_follows_changes_to_the_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"first")
    first = file_digest(path)
    path.write_bytes(b"second, longer")
    assert file_digest(path) != first


# ---- several source images per row --------------------------------------------------------------------------
def test_multi_source_row_round_trips_and_keys_on_every_source_in_order(tmp_path):
    import hashlib
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"first image")
    (tmp_path / "images" / "b.png").write_bytes(b"second image")
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "m", "source": ["images/a.png", "images/b.png"],
                                "instruction": "Put the cat from image 2 into image 1."}) + "\n"
                    + json.dumps({"id": "s", "source": "images/a.png", "instruction": "Make it red."}) + "\n")
    multi, single = read_manifest(path)
    assert multi.source == (tmp_path / "images" / "a.png", tmp_path / "images" / "b.png")
    assert multi.sources == multi.source and multi.multi_source
    assert single.source == tmp_path / "images" / "a.png" and single.sources == (single.source,)
    assert not single.multi_source

    first = hashlib.sha256(b"first image").hexdigest()
    second = hashlib.sha256(b"second image").hexdigest()
    assert group_key(multi) == GroupKey("Put the cat from image 2 into image 1.", f"{first},{second}")
    assert group_key(single) == GroupKey("Make it red.", first)        # one-image keys are unchanged
    swapped = dataclasses.replace(multi, source=tuple(reversed(multi.source)))
    assert group_key(swapped) == GroupKey(multi.instruction, f"{second},{first}")

    again = write_manifest(tmp_path / "copy.jsonl", [multi, single])
    assert json.loads(again.read_text().splitlines()[0])["source"] == ["images/a.png", "images/b.png"]
    assert read_manifest(again) == [multi, single]


@pytest.mark.parametrize("bad", [[], ["images/a.png", ""], ["images/a.png", 3]])
def test_bad_source_list_names_row_and_field(tmp_path, bad):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "m", "source": bad, "instruction": "Do it."}) + "\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert caught.value.problems[0][:2] == (1, "source")
    assert "list of non-empty strings" in caught.value.problems[0][2]
    assert "line 1, field 'source'" in str(caught.value)
