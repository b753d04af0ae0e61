from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from meshchain.chainkit import ChainKit
from meshchain.config import load_genesis, save_genesis
from meshchain.core.chain.genesis import (
    ChainMode,
    chain_id,
    genesis_block,
    genesis_from_mapping,
    genesis_to_mapping,
)
from meshchain.core.crypto.address import encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import ConfigError


def mapping() -> dict[str, Any]:
    return genesis_to_mapping(ChainKit(seed=3).genesis)


def test_toml_round_trip_keeps_chain_id(tmp_path: Path) -> None:
    genesis = ChainKit(seed=3).genesis
    save_genesis(tmp_path / "genesis.toml", genesis)
    assert chain_id(load_genesis(tmp_path / "genesis.toml")) == chain_id(genesis)


def test_reformatting_the_file_keeps_the_chain_id(tmp_path: Path) -> None:
    genesis = ChainKit(seed=3).genesis
    path = tmp_path / "genesis.toml"
    save_genesis(path, genesis)
    text = path.read_text().replace(" = ", "   =   ")
    path.write_text("# a comment\n\n" + text)
    assert chain_id(load_genesis(path)) == chain_id(genesis)


def test_any_change_changes_the_chain_id() -> None:
    base = mapping()
    changed = mapping()
    changed["allocations"][0]["amount"] += 1
    assert chain_id(genesis_from_mapping(base)) != chain_id(genesis_from_mapping(changed))


def test_genesis_block_commits_to_allocations() -> None:
    genesis = ChainKit(seed=3).genesis
    block = genesis_block(genesis)
    assert block.header.height == 0
    assert block.header.chain_id == chain_id(genesis)
    other = genesis_from_mapping({**mapping(), "allocations": mapping()["allocations"][:1]})
    assert genesis_block(other).header.state_root != block.header.state_root


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(colour="blue"), "colour"),
        (lambda m: m["consensus"].update(speed=3), "speed"),
        (lambda m: m.update(mode="galactic"), "mode"),
        (lambda m: m["consensus"].update(engine="pow"), "consensus.engine"),
        (lambda m: m["consensus"].update(engine="magic"), "consensus.engine"),
        (lambda m: m.update(validators=[]), "validators"),
        (lambda m: m.update(members=[]), "members"),
        (lambda m: m["validators"].append(dict(m["validators"][0])), "duplicate"),
        (lambda m: m["validators"][0].update(power=0), "power"),
        (lambda m: m["validators"][0].update(public_key="zz"), "validators[0].public_key"),
        (lambda m: m["validators"][0].update(public_key="ff" * 32), "validators[0]"),
        (lambda m: m["allocations"][0].update(address="mc1qqqq"), "allocations[0].address"),
        (lambda m: m["allocations"][0].update(amount=0), "allocations[0].amount"),
        (lambda m: m["allocations"][0].update(amount=-5), "amount"),
        (lambda m: m["allocations"][0].update(amount=2**70), "amount"),
        (lambda m: m.update(fee_burn_bps=10_001), "fee_burn_bps"),
        (lambda m: m.update(chain_name=""), "chain_name"),
        (lambda m: m.update(version=2), "version"),
        (lambda m: m["consensus"].update(block_interval_ms=0), "block_interval_ms"),
        (lambda m: m.pop("consensus"), "consensus"),
    ],
)
def test_bad_genesis_names_the_problem(change: Any, message: str) -> None:
    data = mapping()
    change(data)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        genesis_from_mapping(data)


def test_public_mode_needs_pow_difficulty() -> None:
    data = mapping()
    data.update(mode=ChainMode.PUBLIC.value, members=[], validators=[])
    data["consensus"].update(engine="pow", pow_initial_difficulty=0)
    with pytest.raises(ConfigError, match="pow_initial_difficulty"):
        genesis_from_mapping(data)
    data["consensus"].update(pow_initial_difficulty=1000)
    assert genesis_from_mapping(data).chain_mode is ChainMode.PUBLIC


def test_total_allocations_are_bounded() -> None:
    data = mapping()
    keys = [SecretKey.generate(random.Random(i)) for i in range(3)]
    from meshchain.core.crypto.address import address_from_public_key

    data["allocations"] = [
        {"address": encode_address(address_from_public_key(k.public_key)), "amount": 10**15}
        for k in keys
    ]
    with pytest.raises(ConfigError, match="MAX_MONEY"):
        genesis_from_mapping(data)


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    path.write_text("mode = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_genesis(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_genesis(tmp_path / "missing.toml")
