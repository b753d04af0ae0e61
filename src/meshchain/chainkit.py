"""Build real chains quickly: funded keys, signed transfers, sealed PoA blocks.

For tests, benchmarks and the simulator: everything is real (real signatures, real
validation); only the keys come from a seeded `random.Random` so runs repeat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshchain.core.chain.block import Block
from meshchain.core.chain.chainstate import ChainState, ChainUpdate
from meshchain.core.chain.genesis import (
    Allocation,
    ConsensusParams,
    Genesis,
    Member,
    Validator,
    validate_genesis,
)
from meshchain.core.chain.tx import Transaction, TxBody, VerifiedTx, sign_transaction
from meshchain.core.consensus.poa import ProofOfAuthority
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.store import ChainStore, MemoryStore

KIT_GENESIS_TIME_MS = 1_700_000_000_000
KIT_BLOCK_INTERVAL_MS = 1_000
KIT_FUNDS = 10**12
KIT_REWARD = 5_000


@dataclass
class ChainKit:
    """A private PoA chain with `accounts` funded keys and one authority."""

    seed: int = 0
    accounts: int = 4
    fee_burn_bps: int = 2_500
    rng: random.Random = field(init=False)
    keys: list[SecretKey] = field(init=False)
    authority: SecretKey = field(init=False)
    genesis: Genesis = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.authority = SecretKey.generate(self.rng)
        self.keys = [SecretKey.generate(self.rng) for _ in range(self.accounts)]
        self.genesis = Genesis(
            version=1,
            chain_name="chainkit",
            mode="private",
            timestamp_ms=KIT_GENESIS_TIME_MS,
            consensus=ConsensusParams("poa", KIT_BLOCK_INTERVAL_MS),
            block_reward=KIT_REWARD,
            fee_burn_bps=self.fee_burn_bps,
            allocations=[Allocation(self.address(i), KIT_FUNDS) for i in range(self.accounts)],
            members=[Member(self.authority.public_key)],
            validators=[Validator(self.authority.public_key, 1)],
        )
        validate_genesis(self.genesis)
        self.engine = ProofOfAuthority(self.genesis)

    def address(self, index: int) -> bytes:
        return address_from_public_key(self.keys[index].public_key)

    def chain(self, store: ChainStore | None = None) -> ChainState:
        return ChainState(self.genesis, self.engine, store or MemoryStore(), SignatureVerifier())

    def transfer(
        self,
        chain: ChainState | bytes,
        sender: int,
        recipient: int | bytes,
        amount: int,
        fee: int,
        nonce: int,
        data: bytes = b"",
    ) -> Transaction:
        chain_id = chain if isinstance(chain, bytes) else chain.chain_id
        to = self.address(recipient) if isinstance(recipient, int) else recipient
        key = self.keys[sender]
        body = TxBody(chain_id, key.public_key, to, amount, fee, nonce, data)
        return sign_transaction(body, key, aux_rand=self.rng.randbytes(32))

    def next_block(
        self,
        chain: ChainState,
        txs: list[VerifiedTx],
        *,
        parent_offset_ms: int = KIT_BLOCK_INTERVAL_MS,
    ) -> Block:
        """A sealed block on the chain's tip holding those of `txs` that apply."""
        timestamp = chain.tip_header.timestamp_ms + parent_offset_ms
        block, _ = chain.build_block(
            txs, timestamp, address_from_public_key(self.authority.public_key)
        )
        return Block(self.engine.seal(block.header, self.authority), block.transactions)

    def now_after(self, block: Block) -> float:
        """A wall-clock `now` (seconds) at which `block` is not from the future."""
        return block.header.timestamp_ms / 1000 + 1

    def extend(self, chain: ChainState, txs: list[VerifiedTx]) -> ChainUpdate:
        block = self.next_block(chain, txs)
        return chain.add_block(block, self.now_after(block))
