"""Crash-safety worker: import signed blocks into a SQLite store until it is killed.

    python crash_worker.py DBPATH SEED

Opens (or creates) the store at DBPATH with `synchronous=FULL`, prints
`ready <height> <tip hash>` once the chain is loaded, then builds and adds one block after
another forever. Only after `add_block` has returned CONNECTED does it print
`committed <height> <block hash> <state root>` (hex) and flush, so every such line names a
block the store has committed. `test_crash_safety.py` SIGKILLs it at random points.

The chain's genesis comes from a fixed kit seed, so every run opens the same chain; SEED
only varies the transactions. Nonces are read from the loaded ledger, so a run resumes
wherever the previous one was killed. Time is derived from the blocks, never the clock.
"""

from __future__ import annotations

import random
import sys

from meshchain.chainkit import ChainKit
from meshchain.core.chain.chainstate import AddBlockResult, ChainState
from meshchain.core.chain.tx import VerifiedTx, verify_transaction
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.storage.sqlite import SqliteChainStore

KIT_SEED = 0xC0FFEE  # the same in every run: the genesis (and so the chain id) must not vary
KIT_ACCOUNTS = 8
SMALL_BLOCK_TXS = (20, 50)
# Now and then a bigger block, so the write transaction is longer and kills land inside it.
BIG_BLOCK_TXS = (200, 400)
BIG_BLOCK_CHANCE = 0.125
NEW_ADDRESS_CHANCE = 0.1  # a transfer to a fresh address creates an account


def make_kit() -> ChainKit:
    return ChainKit(seed=KIT_SEED, accounts=KIT_ACCOUNTS)


def _report(line: str) -> None:
    # One write of the whole line: a kill never leaves half a line that parses.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _transfers(
    kit: ChainKit, chain: ChainState, rng: random.Random, verifier: SignatureVerifier
) -> list[VerifiedTx]:
    nonces = [chain.ledger.account_nonce(kit.address(i)) for i in range(KIT_ACCOUNTS)]
    low, high = BIG_BLOCK_TXS if rng.random() < BIG_BLOCK_CHANCE else SMALL_BLOCK_TXS
    vtxs: list[VerifiedTx] = []
    for _ in range(rng.randint(low, high)):
        sender = rng.randrange(KIT_ACCOUNTS)
        recipient: int | bytes
        if rng.random() < NEW_ADDRESS_CHANCE:
            recipient = rng.randbytes(20)
        else:
            recipient = (sender + rng.randrange(1, KIT_ACCOUNTS)) % KIT_ACCOUNTS
        data = rng.randbytes(rng.randrange(1, 33)) if rng.random() < 0.1 else b""
        amount, fee = rng.randint(1, 10_000), rng.randint(1, 50)
        tx = kit.transfer(chain, sender, recipient, amount, fee, nonces[sender], data)
        nonces[sender] += 1
        vtxs.append(verify_transaction(tx, verifier))
    return vtxs


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(f"usage: {argv[0]} DBPATH SEED\n")
        return 2
    db_path, seed = argv[1], int(argv[2])
    rng = random.Random(seed)
    verifier = SignatureVerifier()
    kit = make_kit()
    store = SqliteChainStore(db_path, synchronous="FULL")
    chain = kit.chain(store)
    _report(f"ready {chain.height} {chain.tip_hash.hex()}")
    while True:
        vtxs = _transfers(kit, chain, rng, verifier)
        block = kit.next_block(chain, vtxs)
        if len(block.transactions) != len(vtxs):
            sys.stderr.write(f"only {len(block.transactions)} of {len(vtxs)} txs applied\n")
            return 1
        update = chain.add_block(block, kit.now_after(block))
        if update.result is not AddBlockResult.CONNECTED:
            sys.stderr.write(f"add_block returned {update.result} ({update.error})\n")
            return 1
        header = block.header
        _report(f"committed {header.height} {update.block_hash.hex()} {header.state_root.hex()}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
