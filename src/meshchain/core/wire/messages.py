"""Peer-to-peer messages: a msgpack array whose first element is the message type id.

The transport issue adds the session messages (hello, ping, pong); type ids are stable
and listed in docs/protocol.md once it exists.
"""

from __future__ import annotations

from meshchain.core.chain.block import Block
from meshchain.core.chain.tx import Transaction
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE, Codec, WireStruct


class TransactionMessage(WireStruct, tag=1, frozen=True):
    """One transaction, relayed (flood relay until announce-then-fetch arrives)."""

    transaction: Transaction


class BlockMessage(WireStruct, tag=2, frozen=True):
    """One whole block."""

    block: Block


Message = TransactionMessage | BlockMessage

MESSAGE_CODEC: Codec[Message] = Codec(Message, MAX_MESSAGE_SIZE)  # type: ignore[arg-type]
