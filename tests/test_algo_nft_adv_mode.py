"""algo.nft.adv_mode against a float64 reference of UniWorld-V2's definition (PKU-YuanGroup/Edit-R1,
scripts/train_nft_kontext.py): A clipped to ±adv_clip_max, then positive_only clamp(A, 0, max), negative_only
clamp(A, -max, 0), one_only 1 where A > 0 else 0, binary sign(A); r = clamp(A / max / 2 + 1/2, 0, 1)."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops
from editrl_engine.algo import NFTConfig, nft
from editrl_engine.engine import ConfigError, load_config

ADV = [-7.5, -5.0, -2.0, -0.25, 0.0, 0.1, 1.0, 4.0, 5.0, 12.0]


def reference_r(mode: str, clip: float) -> list[float]:
    """The peer's r, element by element in Python floats (float64)."""
    out = []
    for a in ADV:
        a = min(max(a, -clip), clip)
        if mode == "positive_only":
            a = min(max(a, 0.0), clip)
        elif mode == "negative_only":
            a = min(max(a, -clip), 0.0)
        elif mode == "one_only":
            a = 1.0 if a > 0 else 0.0
        elif mode == "binary":
            a = (a > 0) - (a < 0)
        out.append(min(max(a / clip / 2.0 + 0.5, 0.0), 1.0))
    return out


@pytest.mark.parametrize("clip", [5.0, 2.0])
@pytest.mark.parametrize("mode", ["all", "positive_only", "negative_only", "one_only", "binary"])
def test_optimality_follows_the_peer_definition(mode, clip):
    config = NFTConfig(adv_mode=mode, adv_clip_max=clip)
    r = nft.optimality(torch.tensor(ADV), config, backend="torch")                          # [N]
    torch.testing.assert_close(r.double(), torch.tensor(reference_r(mode, clip), dtype=torch.float64),
                               rtol=0, atol=1e-7)


def test_all_is_todays_behaviour():
    advantages = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 4                 # [64]
    assert torch.equal(nft.optimality(advantages, NFTConfig(), backend="torch"),
                       ops.nft_optimality(advantages, 5.0, backend="torch"))
    assert NFTConfig().adv_mode == "all"


def test_one_only_and_binary_values():
    r_one = nft.optimality(torch.tensor([3.0, -3.0, 0.0]), NFTConfig(adv_mode="one_only"), backend="torch")
    r_bin = nft.optimality(torch.tensor([3.0, -3.0, 0.0]), NFTConfig(adv_mode="binary"), backend="torch")
    assert r_one.tolist() == pytest.approx([0.6, 0.5, 0.5])                                # 1 / (2 * 5) + 1/2
    assert r_bin.tolist() == pytest.approx([0.6, 0.4, 0.5])


def test_unknown_mode_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"algo\.nft: adv_mode must be one of .*'binary'.*got 'best'"):
        load_config(None, ["algo.nft.adv_mode='best'"])
