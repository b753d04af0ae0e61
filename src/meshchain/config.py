"""The data directory: genesis.toml, config.toml, keys/, and the chain database.

Layout (like bitcoind's and cometbft's home directories):

    DATADIR/genesis.toml        the chain (shared by every node of the network)
    DATADIR/config.toml         this node's settings
    DATADIR/keys/node.key       the node's identity key (hex, mode 0600)
    DATADIR/keys/validator.key  present on validators (hex, mode 0600)
    DATADIR/chain.sqlite        blocks, state, indexes (SQLite, WAL)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import tomli_w

from meshchain.core.chain.genesis import Genesis, genesis_from_mapping, genesis_to_mapping
from meshchain.core.crypto.address import decode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.peers.address import (
    IPV4_GROUP_BITS,
    AddressError,
    GroupPolicy,
    NetAddress,
    parse_address,
)
from meshchain.core.peers.config import (
    MAX_BLOCK_RELAY_ONLY,
    MAX_INBOUND,
    MAX_INBOUND_PER_IP,
    MAX_OUTBOUND_FULL_RELAY,
    PeerConfig,
    PersistentPeer,
)
from meshchain.core.peers.limits import DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND, BandwidthLimits
from meshchain.core.relay.config import (
    DANDELION_EMBARGO_MEAN,
    DANDELION_EPOCH,
    DEFAULT_FLUFF_PROBABILITY,
    RelayConfig,
    RelayMode,
)
from meshchain.errors import ConfigError, CryptoError

GENESIS_FILE = "genesis.toml"
CONFIG_FILE = "config.toml"
KEYS_DIR = "keys"
NODE_KEY_FILE = "keys/node.key"
VALIDATOR_KEY_FILE = "keys/validator.key"
DATABASE_FILE = "chain.sqlite"
DEFAULT_P2P_PORT = 26656  # CometBFT's default p2p port
DEFAULT_API_PORT = 26657  # CometBFT's default RPC port
MAX_API_NETWORK = 64  # ours: `[api] network` URLs (as many as a devnet has nodes)
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


class _NodeSection(msgspec.Struct, forbid_unknown_fields=True):
    name: str = "node"


class _P2PSection(msgspec.Struct, forbid_unknown_fields=True):
    listen: str = f"127.0.0.1:{DEFAULT_P2P_PORT}"
    peers: list[str] = []  # persistent peers: always connected, redialled with backoff
    bootstrap: list[str] = []  # seeds: where discovery starts
    discovery: bool = True  # false: connect to `peers` only (bitcoind -connect)
    outbound: int = MAX_OUTBOUND_FULL_RELAY
    block_relay_only: int = MAX_BLOCK_RELAY_ONLY
    max_inbound: int = MAX_INBOUND
    max_inbound_per_ip: int = MAX_INBOUND_PER_IP
    ipv4_group_bits: int = IPV4_GROUP_BITS  # 24 or more lets a 127.0.0.0/8 devnet vary
    allow_local: bool = True  # store and dial loopback and private addresses
    # Received bytes a second, per peer and for the node; 0: no cap. Over a cap the node
    # stops reading (TCP slows the sender), nothing is dropped.
    max_peer_receive_bps: int = int(DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND)
    max_receive_bps: int = 0


class _RelaySection(msgspec.Struct, forbid_unknown_fields=True):
    mode: str = RelayMode.ANNOUNCE.value  # "announce" or "flood" (the baseline)
    compact_blocks: bool = True
    dandelion: bool = True  # Dandelion++ for the transactions this node sends and relays
    fluff_probability: float = DEFAULT_FLUFF_PROBABILITY
    embargo_mean: float = DANDELION_EMBARGO_MEAN  # seconds
    epoch: float = DANDELION_EPOCH  # seconds


class _ChainSection(msgspec.Struct, forbid_unknown_fields=True):
    validator_key: str = ""  # path relative to the data directory; "" on non-validators
    beneficiary: str = ""  # address paid for our blocks; "" means the validator's own


class _StorageSection(msgspec.Struct, forbid_unknown_fields=True):
    synchronous: str = "FULL"
    # The transaction index (lookups by txid and address, for the API). A validator
    # that serves no queries may go without it, as bitcoind's -txindex=0 or CometBFT's
    # indexer = "null"; a store once run without it cannot turn it back on.
    tx_index: bool = True


class _ApiSection(msgspec.Struct, forbid_unknown_fields=True):
    # JSON-RPC over HTTP and WebSocket, and /metrics, on one port; "" runs no API.
    listen: str = f"127.0.0.1:{DEFAULT_API_PORT}"
    # When set, write methods (broadcasts, unban) need `Authorization: Bearer <token>`.
    token: str = ""
    # Other nodes' API URLs (http://HOST:PORT): the dashboard's topology and propagation
    # then cover the whole network, asked by this node. A devnet fills it in.
    network: list[str] = []


class ConfigFile(msgspec.Struct, forbid_unknown_fields=True):
    node: _NodeSection = msgspec.field(default_factory=_NodeSection)
    p2p: _P2PSection = msgspec.field(default_factory=_P2PSection)
    chain: _ChainSection = msgspec.field(default_factory=_ChainSection)
    relay: _RelaySection = msgspec.field(default_factory=_RelaySection)
    storage: _StorageSection = msgspec.field(default_factory=_StorageSection)
    api: _ApiSection = msgspec.field(default_factory=_ApiSection)


@dataclass(frozen=True)
class DataDir:
    """A node's home directory, with typed access to what it holds."""

    path: Path
    config: ConfigFile = field(default_factory=ConfigFile)

    @property
    def database(self) -> Path:
        return self.path / DATABASE_FILE

    def genesis(self) -> Genesis:
        return load_genesis(self.path / GENESIS_FILE)

    def validator_key(self) -> SecretKey | None:
        relative = self.config.chain.validator_key
        return read_key(self.path / relative) if relative else None

    def node_key(self) -> SecretKey:
        return read_key(self.path / NODE_KEY_FILE)

    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.config.p2p.listen, "p2p.listen")

    def api_address(self) -> tuple[str, int] | None:
        """Where the API listens; None when `[api] listen` is empty (no API)."""
        listen = self.config.api.listen
        return parse_host_port(listen, "api.listen") if listen else None

    def api_network(self) -> list[str]:
        """`[api] network`, checked: http(s) URLs with a host, at most MAX_API_NETWORK."""
        urls = self.config.api.network
        if len(urls) > MAX_API_NETWORK:
            raise ConfigError(f"api.network: {len(urls)} URLs, at most {MAX_API_NETWORK}")
        for index, url in enumerate(urls):
            scheme, _, rest = url.partition("://")
            if scheme not in ("http", "https") or not rest.split("/")[0]:
                raise ConfigError(f"api.network[{index}]: {url!r} is not http://HOST:PORT")
        return list(urls)

    def bandwidth(self) -> BandwidthLimits:
        p2p = self.config.p2p
        for key in ("max_peer_receive_bps", "max_receive_bps"):
            if getattr(p2p, key) < 0:
                raise ConfigError(f"p2p.{key}: must not be negative (0: no cap)")
        return BandwidthLimits(p2p.max_peer_receive_bps or None, p2p.max_receive_bps or None)

    def peer_config(self, node_id: bytes, members: frozenset[bytes] | None) -> PeerConfig:
        """The `[p2p]` table as the peer manager's configuration (addresses are IPs)."""
        p2p = self.config.p2p
        for key in ("outbound", "block_relay_only", "max_inbound", "max_inbound_per_ip"):
            if getattr(p2p, key) < 0:
                raise ConfigError(f"p2p.{key}: must not be negative")
        try:
            groups = GroupPolicy(ipv4_bits=p2p.ipv4_group_bits, allow_local=p2p.allow_local)
        except AddressError as exc:
            raise ConfigError(f"p2p.ipv4_group_bits: {exc}") from None
        return PeerConfig(
            node_id=node_id,
            listen=_ip_address(p2p.listen, "p2p.listen"),
            bootstrap=tuple(
                _ip_address(text, f"p2p.bootstrap[{i}]") for i, text in enumerate(p2p.bootstrap)
            ),
            persistent=tuple(
                PersistentPeer(_ip_address(text, f"p2p.peers[{i}]"))
                for i, text in enumerate(p2p.peers)
            ),
            discovery=p2p.discovery,
            outbound_full_relay=p2p.outbound,
            block_relay_only=p2p.block_relay_only,
            max_inbound=p2p.max_inbound,
            max_inbound_per_ip=p2p.max_inbound_per_ip,
            groups=groups,
            members=members,
        )

    def relay_config(self) -> RelayConfig:
        """The `[relay]` table as the relay's configuration."""
        relay = self.config.relay
        modes = {mode.value: mode for mode in RelayMode}
        if relay.mode not in modes:
            raise ConfigError(f"relay.mode: {relay.mode!r} is not one of {', '.join(modes)}")
        try:
            return RelayConfig(
                mode=modes[relay.mode],
                compact_blocks=relay.compact_blocks,
                dandelion=relay.dandelion,
                fluff_probability=relay.fluff_probability,
                embargo_mean=relay.embargo_mean,
                epoch=relay.epoch,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def beneficiary(self) -> bytes | None:
        text = self.config.chain.beneficiary
        if not text:
            return None
        try:
            return decode_address(text)
        except CryptoError as exc:
            raise ConfigError(f"chain.beneficiary: {exc}") from None


def parse_host_port(text: str, key: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port); ConfigError naming `key` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port_text)


