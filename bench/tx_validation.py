"""Decode, verify and apply 20,000 signed transactions; compare with raw BIP340 verification.

The baseline is libsecp256k1's Schnorr verify through coincurve on the same signatures,
with public keys already parsed (the cheapest possible check), measured in the same run.
The pipeline is what a node does with transactions from the wire: canonical decode,
context-free checks, signature verification, ledger apply in blocks of 1,000 with the
transactions' Merkle root and the state root computed per block.

    python bench/tx_validation.py [--txs 20000] [--senders 200] [--block 1000]
"""

from __future__ import annotations

import argparse
import random
import time

import coincurve

from meshchain.chainkit import ChainKit
from meshchain.core.chain.genesis import chain_id, genesis_ledger
from meshchain.core.chain.ledger import BlockEconomics
from meshchain.core.chain.tx import TX_CODEC, compute_txid, verify_transaction
from meshchain.core.chain.validation import check_transaction
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.crypto.merkle import merkle_root
from meshchain.core.wire.codec import encode

TARGET_RATIO = 0.75


def make_transactions(count: int, senders: int, seed: int) -> tuple[ChainKit, list[bytes]]:
    kit = ChainKit(seed=seed, accounts=senders)
    rng = random.Random(seed)
    the_chain_id = chain_id(kit.genesis)
    nonces = [0] * senders
    raws = []
    for _ in range(count):
        sender = rng.randrange(senders)
        recipient = rng.randrange(senders)
        tx = kit.transfer(
            the_chain_id,
            sender,
            recipient,
            rng.randrange(1, 1000),
            rng.randrange(1, 100),
            nonces[sender],
        )
        nonces[sender] += 1
        raws.append(encode(tx))
    return kit, raws


def raw_verify_rate(raws: list[bytes]) -> float:
    items = []
    parsed: dict[bytes, coincurve.PublicKeyXOnly] = {}
    for raw in raws:
        tx = TX_CODEC.decode(raw)
        key = parsed.setdefault(tx.body.sender, coincurve.PublicKeyXOnly(tx.body.sender))
        items.append((key, tx.signature, compute_txid(tx.body)))
    start = time.perf_counter()
    for key, signature, message in items:
        if not key.verify(signature, message):
            raise AssertionError("a valid signature failed")
    return len(items) / (time.perf_counter() - start)


def pipeline_rate(kit: ChainKit, raws: list[bytes], block_size: int) -> float:
    ledger = genesis_ledger(kit.genesis)
    ledger.state_root()
    the_chain_id = chain_id(kit.genesis)
    verifier = SignatureVerifier()
    economics = BlockEconomics(bytes(20), kit.genesis.block_reward, kit.genesis.fee_burn_bps)
    start = time.perf_counter()
    for offset in range(0, len(raws), block_size):
        vtxs = []
        for raw in raws[offset : offset + block_size]:
            tx = TX_CODEC.decode(raw)
            check_transaction(tx, the_chain_id)
            vtxs.append(verify_transaction(tx, verifier, raw))
        merkle_root([vtx.leaf for vtx in vtxs])
        ledger.apply_block(vtxs, economics)
        ledger.state_root()
    elapsed = time.perf_counter() - start
    if ledger.total_balance() != ledger.expected_supply():
        raise AssertionError("supply not conserved")
    return len(raws) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()
    kit, raws = make_transactions(args.txs, args.senders, seed=1)
    raw_rate = max(raw_verify_rate(raws) for _ in range(args.rounds))
    rate = max(pipeline_rate(kit, raws, args.block) for _ in range(args.rounds))
    ratio = rate / raw_rate
    print(
        f"transactions:             {len(raws)} from {args.senders} senders, blocks of {args.block}"
    )
    print(f"raw coincurve verify:     {raw_rate:,.0f} sig/s (baseline, keys pre-parsed)")
    print(f"decode+verify+apply:      {rate:,.0f} tx/s")
    print(f"ratio:                    {ratio:.3f} (target >= {TARGET_RATIO})")
    print("PASS" if ratio >= TARGET_RATIO else "BELOW TARGET")


if __name__ == "__main__":
    main()
