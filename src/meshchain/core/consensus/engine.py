"""What the chain core asks of a consensus engine.

The chain core knows blocks, state and fork choice; an engine knows who may make a block
and how much a block weighs. Engines that need timers (BFT) return them as actions from
the node; this interface is the part every engine shares.
"""

from __future__ import annotations

from typing import Protocol

from meshchain.core.chain.block import BlockHeader
from meshchain.core.crypto.keys import SecretKey


class ConsensusEngine(Protocol):
    name: str
    # How far ahead of our clock a block's timestamp may be before we refuse it for now.
    max_future_drift_ms: int
    # Finality: a block this many blocks below the tip can never be reverted (0: once
    # connected, as BFT commits); None: never absolutely (proof of work, authority).
    finality_depth: int | None
    # True when a block is proven by its child's header (a BFT header carries the commit
    # certificate of its parent): sync then fetches only blocks whose child header it has
    # validated, and leaves the newest block to consensus catch-up.
    certified_by_child: bool

    def check_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        """Raise ValidationError(BAD_CONSENSUS or BAD_TIMESTAMP) if the engine rejects it."""
        ...

    def block_weight(self, header: BlockHeader) -> int:
        """This block's contribution to its chain's cumulative weight (fork choice)."""
        ...

    def can_propose(self, height: int, public_key: bytes) -> bool:
        """Whether the holder of `public_key` may make the block at `height`."""
        ...

    def template_consensus(self, parent: BlockHeader) -> bytes:
        """A new block's consensus field before sealing (a PoW target; empty for PoA)."""
        ...

    def seal(self, header: BlockHeader, key: SecretKey) -> BlockHeader:
        """Fill the header's consensus field so that `check_header` accepts it."""
        ...
