"""The eclipse attack (Heilman et al., 2015) against one victim node, as an adversary.

The attacker runs the listed hosts (its machines) and owns `fake_addresses` addresses
spread over `attack_groups` address groups; every one of those addresses answers, at
one of its machines, so the victim can reach any address it learns. The attack:
- each machine dials the victim and stays connected, taking every inbound slot it can
  (eviction protects some honest peers);
- each machine keeps announcing attacker addresses to the victim (the victim's token
  bucket lets about one through every ten seconds per connection), and answers the
  victim's GetAddr, whose answer the victim accepts in full, with a thousand of them;
- at `restart_at` the victim restarts (a clean shutdown, as after an upgrade) and fills
  its outbound slots from its address book: the moment the attacker hopes to own them.
Its defences are the real node's: address-group diversity of outbound peers, the new
and tried tables bucketed by source group, anchors (the block-relay-only peers of the
last run, redialled first), test-before-evict and feelers.

`eclipse_outcome` measures the victim's outbound peers at the end of the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from meshchain.core.events import ConnectionKind, NodeStopping
from meshchain.core.node import NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.config import PeerConfig, PersistentPeer
from meshchain.core.wire.messages import MAX_ADDR_PER_MESSAGE, Addr, AddrEntry, AnyMessage, GetAddr
from meshchain.sim.adversary import ADVERSARIES, Adversary
from meshchain.sim.config import AdversarySpec

if TYPE_CHECKING:
    from meshchain.sim.host import SimHost
    from meshchain.sim.world import World

ANNOUNCE_INTERVAL = 10.0  # seconds between unsolicited announcements to the victim
ANNOUNCE_SIZE = 10  # addresses in each (the most an honest node would relay)
ATTACKER_FIRST_OCTET = 200  # attacker groups are 200.0/16, 200.1/16, ...
RESTART_DOWNTIME = 1.0  # seconds the victim is down when it restarts
ATTACK_PORT = 26656


def attacker_address(index: int, groups: int) -> NetAddress:
    """The attacker's `index`-th address, in group `index % groups`."""
    group = index % groups
    host = index // groups
    ip = bytes([ATTACKER_FIRST_OCTET + group // 256, group % 256, host // 256 % 256, host % 256])
    return NetAddress(ip, ATTACK_PORT)


class Eclipse(Adversary):
    """One attacker machine; all of them share the attacker's addresses."""

    kind = "eclipse"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        self.victim = world.hosts[spec.victim]
        self.groups = spec.attack_groups
        machines = list(spec.nodes)
        self.machine_number = machines.index(host.index)
        self.addresses = [attacker_address(i, self.groups) for i in range(spec.fake_addresses)]
        self.sent = 0
        # This machine answers at every attacker address that hashes to it, its own first.
        own = self.addresses[self.machine_number % len(self.addresses)]
        world.by_address.pop(host.address, None)
        host.address = own
        for address in self.addresses:
            if _owner(address, len(machines)) == self.machine_number:
                world.by_address[address] = host.index
        world.by_address[own] = host.index
        host.config = _with_peers(
            host.config.peers,
            host,
            PersistentPeer(self.victim.address, world.node_ids[self.victim.index]),
        )
        world.sim.at(ANNOUNCE_INTERVAL, self._announce)
        if self.machine_number == 0 and spec.restart_at is not None:
            world.sim.at(spec.restart_at, self._restart_victim)

    def on_receive(self, host: SimHost, src: int, message: AnyMessage) -> None:
        if src == self.victim.index and isinstance(message, GetAddr):
            self._send_addresses(MAX_ADDR_PER_MESSAGE)

    def _announce(self) -> None:
        self._send_addresses(ANNOUNCE_SIZE)
        if self.world.sim.now + ANNOUNCE_INTERVAL <= self.world.config.duration:
            self.world.sim.after(ANNOUNCE_INTERVAL, self._announce)

    def _send_addresses(self, count: int) -> None:
        now = self.world.sim.now
        rng = self.world.sim.rng(f"eclipse/{self.host.index}/{now}")
        chosen = rng.sample(self.addresses, min(count, len(self.addresses)))
        entries = [AddrEntry(address, b"", 0, int(now)) for address in chosen]
        if self.send_direct(self.victim.index, Addr(entries)):
            self.sent += len(entries)

    def _restart_victim(self) -> None:
        victim = self.victim
        victim.feed(NodeStopping())  # a clean shutdown: book, bans and anchors saved
        victim.stop()
        self.world.sim.after(RESTART_DOWNTIME, victim.start)

    def counters(self) -> dict[str, int]:
        return {"addresses_sent": self.sent}


ADVERSARIES[Eclipse.kind] = Eclipse


def _owner(address: NetAddress, machines: int) -> int:
    digest = hashlib.blake2b(address.ip + address.port.to_bytes(2, "big"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % machines


def _with_peers(peers: PeerConfig, host: SimHost, victim: PersistentPeer) -> NodeConfig:
    """The machine's config: it listens at its attacker address and holds on to the victim."""
    updated = replace(peers, listen=host.address, persistent=(victim,), discovery=False)
    return replace(host.config, peers=updated)


def eclipse_outcome(world: World) -> dict[str, Any] | None:
    """The victim's outbound peers at the end: how many are the attacker's."""
    attackers = [a for a in world.adversaries if isinstance(a, Eclipse)]
    if not attackers:
        return None
    victim = attackers[0].victim
    machines = {a.host.index for a in attackers}
    if victim.node is None:
        return {"victim_online": False}
    outbound = [
        int(peer)
        for peer, kind in victim.node.peers.items()
        if kind in (ConnectionKind.FULL_RELAY, ConnectionKind.BLOCK_RELAY)
    ]
    owned = sum(1 for peer in outbound if peer in machines)
    return {
        "victim_online": True,
        "outbound": len(outbound),
        "attacker_outbound": owned,
        "attacker_share": round(owned / len(outbound), 6) if outbound else None,
        "eclipsed": bool(outbound) and owned == len(outbound),
    }
