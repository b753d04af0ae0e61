"""Dandelion++ routing (Fanti et al. 2018; BIP156): where a stem transaction goes next.

A transaction first travels a random path, one peer at a time (the stem), and only then
spreads by ordinary gossip (the fluff), so a spy that sees where gossip starts sees a
random node on the path, not the origin. Per epoch (10 minutes plus jitter) a node:

- is a *diffuser* with probability q (it fluffs every stem transaction it receives) or
  else a *relay*;
- picks 2 stem relays among its outbound transaction-relay peers;
- maps each peer that sends it stem transactions to one of those relays, one to one, so
  all of that peer's transactions follow one path ("pseudorandom forwarding");
- sends its own transactions through one fixed relay, whatever its role.

Every stem transaction this node forwards gets an embargo: an exponential random delay
after which, if the transaction has not come back through the fluff phase, the node
fluffs it itself (a relay down the stem may have swallowed it). A relay that
disconnects is replaced at once. The stempool itself lives in the node; this class only
decides routes and keeps the embargo clock. Pure: `now` and an injected rng.
"""

from __future__ import annotations

import heapq
import random

from meshchain.core.events import Action, PeerId, ScheduleTimer
from meshchain.core.relay.config import RelayConfig

# BIP156 and Monero: two stem relays per node per epoch (Grin uses one).
STEM_RELAYS = 2

EPOCH_TIMER = "relay/dandelion-epoch"
EMBARGO_TIMER = "relay/dandelion-embargo"


class Dandelion:
    def __init__(self, config: RelayConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._candidates: list[PeerId] = []  # outbound transaction-relay peers
        self.relays: list[PeerId] = []
        self._routes: dict[PeerId, PeerId] = {}  # stem source -> relay, this epoch
        self.own_relay: PeerId | None = None
        self.diffuser = False
        self._embargoes: dict[bytes, float] = {}
        self._embargo_heap: list[tuple[float, bytes]] = []
        self._embargo_timer_at: float | None = None
        self.epochs = 0

    # --- epochs ---------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        return self._new_epoch(now)

    def _new_epoch(self, now: float) -> list[Action]:
        self.epochs += 1
        self.diffuser = self.rng.random() < self.config.fluff_probability
        count = min(STEM_RELAYS, len(self._candidates))
        self.relays = self.rng.sample(self._candidates, count)
        self._routes = {}
        self.own_relay = self.rng.choice(self.relays) if self.relays else None
        length = self.config.epoch + self.rng.uniform(0.0, self.config.epoch_jitter)
        return [ScheduleTimer(EPOCH_TIMER, now + length)]

    # --- peers ----------------------------------------------------------------------

    def peer_connected(self, peer: PeerId, outbound_tx_relay: bool) -> None:
        if not outbound_tx_relay:
            return
        self._candidates.append(peer)
        if len(self.relays) < STEM_RELAYS:  # too few when the epoch began: take it now
            self.relays.append(peer)
            if self.own_relay is None:
                self.own_relay = peer

    def peer_disconnected(self, peer: PeerId) -> None:
        if peer in self._candidates:
            self._candidates.remove(peer)
        self._routes.pop(peer, None)
        if peer not in self.relays:
            return
        self.relays.remove(peer)
        spare = [p for p in self._candidates if p not in self.relays]
        replacement = self.rng.choice(spare) if spare else None
        if replacement is not None:
            self.relays.append(replacement)
        for source, relay in list(self._routes.items()):
            if relay == peer:
                if replacement is None:
                    del self._routes[source]
                else:
                    self._routes[source] = replacement
        if self.own_relay == peer:
            self.own_relay = replacement if replacement is not None else self._any_relay()

    def _any_relay(self) -> PeerId | None:
        return self.relays[0] if self.relays else None

    # --- routing --------------------------------------------------------------------

    def route_own(self) -> PeerId | None:
        """The relay for a transaction we originate; None: nobody to stem to, fluff."""
        return self.own_relay

    def route(self, source: PeerId) -> PeerId | None:
        """The stem successor for a transaction from `source`; None: fluff it here."""
        if self.diffuser:
            return None
        relay = self._routes.get(source)
        if relay is not None:
            return relay
        choices = [r for r in self.relays if r != source]
        if not choices:
            return None
        # One to one: give the source the relay that serves the fewest sources so far.
        load = {r: 0 for r in choices}
        for mapped in self._routes.values():
            if mapped in load:
                load[mapped] += 1
        fewest = min(load.values())
        relay = self.rng.choice([r for r in choices if load[r] == fewest])
        self._routes[source] = relay
        return relay

    # --- embargo --------------------------------------------------------------------

    def embargo(self, txid: bytes, now: float) -> list[Action]:
        deadline = now + self.rng.expovariate(1.0 / self.config.embargo_mean)
        self._embargoes[txid] = deadline
        heapq.heappush(self._embargo_heap, (deadline, txid))
        return self._arm(now)

    def lift(self, txid: bytes) -> None:
        """The transaction was fluffed (by us or seen from the network): no embargo."""
        self._embargoes.pop(txid, None)

    def embargoed(self, txid: bytes) -> bool:
        return txid in self._embargoes

    def timer(self, timer: str, now: float) -> tuple[list[bytes], list[Action]] | None:
        """Handle a Dandelion timer: the embargoes that ran out, and timers to set."""
        if timer == EPOCH_TIMER:
            return [], self._new_epoch(now)
        if timer != EMBARGO_TIMER:
            return None
        self._embargo_timer_at = None
        expired: list[bytes] = []
        heap = self._embargo_heap
        while heap and heap[0][0] <= now:
            deadline, txid = heapq.heappop(heap)
            if self._embargoes.get(txid) == deadline:
                del self._embargoes[txid]
                expired.append(txid)
        return expired, self._arm(now)

    def _arm(self, now: float) -> list[Action]:
        heap = self._embargo_heap
        while heap and self._embargoes.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # lifted or re-embargoed
        if not heap:
            return []
        due = max(heap[0][0], now)
        if self._embargo_timer_at is not None and self._embargo_timer_at <= due:
            return []
        self._embargo_timer_at = due
        return [ScheduleTimer(EMBARGO_TIMER, due)]
