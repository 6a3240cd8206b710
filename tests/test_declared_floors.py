"""Declared ranges are tested ranges: every ">=" floor in pyproject.toml (dependencies and every extra) is pinned in
.ci/floors.txt, the constraints file of CI's second environment, and that file pins nothing else."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
FLOORS = ROOT / ".ci" / "floors.txt"


def declared_floors(pyproject: dict) -> dict[str, Version]:
    """{name: floor} over the dependencies and every extra; a name declared twice must have one floor."""
    project = pyproject["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    floors: dict[str, Version] = {}
    for line in lines:
        requirement = Requirement(line)
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line!r}: every dependency declares exactly one '>=' floor"
        name = canonicalize_name(requirement.name)
        assert floors.get(name, lower[0]) == lower[0], f"{name} is declared with two floors"
        floors[name] = lower[0]
    return floors


def pinned_floors(text: str) -> dict[str, Version]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{line!r}: the floors file pins with =="
        pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def mismatches(declared: dict[str, Version], pinned: dict[str, Version]) -> list[str]:
    problems = [f"{name}: pyproject floor {floor}, floors.txt {pinned.get(name, 'missing')}"
                for name, floor in sorted(declared.items()) if pinned.get(name) != floor]
    problems += [f"{name}: pinned in floors.txt but not declared" for name in sorted(set(pinned) - set(declared))]
    return problems


def test_every_floor_is_pinned_in_the_floors_environment():
    declared = declared_floors(tomllib.loads(PYPROJECT.read_text()))
    pinned = pinned_floors(FLOORS.read_text())
    assert {"torch", "diffusers", "transformers", "peft", "triton"} <= set(declared)
    assert mismatches(declared, pinned) == []


def test_a_raised_floor_without_its_pin_is_caught():
    declared = {"torch": Version("2.13"), "diffusers": Version("0.38")}
    assert mismatches(declared, {"torch": Version("2.13.0"), "diffusers": Version("0.38.0")}) == []
    assert mismatches(declared, {"torch": Version("2.13.0"), "diffusers": Version("0.37.0")})
    assert mismatches(declared, {"torch": Version("2.13.0")})
    assert mismatches(declared, {**{"torch": Version("2.13"), "diffusers": Version("0.38")}, "numpy": Version("2")})
    with pytest.raises(AssertionError, match="exactly one"):
        declared_floors({"project": {"dependencies": ["torch"], "optional-dependencies": {}}})
