"""Properties every run must keep, checked during the run and at its end.

Each invariant is a callable `(world, final) -> list[str]` returning violations; add more
by appending to `World.invariants`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshchain.sim.world import World

# After the settle period honest tips may differ by a block still in flight.
CONVERGENCE_LAG_BLOCKS = 1


class NoConflictingFinality:
    """Honest nodes never hold different blocks at a height both consider final."""

    def __init__(self) -> None:
        self.final: dict[int, bytes] = {}
        self.checked: dict[int, int] = {}

    def __call__(self, world: World, final: bool) -> list[str]:
        depth = world.config.finality_depth
        problems: list[str] = []
        for host in world.honest_online():
            assert host.node is not None
            chain = host.node.chain
            start = self.checked.get(host.index, 0) + 1
            for height in range(start, chain.height - depth + 1):
                block_hash = chain.hash_at(height)
                assert block_hash is not None
                known = self.final.setdefault(height, block_hash)
                if known != block_hash:
                    problems.append(
                        f"node {host.index} finalized {block_hash.hex()[:16]} at height "
                        f"{height}, others {known.hex()[:16]}"
                    )
            self.checked[host.index] = max(start - 1, chain.height - depth)
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
        elif reference.height - chain.height > CONVERGENCE_LAG_BLOCKS:
            problems.append(
                f"node {host.index} lags at height {chain.height} of {reference.height}"
            )
    if len(problems) > 10:
        problems = [*problems[:10], f"... and {len(problems) - 10} more nodes"]
    return problems
