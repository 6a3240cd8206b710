"""docs/recipes.md is true: every shipped model config has its section, and every setting row of a section (a
dotted config key and a TOML value, both in backticks) equals what that config loads to."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from editrl_engine.engine.config import load_config, shipped_configs

TABLE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
ROW = re.compile(r"^\|\s*`([a-z_.]+)`\s*\|\s*`([^`]*)`\s*\|")


def sections(text: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """{config name: [(key, value text)]} from the '## `name`' sections' setting rows."""
    found: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (TABLE.read_text() if text is None else text).splitlines():
        heading = re.match(r"^## `([a-z0-9-]+)`", line)
        if heading:
            current = found.setdefault(heading.group(1), [])
        elif current is not None and (row := ROW.match(line)):
            current.append((row.group(1), row.group(2)))
    return found


def value_at(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


MODEL_CONFIGS = sorted(name for name in shipped_configs() if name != "demo")


def test_every_model_config_has_a_section_with_settings():
    table = sections()
    assert set(MODEL_CONFIGS) <= set(table), f"docs/recipes.md lacks {sorted(set(MODEL_CONFIGS) - set(table))}"
    assert all(len(table[name]) >= 15 for name in MODEL_CONFIGS)


def mismatches(name: str, rows: list[tuple[str, str]]) -> list[str]:
    config = load_config(name)
    wrong = []
    for key, text in rows:
        expected = tomllib.loads(f"v = {text}")["v"]
        actual = value_at(config, key)
        if actual != expected:
            wrong.append(f"{key}: table {expected!r}, config {actual!r}")
    return wrong


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_the_table_matches_the_config(name):
    assert mismatches(name, sections()[name]) == []


def test_a_wrong_row_is_caught():
    text = TABLE.read_text().replace("| `algo.grpo.clip_high` | `0.0005` |", "| `algo.grpo.clip_high` | `0.0001` |")
    assert mismatches("flux-kontext-grpo-editscore", sections(text)["flux-kontext-grpo-editscore"]) == [
        "algo.grpo.clip_high: table 0.0001, config 0.0005"]
