"""The genesis file: it decides the chain, and its canonical encoding's hash is the chain id.

The TOML text is for people; the chain id hashes the canonical msgpack encoding of the
parsed values, so reformatting the file does not fork the chain. Parsing is strict: an
unknown key, a bad value or an impossible combination names the key and the problem.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from meshchain.core.chain.block import (
    BLOCK_VERSION,
    NO_BENEFICIARY,
    ZERO_HASH,
    Block,
    BlockHeader,
    transactions_root,
)
from meshchain.core.chain.ledger import MAX_MONEY, Ledger
from meshchain.core.crypto.address import decode_address, encode_address
from meshchain.core.crypto.hashing import tagged_hash
from meshchain.core.crypto.keys import parse_public_key
from meshchain.core.wire.codec import (
    Address20,
    PublicKey32,
    UInt,
    UInt16,
    WireStruct,
    encode,
)
from meshchain.errors import ConfigError, CryptoError

GENESIS_VERSION = 1
MAX_CHAIN_NAME_LENGTH = 64
MAX_MEMBER_NAME_LENGTH = 64
MAX_ALLOCATIONS = 100_000
MAX_MEMBERS = 1_000
MAX_VALIDATORS = 1_000
MAX_VOTING_POWER = 2**50  # total power stays far below int64 when summed
DEFAULT_BLOCK_INTERVAL_MS = 2_000
# BFT timeouts: CometBFT's defaults (propose 3 s, prevote/precommit 1 s, commit 1 s).
DEFAULT_BFT_TIMEOUT_PROPOSE_MS = 3_000
DEFAULT_BFT_TIMEOUT_VOTE_MS = 1_000
DEFAULT_BFT_TIMEOUT_COMMIT_MS = 1_000


class ChainMode(enum.Enum):
    PUBLIC = "public"
    CONSORTIUM = "consortium"
    PRIVATE = "private"


class EngineName(enum.Enum):
    POA = "poa"
    POW = "pow"
    BFT = "bft"


# Which engines each mode admits (DESIGN.md section 3).
ENGINES_FOR_MODE: Mapping[ChainMode, frozenset[EngineName]] = {
    ChainMode.PUBLIC: frozenset({EngineName.POW}),
    ChainMode.CONSORTIUM: frozenset({EngineName.BFT}),
    ChainMode.PRIVATE: frozenset({EngineName.POA, EngineName.BFT}),
}

Name = Annotated[str, msgspec.Meta(max_length=MAX_MEMBER_NAME_LENGTH)]
ChainName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAIN_NAME_LENGTH)]


class ConsensusParams(WireStruct, frozen=True):
    engine: str
    block_interval_ms: UInt = DEFAULT_BLOCK_INTERVAL_MS
    # Proof of work: expected hashes per block at genesis (devnets: a few thousand).
    pow_initial_difficulty: UInt = 0
    bft_timeout_propose_ms: UInt = DEFAULT_BFT_TIMEOUT_PROPOSE_MS
    bft_timeout_vote_ms: UInt = DEFAULT_BFT_TIMEOUT_VOTE_MS
    bft_timeout_commit_ms: UInt = DEFAULT_BFT_TIMEOUT_COMMIT_MS


class Allocation(WireStruct, frozen=True):
    address: Address20
    amount: UInt


class Member(WireStruct, frozen=True):
    """A node admitted to a consortium or private network, by its identity key."""

    node_key: PublicKey32
    name: Name = ""


class Validator(WireStruct, frozen=True):
    """A key that signs blocks or votes, with its voting power."""

    public_key: PublicKey32
    power: UInt = 1
    name: Name = ""


class Genesis(WireStruct, frozen=True):
    version: UInt16
    chain_name: ChainName
    mode: str
    timestamp_ms: UInt
    consensus: ConsensusParams
    block_reward: UInt = 0
    fee_burn_bps: UInt16 = 0
    allocations: Annotated[list[Allocation], msgspec.Meta(max_length=MAX_ALLOCATIONS)] = []
    members: Annotated[list[Member], msgspec.Meta(max_length=MAX_MEMBERS)] = []
    validators: Annotated[list[Validator], msgspec.Meta(max_length=MAX_VALIDATORS)] = []

    @property
    def chain_mode(self) -> ChainMode:
        return ChainMode(self.mode)

    @property
    def engine(self) -> EngineName:
        return EngineName(self.consensus.engine)


def chain_id(genesis: Genesis) -> bytes:
    return tagged_hash("meshchain/genesis", encode(genesis))


def validate_genesis(genesis: Genesis) -> None:
    """Semantic rules the types cannot say; raises ConfigError naming the key."""
    if genesis.version != GENESIS_VERSION:
        raise ConfigError(f"version: unsupported genesis version {genesis.version}")
    try:
        mode = ChainMode(genesis.mode)
    except ValueError:
        raise ConfigError(
            f"mode: {genesis.mode!r} is not one of public, consortium, private"
        ) from None
    try:
        engine = EngineName(genesis.consensus.engine)
    except ValueError:
        raise ConfigError(
            f"consensus.engine: {genesis.consensus.engine!r} is not poa, pow or bft"
        ) from None
    if engine not in ENGINES_FOR_MODE[mode]:
        allowed = ", ".join(sorted(e.value for e in ENGINES_FOR_MODE[mode]))
        raise ConfigError(
            f"consensus.engine: {mode.value} chains use {allowed}, not {engine.value}"
        )
    if genesis.consensus.block_interval_ms == 0:
        raise ConfigError("consensus.block_interval_ms: must be positive")
    if engine is EngineName.POW and genesis.consensus.pow_initial_difficulty == 0:
        raise ConfigError("consensus.pow_initial_difficulty: must be positive for pow")
    if genesis.fee_burn_bps > 10_000:
        raise ConfigError("fee_burn_bps: at most 10000 (all fees burnt)")
    if genesis.block_reward > MAX_MONEY:
        raise ConfigError("block_reward: exceeds MAX_MONEY")
    if engine in (EngineName.POA, EngineName.BFT) and not genesis.validators:
        raise ConfigError(f"validators: a {engine.value} chain needs at least one validator")
    if mode is not ChainMode.PUBLIC and not genesis.members:
        raise ConfigError(f"members: a {mode.value} chain needs its member node keys")
    _check_unique("validators", [v.public_key for v in genesis.validators])
    _check_unique("members", [m.node_key for m in genesis.members])
    _check_unique("allocations", [a.address for a in genesis.allocations])
    for position, validator in enumerate(genesis.validators):
        if not 0 < validator.power <= MAX_VOTING_POWER:
            raise ConfigError(f"validators[{position}].power: must be in 1..{MAX_VOTING_POWER}")
    for field, keys in (
        ("validators", [v.public_key for v in genesis.validators]),
        ("members", [m.node_key for m in genesis.members]),
    ):
        for position, key in enumerate(keys):
            try:
                parse_public_key(key)
            except CryptoError as exc:
                raise ConfigError(f"{field}[{position}]: {exc}") from None
    total = 0
    for position, allocation in enumerate(genesis.allocations):
        if allocation.amount == 0:
            raise ConfigError(f"allocations[{position}].amount: must be positive")
        total += allocation.amount
    if total > MAX_MONEY:
        raise ConfigError(f"allocations: total {total} exceeds MAX_MONEY {MAX_MONEY}")


def _check_unique(field: str, values: list[bytes]) -> None:
    seen: set[bytes] = set()
    for position, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{field}[{position}]: duplicate entry {value.hex()}")
        seen.add(value)


def genesis_ledger(genesis: Genesis) -> Ledger:
    ledger = Ledger()
    for allocation in genesis.allocations:
        ledger.credit_genesis(allocation.address, allocation.amount)
    return ledger


def genesis_block(genesis: Genesis, ledger: Ledger | None = None) -> Block:
    """Height 0: no transactions, the allocations as its state. `ledger`, when given, is
    `genesis_ledger(genesis)` already built (a thousand-account genesis costs ~10 ms)."""
    state = genesis_ledger(genesis) if ledger is None else ledger
    header = BlockHeader(
        version=BLOCK_VERSION,
        chain_id=chain_id(genesis),
        height=0,
        parent=ZERO_HASH,
        timestamp_ms=genesis.timestamp_ms,
        tx_root=transactions_root([]),
        state_root=state.state_root(),
        beneficiary=NO_BENEFICIARY,
    )
    return Block(header, [])


# --- the TOML face ----------------------------------------------------------------------


# The consensus table has the wire struct's fields, as a keyed (TOML) struct.
_ConsensusToml = msgspec.defstruct(
    "_ConsensusToml",
    [
        (field.name, field.type) if field.required else (field.name, field.type, field.default)
        for field in msgspec.structs.fields(ConsensusParams)
    ],
    forbid_unknown_fields=True,
)


class _AllocationToml(msgspec.Struct, forbid_unknown_fields=True):
    address: str
    amount: UInt


class _MemberToml(msgspec.Struct, forbid_unknown_fields=True):
    node_key: str
    name: Name = ""


class _ValidatorToml(msgspec.Struct, forbid_unknown_fields=True):
    public_key: str
    power: UInt = 1
    name: Name = ""


class _GenesisToml(msgspec.Struct, forbid_unknown_fields=True):
    """The TOML shape, checked with key paths in errors before the wire form is built."""

    chain_name: ChainName
    mode: str
    timestamp_ms: UInt
    consensus: _ConsensusToml  # type: ignore[valid-type]
    version: UInt16 = GENESIS_VERSION
    block_reward: UInt = 0
    fee_burn_bps: UInt16 = 0
    allocations: Annotated[list[_AllocationToml], msgspec.Meta(max_length=MAX_ALLOCATIONS)] = []
    members: Annotated[list[_MemberToml], msgspec.Meta(max_length=MAX_MEMBERS)] = []
    validators: Annotated[list[_ValidatorToml], msgspec.Meta(max_length=MAX_VALIDATORS)] = []


def _hex_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{where}: not a hex public key") from None
    if len(key) != 32:
        raise ConfigError(f"{where}: public key must be 32 bytes (64 hex digits)")
    return key


def _parse_address(text: str, where: str) -> bytes:
    try:
        return decode_address(text)
    except CryptoError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def genesis_from_mapping(data: Mapping[str, Any]) -> Genesis:
    """Build and validate a Genesis from parsed TOML; ConfigError names the bad key."""
    try:
        raw = msgspec.convert(dict(data), _GenesisToml)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"genesis: {exc}") from None
    try:
        genesis = msgspec.convert(
            [
                raw.version,
                raw.chain_name,
                raw.mode,
                raw.timestamp_ms,
                msgspec.to_builtins(msgspec.structs.astuple(raw.consensus)),
                raw.block_reward,
                raw.fee_burn_bps,
                [
                    [_parse_address(a.address, f"allocations[{i}].address"), a.amount]
                    for i, a in enumerate(raw.allocations)
                ],
                [
                    [_hex_key(m.node_key, f"members[{i}].node_key"), m.name]
                    for i, m in enumerate(raw.members)
                ],
                [
                    [_hex_key(v.public_key, f"validators[{i}].public_key"), v.power, v.name]
                    for i, v in enumerate(raw.validators)
                ],
            ],
            Genesis,
        )
    except msgspec.ValidationError as exc:
        raise ConfigError(f"genesis: {exc}") from None
    validate_genesis(genesis)
    return genesis


def genesis_to_mapping(genesis: Genesis) -> dict[str, Any]:
    """The TOML-ready form of a genesis (addresses as mc1…, keys as hex)."""
    consensus = msgspec.structs.asdict(genesis.consensus)
    return {
        "chain_name": genesis.chain_name,
        "mode": genesis.mode,
        "timestamp_ms": genesis.timestamp_ms,
        "version": genesis.version,
        "block_reward": genesis.block_reward,
        "fee_burn_bps": genesis.fee_burn_bps,
        "consensus": consensus,
        "allocations": [
            {"address": encode_address(a.address), "amount": a.amount} for a in genesis.allocations
        ],
        "members": [{"node_key": m.node_key.hex(), "name": m.name} for m in genesis.members],
        "validators": [
            {"public_key": v.public_key.hex(), "power": v.power, "name": v.name}
            for v in genesis.validators
        ],
    }