def _ip_address(text: str, key: str) -> NetAddress:
    """`IP:PORT` as a `NetAddress`; names are not resolved (a node dials what it is told)."""
    host, port = parse_host_port(text, key)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        return parse_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except AddressError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def write_toml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(data))


def load_genesis(path: Path) -> Genesis:
    try:
        return genesis_from_mapping(read_toml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_genesis(path: Path, genesis: Genesis) -> None:
    write_toml(path, genesis_to_mapping(genesis))


def open_datadir(path: Path) -> DataDir:
    if not (path / CONFIG_FILE).exists():
        raise ConfigError(f"{path}: not a meshchain data directory (run `meshchain init`)")
    try:
        config = msgspec.convert(read_toml(path / CONFIG_FILE), ConfigFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path / CONFIG_FILE}: {exc}") from None
    if config.storage.synchronous not in SYNCHRONOUS_MODES:
        raise ConfigError(f"storage.synchronous: must be one of {', '.join(SYNCHRONOUS_MODES)}")
    return DataDir(path, config)


def save_config(path: Path, config: ConfigFile) -> None:
    write_toml(path / CONFIG_FILE, msgspec.to_builtins(config))


def write_key(path: Path, key: SecretKey) -> None:
    """Write a secret key as hex, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.to_bytes().hex() + "\n")


def read_key(path: Path) -> SecretKey:
    try:
        return SecretKey.from_hex(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: key file missing") from None
    except CryptoError as exc:
        raise ConfigError(f"{path}: {exc}") from None
