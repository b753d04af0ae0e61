"""Which inbound peer to drop when a new one arrives and every slot is taken.

Bitcoin Core's answer (node/eviction.cpp, SelectNodeToEvict): an attacker can open
connections cheaply but cannot cheaply be *useful*, be *close*, come from *many networks*
or have been connected *long*. So set aside the peers that are good by each of those
measures, each measure protecting a few, and evict from what is left: the youngest
connection of the network group holding the most. An attacker must then beat honest
peers on every measure at once to take over our inbound slots.

Differences from Bitcoin, on purpose: the netgroup step protects one peer from each of
4 *distinct* groups (Bitcoin protects the last 4 peers in keyed group order, which may
share a group); every sort breaks ties down to the peer id, so the choice does not
depend on the order of the candidates; there are no Tor/I2P/CJDNS networks to reserve
uptime slots for, so the uptime step protects the older half outright.

Only inbound peers should be candidates; outbound, manual and whitelisted peers are
passed with `protected=True` (or not at all) and are never chosen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Bitcoin: protect 4 peers by keyed network group (an attacker cannot predict which).
PROTECTED_BY_NETGROUP = 4
# Bitcoin: protect the 8 peers with the lowest minimum ping (cannot be faked from afar).
PROTECTED_BY_PING = 8
# Bitcoin: protect the 4 that most recently sent novel transactions (useful work).
PROTECTED_BY_TX_TIME = 4
# Bitcoin: protect up to 8 block-relay-only peers that most recently sent novel blocks.
PROTECTED_BLOCK_RELAY_ONLY = 8
# Bitcoin: protect the 4 that most recently sent novel blocks, among all peers.
PROTECTED_BY_BLOCK_TIME = 4
# Bitcoin: protect half of what remains by longest uptime (ProtectEvictionCandidatesByRatio).
PROTECTED_UPTIME_FRACTION = 0.5
# blake2b takes keys of up to 64 bytes; longer keys are hashed down first.
MAX_GROUP_KEY_SIZE = 64
GROUP_HASH_PERSON = b"meshchain-evict"


@dataclass(frozen=True, slots=True)
class EvictionCandidate:
    """What eviction knows about one connected peer. Times are seconds on one clock.

    `last_tx_time` / `last_block_time`: when the peer last sent us a transaction / block
    that was new to us (0: never). `min_ping`: its lowest ping in seconds (None: not yet
    measured, counted as the worst). `protected`: never evicted (outbound, manual,
    whitelisted). `discouraged`: its IP is discouraged (bans.py), so it goes first.
    """

    peer: str
    group: bytes
    connected_at: float
    min_ping: float | None = None
    last_tx_time: float = 0.0
    last_block_time: float = 0.0
    relays_transactions: bool = True
    block_relay_only: bool = False
    protected: bool = False
    discouraged: bool = False

    @property
    def tx_relay(self) -> bool:
        """Exchanges transactions with us (Bitcoin's m_relay_txs)."""
        return self.relays_transactions and not self.block_relay_only


Candidates = list[EvictionCandidate]
SortKey = Callable[[EvictionCandidate], Any]


def _protect_last(
    pool: Candidates,
    most_evictable_first: SortKey,
    count: int,
    eligible: Callable[[EvictionCandidate], bool] | None = None,
) -> Candidates:
    """Sort the pool, and take out of it the last `count` (those `eligible`, if given)."""
    ordered = sorted(pool, key=most_evictable_first)
    split = max(0, len(ordered) - count)
    kept = ordered[:split]
    if eligible is not None:
        kept.extend(c for c in ordered[split:] if not eligible(c))
    return kept


def keyed_group(group: bytes, key: bytes) -> bytes:
    """The group hashed with our secret key: an order of groups outsiders cannot predict."""
    if len(key) > MAX_GROUP_KEY_SIZE:
        key = hashlib.blake2b(key).digest()
    return hashlib.blake2b(group, key=key, digest_size=8, person=GROUP_HASH_PERSON).digest()


def _by_ping(c: EvictionCandidate) -> tuple[Any, ...]:
    # Unmeasured first, then highest ping first; the older connection is kept on a tie.
    if c.min_ping is None:
        return (0, 0.0, -c.connected_at, c.peer)
    return (1, -c.min_ping, -c.connected_at, c.peer)


def _by_tx_time(c: EvictionCandidate) -> tuple[Any, ...]:
    # On equal times a peer that does not relay transactions sorts first (is evicted).
    return (c.last_tx_time, c.tx_relay, -c.connected_at, c.peer)


def _by_block_relay_only_time(c: EvictionCandidate) -> tuple[Any, ...]:
    # Transaction-relaying peers sort first, so the protected tail is block-relay-only.
    return (not c.tx_relay, c.last_block_time, -c.connected_at, c.peer)


def _by_block_time(c: EvictionCandidate) -> tuple[Any, ...]:
    return (c.last_block_time, -c.connected_at, c.peer)


def _youngest_first(c: EvictionCandidate) -> tuple[Any, ...]:
    return (-c.connected_at, c.peer)


def _protect_by_netgroup(pool: Candidates, key: bytes) -> Candidates:
    """Keep back one peer (the longest connected) from each of the groups ranked highest
    by keyed hash."""
    groups = sorted({c.group for c in pool}, key=lambda g: keyed_group(g, key), reverse=True)
    protected: set[str] = set()
    for group in groups[:PROTECTED_BY_NETGROUP]:
        oldest = min((c for c in pool if c.group == group), key=lambda c: (c.connected_at, c.peer))
        protected.add(oldest.peer)
    return [c for c in pool if c.peer not in protected]


def eviction_pool(candidates: Sequence[EvictionCandidate], key: bytes) -> Candidates:
    """The candidates no protection covers, youngest connection first."""
    pool = [c for c in candidates if not c.protected]
    pool = _protect_by_netgroup(pool, key)
    pool = _protect_last(pool, _by_ping, PROTECTED_BY_PING)
    pool = _protect_last(pool, _by_tx_time, PROTECTED_BY_TX_TIME)
    pool = _protect_last(
        pool,
        _by_block_relay_only_time,
        PROTECTED_BLOCK_RELAY_ONLY,
        eligible=lambda c: not c.tx_relay,
    )
    pool = _protect_last(pool, _by_block_time, PROTECTED_BY_BLOCK_TIME)
    return _protect_last(pool, _youngest_first, int(len(pool) * PROTECTED_UPTIME_FRACTION))


def select_peer_to_evict(candidates: Sequence[EvictionCandidate], key: bytes) -> str | None:
    """The peer to disconnect to make room, or None if every candidate is protected.

    `key` is a per-node secret (random at start-up) that orders the network groups.
    """
    pool = eviction_pool(candidates, key)
    if not pool:
        return None
    # Discouraged peers go first, but only among those no protection covered: a peer
    # that is the best by some measure (a fast block relay) is kept regardless, as in
    # Bitcoin's prefer_evict.
    if any(c.discouraged for c in pool):
        pool = [c for c in pool if c.discouraged]
    # The group with the most connections, a tie going to the one with the youngest
    # member; the pool is youngest first, so each group's first member is its youngest.
    members: dict[bytes, Candidates] = {}
    for candidate in pool:
        members.setdefault(candidate.group, []).append(candidate)
    position = {c.peer: index for index, c in enumerate(pool)}
    largest = max(members.values(), key=lambda group: (len(group), -position[group[0].peer]))
    return largest[0].peer
