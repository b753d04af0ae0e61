"""Adversarial behaviours, plugged into simulated hosts by name.

An adversary wraps one `SimHost` running the real node core and bends what it does
through the host's two hooks: `on_send` (return False to drop an outgoing message) and
`on_receive` (observe each incoming message before the node sees it). Its host is marked
`honest = False`, so invariants judge only the honest hosts, and it reports counters for
the run's report. `ADVERSARIES` maps a scenario's `kind` to a factory.

Behaviours here: `spy` (relays honestly, records when and from whom it first heard each
transaction: the input of first-spy deanonymisation estimators), `silent` (listens, never
sends), `dropper` (drops each outgoing message with `drop_probability`) and `crash`
(offline from the start, never back).

Hook points later layers fill, each a subclass registered in `ADVERSARIES`:

- equivocation: an authority's `on_send` replaces its block with a second block sealed
  at the same height for some peers (`send_direct` for the extra copies);
- invalid blocks: `on_send` swaps relayed blocks for mutated ones (bad seal, bad state
  root, bad ancestor) to exercise `PEER_FAULTS` disconnects;
- spam: a timer on `world.sim` that `send_direct`s valid low-fee or conflicting
  transactions to every peer, to load mempools and relay;
- address flooding: once peer discovery exists, `on_receive`/`send_direct` answer
  address requests with floods of fake addresses (eclipse attempts).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

from meshchain.core.chain.tx import txid_of
from meshchain.core.wire.messages import (
    AnyMessage,
    Inventory,
    InvKind,
    StemTransaction,
    TransactionMessage,
    Transactions,
)
from meshchain.sim.config import AdversarySpec
from meshchain.sim.network import wire_size

if TYPE_CHECKING:
    from meshchain.sim.host import SimHost
    from meshchain.sim.world import World


def transaction_ids(message: AnyMessage) -> list[bytes]:
    """The transactions a message shows its receiver: carried whole, or announced."""
    if isinstance(message, TransactionMessage | StemTransaction):
        return [txid_of(message.transaction)]
    if isinstance(message, Transactions):
        return [txid_of(tx) for tx in message.transactions]
    if isinstance(message, Inventory) and message.kind is InvKind.TRANSACTION:
        return list(message.hashes)
    return []


class Adversary:
    """An honest relay unless a subclass overrides a hook; never judged by invariants."""

    kind: ClassVar[str] = "adversary"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        self.world = world
        self.host = host
        self.spec = spec
        host.honest = False
        # Only overridden hooks are installed: an unhooked host pays nothing per message.
        cls = type(self)
        if cls.on_send is not Adversary.on_send:
            host.send_filter = self.on_send
        if cls.on_receive is not Adversary.on_receive:
            host.on_message = self.on_receive

    def on_send(self, host: SimHost, peer: int, message: AnyMessage) -> bool:
        """Whether the node's `Send` of `message` to `peer` goes out."""
        return True

    def on_receive(self, host: SimHost, src: int, message: AnyMessage) -> None:
        """Sees each message from `src` just before the node handles it."""

    def send_direct(self, peer: int, message: AnyMessage) -> bool:
        """Send a message the node did not ask for (forged, replayed, spam) on a session."""
        if peer not in self.host.connected:
            return False
        size = wire_size(message)
        self.world.metrics.sent(self.host.index, message, size)
        self.world.network.send(self.host.index, peer, message, size)
        return True

    def counters(self) -> dict[str, int]:
        """What this one host did, summed per kind in the report."""
        return {}


class Spy(Adversary):
    """Relays like an honest node, and notes the first sighting of each transaction."""

    kind = "spy"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        self.first_seen: dict[bytes, tuple[float, int]] = {}  # txid -> (time, from peer)

    def on_receive(self, host: SimHost, src: int, message: AnyMessage) -> None:
        first_seen = self.first_seen
        for txid in transaction_ids(message):
            if txid not in first_seen:
                first_seen[txid] = (self.world.sim.now, src)

    def counters(self) -> dict[str, int]:
        return {"transactions_seen": len(self.first_seen)}


class Dropper(Adversary):
    """Drops each outgoing message with `drop_probability` (1.0 behaves as silent)."""

    kind = "dropper"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        if not 0.0 <= spec.drop_probability <= 1.0:
            raise ValueError(f"drop_probability {spec.drop_probability} is not in [0, 1]")
        self.probability = spec.drop_probability
        self.rng: random.Random = world.sim.rng(f"adversary/{self.kind}/{host.index}")
        self.dropped = 0

    def on_send(self, host: SimHost, peer: int, message: AnyMessage) -> bool:
        if self.rng.random() < self.probability:
            self.dropped += 1
            return False
        return True

    def counters(self) -> dict[str, int]:
        return {"messages_dropped": self.dropped}


class Silent(Adversary):
    """Takes everything in and sends nothing: a black hole in the relay graph."""

    kind = "silent"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        self.dropped = 0

    def on_send(self, host: SimHost, peer: int, message: AnyMessage) -> bool:
        self.dropped += 1
        return False

    def counters(self) -> dict[str, int]:
        return {"messages_dropped": self.dropped}


class Crash(Adversary):
    """Offline from the start and never back; its peers keep redialling it.

    A crash at a chosen time (and a restart) is a fault, not a behaviour: `CrashSpec`.
    """

    kind = "crash"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        # Scheduled before the run starts, so it is the first event at time 0.
        world.sim.at(0.0, host.stop)
        # It never runs, so "reached every node" means every node that runs.
        world.metrics.nodes -= 1


AdversaryFactory = Callable[["World", "SimHost", AdversarySpec], Adversary]
ADVERSARIES: dict[str, AdversaryFactory] = {cls.kind: cls for cls in (Spy, Silent, Crash, Dropper)}


def make_adversaries(world: World, specs: Sequence[AdversarySpec]) -> list[Adversary]:
    """One adversary per listed node; a node gets at most one behaviour."""
    adversaries: list[Adversary] = []
    taken: set[int] = set()
    for spec in specs:
        factory = ADVERSARIES.get(spec.kind)
        if factory is None:
            known = ", ".join(sorted(ADVERSARIES))
            raise ValueError(f"unknown adversary kind {spec.kind!r} (known: {known})")
        for node in spec.nodes:
            if not 0 <= node < len(world.hosts):
                raise ValueError(f"adversary {spec.kind!r} names node {node}, not in the run")
            if node in taken:
                raise ValueError(f"node {node} is given two adversarial behaviours")
            taken.add(node)
            adversaries.append(factory(world, world.hosts[node], spec))
    return adversaries


def summarize(adversaries: Sequence[Adversary]) -> dict[str, dict[str, int]]:
    """Per kind: how many nodes, and their counters summed (sorted: the report is stable)."""
    kinds: dict[str, dict[str, int]] = {}
    for adversary in adversaries:
        row = kinds.setdefault(adversary.kind, {"nodes": 0})
        row["nodes"] += 1
        for name, value in adversary.counters().items():
            row[name] = row.get(name, 0) + value
    spies = [a for a in adversaries if isinstance(a, Spy)]
    if spies:
        seen = set().union(*(spy.first_seen for spy in spies))
        kinds["spy"]["transactions_seen_by_any"] = len(seen)
    return {kind: dict(sorted(row.items())) for kind, row in sorted(kinds.items())}


# Behaviours in their own modules register themselves in ADVERSARIES when imported; they
# import this module, so this import comes last.
import meshchain.sim.bft  # noqa: E402
import meshchain.sim.eclipse  # noqa: E402, F401
