"""The devnet's demo wallets fit under the supply cap however many are asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshchain.cli.devnet import WALLET_FUNDS, create_network, wallet_funds
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.chain.ledger import MAX_MONEY


@pytest.mark.parametrize("wallets", [2, 8, 21, 22, 100, 1000])
def test_grants_stay_under_half_the_supply_cap(wallets: int) -> None:
    grant = wallet_funds(wallets)
    assert 0 < grant <= WALLET_FUNDS
    assert grant * wallets <= MAX_MONEY // 2


def test_a_devnet_with_many_wallets_is_created(tmp_path: Path) -> None:
    net, keys = create_network(tmp_path, 2, ChainMode.PRIVATE, 100, None)
    assert len(keys) == 100
    assert len(net.nodes) == 2
    assert (tmp_path / "wallets").is_dir()
