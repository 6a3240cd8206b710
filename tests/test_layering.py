"""The import rules of docs/design.md §1, read from every module's own import statements (top level and inside
functions alike): the kernels know no models, the loop is known only to the engine, training and serving do not
import one another, and nothing imports the command line but the command line itself."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "editrl_engine"
CLI = {"editrl_engine.cli", "editrl_engine.cli_serve", "editrl_engine.cli_verifier"}
MODEL_PACKAGES = ("editrl_engine.policy", "editrl_engine.vlm", "editrl_engine.reward", "diffusers", "transformers",
                  "peft")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> set[str]:
    """Every module `path` imports, as absolute names (relative imports resolved against `name`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imported(p, module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}
KERNELS = {f"kernels.{p.stem}": imported(p, f"kernels.{p.stem}") for p in sorted((ROOT / "kernels").glob("*.py"))}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offenders(modules: dict[str, set[str]], importer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} imports {i}" for m, imports in modules.items() if under(m, importer)
                  for i in imports if any(under(i, f) for f in forbidden))


def test_the_modules_were_found():
    assert len(MODULES) > 50 and "editrl_engine.engine.trainer" in MODULES and len(KERNELS) >= 5


@pytest.mark.parametrize("importer, forbidden", [
    ("editrl_engine.engine", ("editrl_engine.serve", "editrl_engine.verifier_train")),
    ("editrl_engine.verifier_train", ("editrl_engine.serve", "editrl_engine.policy", "editrl_engine.engine.trainer")),
    ("editrl_engine.serve", ("editrl_engine.engine",)),
    ("editrl_engine.policy", ("editrl_engine.engine", "editrl_engine.reward", "editrl_engine.serve")),
    ("editrl_engine.reward", ("editrl_engine.engine", "editrl_engine.policy", "editrl_engine.serve",
                               "editrl_engine.verifier_train")),
    ("editrl_engine.algo", ("editrl_engine.engine", "editrl_engine.policy", "editrl_engine.reward")),
    ("editrl_engine.data", ("editrl_engine.engine", "editrl_engine.serve")),
    ("editrl_engine.vlm", ("editrl_engine.engine", "editrl_engine.serve", "editrl_engine.policy")),
])
def test_layers_import_only_downwards(importer, forbidden):
    assert offenders(MODULES, importer, forbidden) == []


def test_nothing_imports_the_command_line_but_itself():
    users = sorted(f"{m} imports {i}" for m, imports in MODULES.items() if m not in CLI
                   for i in imports if any(under(i, c) for c in CLI))
    assert users == []


def test_the_kernels_know_no_models():
    assert offenders(KERNELS, "kernels", MODEL_PACKAGES + ("editrl_engine.engine", "editrl_engine.algo")) == []


def test_the_rule_reader_sees_a_violation():
    """The reader resolves relative imports: a serve module importing the engine would be caught."""
    real = imported(PACKAGE / "serve" / "rerank.py", "editrl_engine.serve.rerank")     # `from ..reward.base import`
    assert "editrl_engine.reward.base" in real
    fake = {"editrl_engine.serve.rerank": real | {"editrl_engine.engine.trainer"}}
    assert offenders(fake, "editrl_engine.serve", ("editrl_engine.engine",)) == [
        "editrl_engine.serve.rerank imports editrl_engine.engine.trainer"]
