"""Four BFT validators as real processes: one is SIGKILLed mid-round and restarted from
its data directory; the chain goes on and no validator ever signs twice in one slot."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from processkit import process_network

from meshchain.core.chain.genesis import ChainMode
from meshchain.core.consensus.bft import BftEngine

SIGNED = re.compile(r"signed (proposal|prevote|precommit) at height (\d+) round (\d+): (\w+)")


def test_a_validator_killed_mid_round_restarts_without_double_signing(tmp_path: Path) -> None:
    with process_network(tmp_path, ChainMode.CONSORTIUM, validators=4, log_level="debug") as net:
        victim = net.nodes[1]
        others = [net.nodes[i] for i in (0, 2, 3)]
        net.wait(lambda: all(n.height() >= 3 for n in net.nodes), "4 validators commit 3 blocks")
        # Somewhere inside a round: rounds last well under a second here.
        time.sleep(random.uniform(0.0, 0.5))
        victim.kill()
        at_kill = max(n.height() for n in others)
        net.wait(lambda: all(n.height() >= at_kill + 3 for n in others), "3 of 4 go on")
        victim.start()
        target = max(n.height() for n in others) + 3
        net.wait(lambda: all(n.height() >= target for n in net.nodes), "the restarted one rejoins")
        net.stop()
        slots: dict[tuple[str, int, int], set[str]] = {}
        for match in SIGNED.finditer(victim.log_text()):  # both of its lives
            step, height, round_, value = match.groups()
            slots.setdefault((step, int(height), int(round_)), set()).add(value)
        assert slots, "the victim's debug log shows its signatures"
        assert all(len(values) == 1 for values in slots.values()), slots
        for node in net.nodes:
            assert "equivocation" not in node.log_text()
        chains = [node.chain(net.genesis) for node in net.nodes]
        try:
            heights = [chain.height for chain, _ in chains]
            common = min(heights)
            assert common >= target
            reference = chains[0][0]
            engine = BftEngine(net.genesis)
            for chain, _ in chains:
                assert chain.hash_at(common) == reference.hash_at(common)
                for height in range(1, chain.height + 1):
                    header = chain.header(chain.hash_at(height) or b"")
                    assert header is not None
                    assert engine.seal_of(header).evidence == []
        finally:
            for _, store in chains:
                store.close()


def test_a_fresh_node_catches_up_with_a_running_bft_network(tmp_path: Path) -> None:
    with process_network(
        tmp_path,
        ChainMode.CONSORTIUM,
        validators=4,
        observers=1,
        bft_timeouts_ms=(500, 200, 50),
        started=4,
    ) as net:
        validators, fresh = net.nodes[:4], net.nodes[4]
        net.wait(lambda: all(n.height() >= 30 for n in validators), "a 30-block head start")
        fresh.start()
        net.wait(lambda: "sync: caught up" in fresh.log_text(), "the fresh node syncs")
        target = max(n.height() for n in validators) + 2
        net.wait(lambda: fresh.height() >= target, "it follows the votes afterwards")
        net.stop()
        fresh_chain, fresh_store = fresh.chain(net.genesis)
        leader_chain, leader_store = validators[0].chain(net.genesis)
        try:
            height = min(fresh_chain.height, leader_chain.height)
            assert height >= target
            assert fresh_chain.hash_at(height) == leader_chain.hash_at(height)
        finally:
            fresh_store.close()
            leader_store.close()
