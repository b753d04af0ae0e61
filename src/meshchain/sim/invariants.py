"""Properties every run must keep, checked during the run and at its end.

Each invariant is a callable `(world, final) -> list[str]` returning violations; add more
by appending to `World.invariants`. The defaults: no conflicting finality, supply
conservation, convergence once faults heal, and a chain that keeps growing while settling.
Only honest hosts are judged (supply conservation checks every ledger).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshchain.sim.world import World


class NoConflictingFinality:
    """Honest nodes never hold different blocks at a height both consider final.

    Each node's heights are checked once they are final; a node whose chain later
    differs at its last checked height has reverted a final block, and is rechecked.
    """

    def __init__(self) -> None:
        self.final: dict[int, bytes] = {}
        self.checked: dict[int, int] = {}
        self.last_checked: dict[int, bytes] = {}  # node -> its hash at its checked height

    def __call__(self, world: World, final: bool) -> list[str]:
        depth = world.config.finality_depth
        problems: list[str] = []
        for host in world.honest_online():
            assert host.node is not None
            chain = host.node.chain
            start = self.checked.get(host.index, 0) + 1
            remembered = self.last_checked.get(host.index)
            if remembered is not None and chain.hash_at(start - 1) != remembered:
                problems.append(f"node {host.index} reverted its final block at {start - 1}")
                start = 1
            for height in range(start, chain.height - depth + 1):
                block_hash = chain.hash_at(height)
                assert block_hash is not None
                known = self.final.setdefault(height, block_hash)
                if known != block_hash:
                    problems.append(
                        f"node {host.index} finalized {block_hash.hex()[:16]} at height "
                        f"{height}, others {known.hex()[:16]}"
                    )
            checked = max(start - 1, chain.height - depth)
            self.checked[host.index] = checked
            if checked > 0:
                last = chain.hash_at(checked)
                assert last is not None
                self.last_checked[host.index] = last
        return problems


def supply_conserved(world: World, final: bool) -> list[str]:
    """No ledger creates or loses money: balances = allocations + rewards - burnt fees."""
    problems = []
    for host in world.online():
        assert host.node is not None
        ledger = host.node.chain.ledger
        if ledger.total_balance() != ledger.expected_supply():
            problems.append(
                f"node {host.index}: balances {ledger.total_balance()} != supply "
                f"{ledger.expected_supply()}"
            )
    return problems


def converged(world: World, final: bool) -> list[str]:
    """Once faults have healed and the network settled, honest nodes share one chain."""
    if not final:
        return []
    hosts = [host for host in world.honest_online() if host.node is not None]
    if not hosts:
        return ["no honest node is online at the end"]
    leader = max(hosts, key=lambda host: host.node.chain.height if host.node else -1)
    assert leader.node is not None
    reference = leader.node.chain
    problems = []
    for host in hosts:
        assert host.node is not None
        chain = host.node.chain
        if reference.hash_at(chain.height) != chain.tip_hash:
            problems.append(f"node {host.index} is on another branch at height {chain.height}")
        elif reference.height - chain.height > world.config.convergence_lag:
            stuck = f" holding {chain.orphan_count} orphan blocks" if chain.orphan_count else ""
            problems.append(
                f"node {host.index} lags at height {chain.height} of {reference.height}{stuck}"
            )
    if len(problems) > 10:
        problems = [*problems[:10], f"... and {len(problems) - 10} more nodes"]
    return problems


class ChainAdvances:
    """The chain stays live: with faults over, the best honest chain grows while settling.

    Convergence alone misses a halted chain. Under PoA each height has one proposer, so
    an authority that missed a block (and nothing fetches missed blocks yet) halts the
    chain for good, with every node agreeing on the stale tip.
    """

    def __init__(self) -> None:
        self.baseline: tuple[float, int] = (0.0, 0)  # (time, best height) at quiet_from

    def __call__(self, world: World, final: bool) -> list[str]:
        now = world.sim.now
        best = max((h.node.chain.height for h in world.honest_online() if h.node), default=0)
        if not final:
            if now <= world.quiet_from:
                self.baseline = (now, best)
            return []
        since, height = self.baseline
        if now - since >= 2 * world.config.block_interval and best <= height:
            return [
                f"no block from t={since:.0f} to the end: the best honest chain stalled at "
                f"height {height}"
            ]
        return []
