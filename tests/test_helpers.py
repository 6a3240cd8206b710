"""The test helpers themselves: poisoning really poisons and restores, layouts keep values, and
EDITRL_REQUIRE_BACKENDS turns an unavailable backend's skip into a failure."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import backends

from . import conftest
from .helpers import LAYOUTS, SENTINEL, poisoned, relayout


def test_poisoned_fills_and_restores():
    originals = torch.empty, torch.empty_like, torch.Tensor.new_empty
    s32 = float(torch.tensor(SENTINEL, dtype=torch.float32))
    with poisoned() as poison:
        a = torch.empty(3)
        b = torch.empty_like(torch.zeros(2, dtype=torch.bfloat16))
        c = torch.empty(2, dtype=torch.bool)
        d = torch.zeros(2).new_empty(4)
        e = torch.empty(2, dtype=torch.int64)
    assert poison.count == 5
    assert a.tolist() == [s32] * 3 and d.tolist() == [s32] * 4
    assert float(b[0]) == pytest.approx(SENTINEL, rel=1e-2)
    assert c.tolist() == [True, True] and e.tolist() == [torch.iinfo(torch.int64).max] * 2
    with poisoned(high=False):
        assert torch.empty(1, dtype=torch.bool).tolist() == [False]
        assert torch.empty(1).tolist() == [-s32]
    assert (torch.empty, torch.empty_like, torch.Tensor.new_empty) == originals


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_keep_values(layout):
    t = torch.randn(3, 4, 5)
    out = relayout(t, layout)
    expected = t[:1].expand_as(t) if layout == "expand" else t
    assert torch.equal(out, expected)
    assert out.is_contiguous() == (layout == "contiguous")


def _make_unavailable(monkeypatch):
    real = backends._import_reason
    monkeypatch.setattr(backends, "_import_reason",
                        lambda m: (None, "ImportError: gone") if m == "editrl_engine._C" else real(m))


def test_unavailable_backend_is_skipped(monkeypatch):
    _make_unavailable(monkeypatch)
    monkeypatch.delenv("EDITRL_REQUIRE_BACKENDS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="editrl_engine._C"):
        conftest.require_backend("cpp", "sde_step")


def test_required_backend_that_is_unavailable_fails(monkeypatch):
    _make_unavailable(monkeypatch)
    monkeypatch.setenv("EDITRL_REQUIRE_BACKENDS", "triton, cpp")
    with pytest.raises(pytest.fail.Exception, match="EDITRL_REQUIRE_BACKENDS"):
        conftest.require_backend("cpp", "sde_step")


def test_missing_launcher_function_is_unavailable(monkeypatch):
    monkeypatch.setattr(backends, "launchers", lambda name: type("stub", (), {"__name__": "stub"})())
    monkeypatch.setattr(backends, "resolve", lambda name, device: name)
    reason = conftest.unavailable_reason("triton", ["sde_logprob"])
    assert "sde_logprob_forward" in reason and "sde_logprob_backward" in reason
