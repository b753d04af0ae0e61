"""The BFT write-ahead log: every consensus input of the current height, and every
proposal and vote we sign, written to the store before it is acted on or sent.

After a crash the node replays the log of the height it was deciding into a fresh
state machine, which reaches the state it had (its locks included), and it reloads the
signatures it made: the machine asking to sign a slot again gets the same signature
back, and a *different* value for a signed slot is refused. So a validator killed at
any instant never signs two different votes for one height, round and step (CometBFT's
WAL plus its private validator's last-sign state, in one log). The store commits each
append in its own transaction before `append` returns, and the node returns the
matching `Send` only afterwards.
"""

from __future__ import annotations

import msgspec

from meshchain.core.consensus.bftwire import SignedProposal, SignedVote
from meshchain.core.store import ChainStore, WriteBatch
from meshchain.core.wire.codec import Codec, UInt, UInt16, WireStruct
from meshchain.errors import DecodeError


class WalProposal(WireStruct, frozen=True, tag=1):
    proposal: SignedProposal


class WalVote(WireStruct, frozen=True, tag=2):
    vote: SignedVote


class WalTimeout(WireStruct, frozen=True, tag=3):
    kind: UInt16
    height: UInt
    round: UInt


WalRecord = WalProposal | WalVote | WalTimeout
_WAL_CODEC: Codec[WalRecord] = Codec(WalRecord)  # type: ignore[arg-type]


class ConsensusLog:
    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.enabled = True  # off while replaying: those records are in the log already

    def append(self, height: int, record: WalRecord) -> None:
        if self.enabled:
            encoded = _WAL_CODEC.encode(record)
            self.store.write(WriteBatch(wal_append=[(height, encoded)]))

    def start_height(self, height: int) -> None:
        """Forget the records of decided heights."""
        if self.enabled:
            self.store.write(WriteBatch(wal_keep_from=height))

    def records(self, height: int) -> list[WalRecord]:
        """The logged records of `height`, oldest first; a torn or foreign record ends
        the replay there (everything after it was never acted on)."""
        found: list[WalRecord] = []
        for record_height, raw in self.store.wal_records():
            if record_height != height:
                continue
            try:
                found.append(_WAL_CODEC.decode(raw))
            except (DecodeError, msgspec.DecodeError):
                break
        return found
