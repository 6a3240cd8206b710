"""No module of the repository shadows an installed distribution or the standard library.

`python -m pytest`, `python -m editrl_engine.cli` and torchrun put the repository root first on sys.path, and
every `python bench/<x>.py` puts bench/ there; a module or regular package in those folders whose name is also
the top-level import name of an installed distribution wins over the distribution (transformers imports
Hugging Face's `kernels` at start-up, and a folder `kernels/` with an __init__.py broke every entry point).
Each check runs in a fresh interpreter with the folder first on sys.path, exactly as those entry points do.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"root": ROOT, "bench": ROOT / "bench", "tests": ROOT / "tests"}
OWN_NAMES = {"editrl_engine"}                       # our own distribution's package, installed from ROOT


def top_level_names(folder: Path) -> dict[str, str]:
    """Names `import NAME` could find in `folder`: module files, regular packages and namespace folders."""
    names = {}
    for entry in folder.iterdir():
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py" and entry.stem.isidentifier():
            names[entry.stem] = "module"
        elif entry.is_dir() and entry.name.isidentifier():
            names[entry.name] = "package" if (entry / "__init__.py").exists() else "namespace"
    return names


def claimed_names() -> set[str]:
    """Top-level import names owned by an installed distribution or by the standard library."""
    return set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)


PROBE = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for name in json.loads(sys.argv[2]):
    spec = importlib.util.find_spec(name)
    places = [spec.origin or ""] + list(spec.submodule_search_locations or [])
    out[name] = [p for p in places if p and p not in ("built-in", "frozen")]
print(json.dumps(out))
"""


def resolved_places(folder: Path, names: list[str]) -> dict[str, list[str]]:
    """Where each name resolves to in a fresh interpreter with `folder` first on sys.path."""
    done = subprocess.run([sys.executable, "-I", "-c", PROBE, str(folder), json.dumps(names)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("folder_name", sorted(FOLDERS))
def test_no_repository_module_shadows_an_installed_distribution(folder_name):
    folder = FOLDERS[folder_name]
    names = top_level_names(folder)
    claimed = claimed_names() - OWN_NAMES
    clashes = sorted(name for name in names if name in claimed)
    # A module file or a regular package always wins over site-packages when its folder comes first.
    regular = [name for name in clashes if names[name] != "namespace"]
    assert not regular, (f"{folder_name}: {regular} have the top-level import name of an installed "
                         "distribution or the standard library; rename them")
    # A folder without __init__.py is only a namespace portion: the distribution must still win.
    if clashes:
        places = resolved_places(folder, clashes)
        shadowed = {name: where for name, where in places.items()
                    if any(Path(p).resolve().is_relative_to(folder) for p in where)}
        assert not shadowed, f"{folder_name}: these resolve into the repository: {shadowed}"


def test_the_kernels_folder_is_no_regular_package():
    """kernels/ ships as editrl_engine.kernels; importable as `kernels` it would hide Hugging Face's package."""
    assert (ROOT / "kernels").is_dir()
    assert not (ROOT / "kernels" / "__init__.py").exists()
    if "kernels" in importlib.metadata.packages_distributions():
        where = resolved_places(ROOT, ["kernels"])["kernels"]
        assert where and not any(Path(p).resolve().is_relative_to(ROOT) for p in where), where


def test_the_probe_can_see_a_shadowing_module(tmp_path):
    """The check itself fails on a shadowing module: a `tqdm.py` in a folder first on sys.path wins."""
    (tmp_path / "tqdm.py").write_text("")
    assert top_level_names(tmp_path) == {"tqdm": "module"}
    assert "tqdm" in claimed_names()
    where = resolved_places(tmp_path, ["tqdm"])["tqdm"]
    assert any(Path(p).resolve().is_relative_to(tmp_path.resolve()) for p in where)


def test_the_triton_kernels_import_through_the_package():
    pytest.importorskip("triton")
    import editrl_engine.kernels.sde as sde
    from editrl_engine import triton_launchers

    assert Path(sde.__file__).resolve().parent.name == "kernels"
    assert triton_launchers.sde_step is sde.sde_step
