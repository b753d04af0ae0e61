"""How a node manages its peers: slot counts, bootstrap and persistent peers, members.

Defaults are Bitcoin Core's (net.h) unless a comment says otherwise. The same object
configures real nodes (from config.toml) and simulated ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshchain.core.peers.address import GroupPolicy, NetAddress

MAX_OUTBOUND_FULL_RELAY = 8  # MAX_OUTBOUND_FULL_RELAY_CONNECTIONS
MAX_BLOCK_RELAY_ONLY = 2  # MAX_BLOCK_RELAY_ONLY_CONNECTIONS
MAX_INBOUND = 117  # DEFAULT_MAX_PEER_CONNECTIONS 125 less the 8 + 2 outbound and feelers
# Bitcoin has no per-IP inbound cap; CometBFT and libp2p's resource manager do. Several
# honest nodes may share an IP (NAT, one machine in a devnet), so the cap is loose.
MAX_INBOUND_PER_IP = 16
# Ours: an inbound peer younger than this is not evicted. Eviction takes the youngest of
# a crowded group, which at a busy node (a bootstrap node in a cold start) is always the
# peer that arrived a moment ago, before it could learn a single other address.
EVICTION_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class PersistentPeer:
    """A peer to stay connected to: configured, or a member of a consortium."""

    address: NetAddress
    node_id: bytes | None = None  # the identity expected there, if known


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """What the peer manager needs to know about this node and its network."""

    node_id: bytes = b""  # our identity key, advertised with our listen address
    listen: NetAddress | None = None  # advertised to peers; None: we take no inbound
    bootstrap: tuple[NetAddress, ...] = ()  # seeds: known addresses to start from
    persistent: tuple[PersistentPeer, ...] = ()  # always connected, redialled with backoff
    # False: connect only to persistent peers (bitcoind -connect): static topologies.
    discovery: bool = True
    outbound_full_relay: int = MAX_OUTBOUND_FULL_RELAY
    block_relay_only: int = MAX_BLOCK_RELAY_ONLY
    max_inbound: int = MAX_INBOUND
    max_inbound_per_ip: int = MAX_INBOUND_PER_IP
    eviction_grace: float = EVICTION_GRACE  # seconds a new inbound peer cannot be evicted
    groups: GroupPolicy = field(default_factory=GroupPolicy)
    # Consortium and private chains: only these identity keys are dialled, advertised
    # or admitted (the session refuses the others right after the handshake).
    members: frozenset[bytes] | None = None
    services: int = 0
