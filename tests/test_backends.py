"""Backend dispatch: backend=None -> EDITRL_BACKEND -> triton for CUDA, cpp for CPU; unavailable backends raise
BackendUnavailable naming what is missing; editrl_engine.info() reports what runs here."""
from __future__ import annotations

import pytest
import torch

import editrl_engine
from editrl_engine import backends, ops, reference

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("EDITRL_BACKEND", raising=False)
    return monkeypatch


def _missing(monkeypatch, module_name):
    """Make the import of `module_name` (triton or editrl_engine._C) look failed to editrl_engine.backends."""
    real = backends._import_reason

    def fake(module):
        if module == module_name:
            return None, f"ModuleNotFoundError: No module named '{module_name}'"
        return real(module)

    monkeypatch.setattr(backends, "_import_reason", fake)


class Recorder:
    """A stand-in launcher module that records which op was launched."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def nft_optimality(self, adv, clip):
        self.calls.append("nft_optimality")
        return torch.full_like(adv, 0.25)


def _record_launchers(monkeypatch):
    made = {}

    def launchers(name):
        if name not in backends.BACKENDS[1:]:
            raise ValueError(name)
        return made.setdefault(name, Recorder(name))

    monkeypatch.setattr(backends, "launchers", launchers)
    return made


def _record_torch(monkeypatch):
    calls = []
    real = reference.nft_optimality
    monkeypatch.setattr(reference, "nft_optimality", lambda *a, **k: calls.append("torch") or real(*a, **k))
    return calls


# ---------------------------------------------------------------------------------------------------------
# which backend runs
# ---------------------------------------------------------------------------------------------------------
def test_default_is_cpp_on_cpu_and_triton_on_cuda(no_env):
    made = _record_launchers(no_env)
    assert backends.resolve(None, CPU) == "cpp"
    assert backends.resolve(None, CUDA) == "triton"
    ops.nft_optimality(torch.zeros(3))
    assert made["cpp"].calls == ["nft_optimality"]
    assert "triton" not in made or not made["triton"].calls


def test_env_overrides_the_device_default(no_env):
    made = _record_launchers(no_env)
    torch_calls = _record_torch(no_env)
    no_env.setenv("EDITRL_BACKEND", "torch")
    assert backends.resolve(None, CPU) == "torch" and backends.resolve(None, CUDA) == "torch"
    r = ops.nft_optimality(torch.tensor([5.0]))
    assert torch_calls == ["torch"] and float(r) == 1.0 and not any(m.calls for m in made.values())
    no_env.setenv("EDITRL_BACKEND", "triton")
    assert backends.resolve(None, CPU) == "triton"  # conftest runs Triton through its interpreter
    assert float(ops.nft_optimality(torch.tensor([5.0]))) == 0.25  # the recording stand-in answered
    assert made["triton"].calls == ["nft_optimality"]


def test_explicit_backend_beats_env(no_env):
    made = _record_launchers(no_env)
    torch_calls = _record_torch(no_env)
    no_env.setenv("EDITRL_BACKEND", "bogus")
    ops.nft_optimality(torch.zeros(3), backend="torch")
    assert torch_calls == ["torch"]
    no_env.setenv("EDITRL_BACKEND", "torch")
    ops.nft_optimality(torch.zeros(3), backend="cpp")
    assert made["cpp"].calls == ["nft_optimality"] and torch_calls == ["torch"]


def test_empty_env_means_unset(no_env):
    no_env.setenv("EDITRL_BACKEND", "")
    _record_launchers(no_env)
    assert backends.resolve(None, CPU) == "cpp"


@pytest.mark.parametrize("name", ["torch", "triton", "cpp"])
def test_each_backend_resolves_to_itself(no_env, name):
    _record_launchers(no_env)
    assert backends.resolve(name, CPU) == name


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_bad_names_are_value_errors(no_env):
    with pytest.raises(ValueError, match=r"backend='gpu' is not a backend; choose one of torch, triton, cpp"):
        backends.resolve("gpu", CPU)
    no_env.setenv("EDITRL_BACKEND", "TRITON")
    with pytest.raises(ValueError, match=r"EDITRL_BACKEND='TRITON' is not a backend"):
        backends.resolve(None, CPU)


def test_backend_unavailable_is_a_runtime_error():
    assert issubclass(backends.BackendUnavailable, RuntimeError)


def test_triton_on_cpu_needs_the_interpreter(no_env):
    no_env.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(backends.BackendUnavailable, match=r"TRITON_INTERPRET=1"):
        backends.resolve("triton", CPU)
    with pytest.raises(backends.BackendUnavailable, match=r"TRITON_INTERPRET=1"):
        ops.nft_optimality(torch.zeros(2), backend="triton")


def test_cpp_refuses_cuda_tensors(no_env):
    with pytest.raises(backends.BackendUnavailable, match=r"backend 'cpp' runs on CPU tensors, got cuda"):
        backends.resolve("cpp", CUDA)


def test_missing_triton_is_named(no_env):
    _missing(no_env, "triton")
    with pytest.raises(backends.BackendUnavailable, match=r"needs the triton package.*pip install triton"):
        backends.resolve("triton", CPU)
    with pytest.raises(backends.BackendUnavailable, match=r"triton"):
        backends.resolve(None, CUDA)  # the CUDA default
    with pytest.raises(backends.BackendUnavailable, match=r"triton"):
        ops.nft_optimality(torch.zeros(2), backend="triton")
    assert backends.available()["triton"].startswith("missing: ModuleNotFoundError")


def test_missing_extension_is_named(no_env):
    _missing(no_env, "editrl_engine._C")
    with pytest.raises(backends.BackendUnavailable, match=r"editrl_engine\._C.*pip install -e \."):
        backends.resolve("cpp", CPU)
    with pytest.raises(backends.BackendUnavailable, match=r"editrl_engine\._C"):
        ops.cfg_combine(torch.ones(1, 3), torch.ones(1, 3), 2.0)  # the CPU default
    assert backends.available()["cpp"].startswith("missing: ModuleNotFoundError")
    rows = [line.split(None, 1) for line in editrl_engine.info().splitlines() if line.startswith("  ")]
    assert ["cpp", "missing: ModuleNotFoundError: No module named 'editrl_engine._C'"] in rows
    # the torch backend still runs
    out = ops.cfg_combine(torch.ones(1, 3), torch.zeros(1, 3), 2.0, backend="torch")
    assert out.tolist() == [[2.0, 2.0, 2.0]]


# ---------------------------------------------------------------------------------------------------------
# info()
# ---------------------------------------------------------------------------------------------------------
def test_info_reports_versions_and_backends():
    text = editrl_engine.info()
    lines = text.splitlines()
    assert lines[0] == f"editrl_engine {editrl_engine.__version__}"
    assert f"torch {torch.__version__}" in text
    triton = backends.triton_module()
    assert (f"triton {triton.__version__}" if triton else "triton not installed") in text
    assert "backends:" in lines
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[lines.index("backends:") + 1:]}
    assert set(rows) == {"torch", "triton", "cpp"}
    assert rows["torch"] == f"ok: torch {torch.__version__}"
    if backends.cpp_module() is not None:
        assert rows["cpp"] == f"ok: {backends.cpp_module().build_info()}"
        assert "C++17" in rows["cpp"]
    if triton is not None and backends.triton_interpret() and not torch.cuda.is_available():
        assert rows["triton"] == f"ok: triton {triton.__version__} on cpu (TRITON_INTERPRET=1)"


def test_available_without_interpreter_or_cuda(monkeypatch):
    if torch.cuda.is_available() or backends.triton_module() is None:
        pytest.skip("needs triton installed and no CUDA device")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "set TRITON_INTERPRET=1" in backends.available()["triton"]
