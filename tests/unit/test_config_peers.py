"""The `[p2p]` table of config.toml as the peer manager's and the runtime's settings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from meshchain.config import ConfigFile, DataDir
from meshchain.core.peers.address import parse_address
from meshchain.errors import ConfigError


def home(**p2p: object) -> DataDir:
    return DataDir(Path("."), msgspec.convert({"p2p": p2p}, ConfigFile))


def test_the_p2p_table_becomes_the_peer_config() -> None:
    config = home(
        listen="127.0.0.1:7000",
        peers=["127.0.0.2:7000"],
        bootstrap=["localhost:7001", "[::1]:7002"],
        outbound=4,
        max_inbound=20,
        ipv4_group_bits=24,
        discovery=False,
    ).peer_config(b"\x01" * 32, None)
    assert config.listen == parse_address("127.0.0.1:7000")
    assert [p.address for p in config.persistent] == [parse_address("127.0.0.2:7000")]
    assert config.bootstrap == (parse_address("127.0.0.1:7001"), parse_address("[::1]:7002"))
    assert (config.outbound_full_relay, config.max_inbound, config.discovery) == (4, 20, False)
    assert config.groups.ipv4_bits == 24


@pytest.mark.parametrize(
    ("p2p", "key"),
    [
        ({"bootstrap": ["seed.example.org:7000"]}, "p2p.bootstrap[0]"),
        ({"peers": ["127.0.0.1"]}, "p2p.peers[0]"),
        ({"outbound": -1}, "p2p.outbound"),
        ({"ipv4_group_bits": 40}, "p2p.ipv4_group_bits"),
    ],
)
def test_a_bad_p2p_value_names_its_key(p2p: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        home(**p2p).peer_config(b"", None)


def test_bandwidth_caps_are_optional_and_never_negative() -> None:
    limits = home(max_peer_receive_bps=1_000_000, max_receive_bps=0).bandwidth()
    assert limits.per_peer_bytes_per_second == 1_000_000
    assert limits.global_bytes_per_second is None
    with pytest.raises(ConfigError, match=r"p2p\.max_receive_bps"):
        home(max_receive_bps=-5).bandwidth()


def relay_home(**relay: object) -> DataDir:
    return DataDir(Path("."), msgspec.convert({"relay": relay}, ConfigFile))


def test_the_relay_table_becomes_the_relay_config() -> None:
    from meshchain.core.relay.config import RelayConfig, RelayMode

    assert relay_home().relay_config() == RelayConfig()
    config = relay_home(mode="flood", dandelion=False, fluff_probability=0.2).relay_config()
    assert (config.mode, config.dandelion, config.fluff_probability) == (
        RelayMode.FLOOD,
        False,
        0.2,
    )


@pytest.mark.parametrize(
    ("relay", "key"),
    [({"mode": "gossip"}, "relay.mode"), ({"fluff_probability": 2.0}, "fluff_probability")],
)
def test_a_bad_relay_value_names_its_key(relay: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        relay_home(**relay).relay_config()
