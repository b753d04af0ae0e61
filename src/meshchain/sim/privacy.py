"""`meshchain sim privacy`: how well spies link transactions to the nodes that sent them.

The setting is that of the simulations in the Dandelion++ paper (Fanti et al. 2018,
"Dandelion++: Lightweight Cryptocurrency Networking with Formal Anonymity Guarantees",
and its simulation code, github.com/gfanti/dandelion-simulations):

- the graph is a random 4-regular graph built as the union of `out_degree` random
  Hamiltonian cycles, each edge dialled by its tail: every node makes 2 outbound
  connections and receives about 2 (a pair linked both ways keeps one session, as on
  TCP, so a few nodes have one fewer);
- a fraction p of the nodes, floor(p * n) chosen at random per graph, are spies;
- every honest node sends exactly one transaction, all in one Dandelion epoch;
- the spies pool what they see and use the *first-spy estimator*: a transaction is
  attributed to the node from which a spy first heard of it (inventory, transaction or
  stem transaction, whichever came first at any spy);
- precision and recall are the paper's: with M the estimator's mapping, an honest node
  v scores recall 1 when its transaction is mapped to v, and precision 1/k when in
  addition k transactions in all are mapped to v; both are averaged over honest nodes.
  Recall is the chance a given transaction is traced; precision also charges the
  adversary for blaming one node for many transactions.

Unlike the paper's line and diffusion models, the nodes here are the real node core in
the simulator: diffusion is the announce-then-fetch relay with Poisson trickle timers
(`RelayConfig(dandelion=False)`), Dandelion++ the real stem routing (per-epoch diffuser
with probability q, two outbound stem relays, one-to-one routes, own transactions on one
fixed relay, embargo timers), and the spies are `Spy` hosts that relay honestly. Each
graph (with its spies) is rerun `trials` times with different seeds: new trickle timers,
diffuser draws and stem routes, as the paper reruns routes on each graph.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshchain.core.chain.tx import TxBody, compute_txid, sign_transaction
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.events import TransactionSubmitted
from meshchain.core.relay.config import RelayConfig
from meshchain.core.wire.codec import encode
from meshchain.sim.adversary import Spy
from meshchain.sim.config import AdversarySpec, SimConfig
from meshchain.sim.engine import rare_collections
from meshchain.sim.world import TX_FEE_RANGE, World

ROUTINGS = ("diffusion", "dandelion")
# Nodes have their sessions (three one-way trips) long before this; the transactions go
# out over the next second, in random order, all inside the first Dandelion epoch.
SEND_AT = 2.0
SEND_WINDOW = 1.0
# Long enough for every stem to end (embargoes average 39 s) and every transaction to
# reach a spy; runs stop as soon as every transaction has been seen by one.
MAX_VIRTUAL_SECONDS = 600.0
STEP = 1.0
# No blocks: an interval far beyond any run keeps the only authority idle.
NO_BLOCKS_INTERVAL = 10_000_000.0
DIGITS = 6


@dataclass(frozen=True)
class PrivacyConfig:
    nodes: int = 100
    out_degree: int = 2  # outbound connections per node: 2 makes a 4-regular graph
    spy_fraction: float = 0.2
    routing: str = "dandelion"  # diffusion | dandelion
    fluff_probability: float = 0.1  # Dandelion++'s q
    graphs: int = 10
    trials: int = 2
    seed: int = 1

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}")
        if self.nodes < 3 or not 1 <= self.out_degree < self.nodes:
            raise ValueError("need at least 3 nodes and 1 <= out_degree < nodes")
        if not 0.0 < self.spy_fraction < 1.0:
            raise ValueError("spy_fraction must be between 0 and 1 (exclusive)")
        if not 0.0 <= self.fluff_probability <= 1.0:
            raise ValueError("fluff_probability must be between 0 and 1")
        if self.graphs < 1 or self.trials < 1:
            raise ValueError("graphs and trials must be at least 1")
        if not 1 <= self.spy_count < self.nodes:
            raise ValueError("spy_fraction * nodes must leave at least one spy and one honest node")

    @property
    def spy_count(self) -> int:
        # floor, as the paper's code does; the epsilon keeps 0.3 * 100 at 30
        return math.floor(self.spy_fraction * self.nodes + 1e-9)

    @property
    def relay(self) -> RelayConfig:
        if self.routing == "diffusion":
            return RelayConfig(dandelion=False)
        return RelayConfig(dandelion=True, fluff_probability=self.fluff_probability)


@dataclass(frozen=True)
class TrialResult:
    precision: float
    recall: float
    unseen: int  # transactions no spy saw before the run ended (counted as missed)
    virtual_seconds: float


def regular_graph(nodes: int, out_degree: int, rng: random.Random) -> list[list[int]]:
    """Each node's outbound neighbours: its successor on `out_degree` random Hamiltonian
    cycles (the paper's `RegGraphGen`), so in- and out-degree are both `out_degree`.
    A repeated pair, either way round, is kept once: one session per pair."""
    chosen: list[list[int]] = [[] for _ in range(nodes)]
    linked: set[frozenset[int]] = set()
    for _ in range(out_degree):
        order = list(range(nodes))
        rng.shuffle(order)
        for position, node in enumerate(order):
            successor = order[(position + 1) % nodes]
            pair = frozenset((node, successor))
            if pair not in linked:
                linked.add(pair)
                chosen[node].append(successor)
    return chosen


def first_spy_estimate(spies: Sequence[Spy], txids: Sequence[bytes]) -> dict[bytes, int]:
    """The pooled spies' guess of each transaction's origin: the peer that showed it to
    a spy first (earliest time; the lower spy index on a tie). Unseen ones are left out."""
    estimate: dict[bytes, int] = {}
    for txid in txids:
        sightings = [
            (spy.first_seen[txid][0], spy.host.index, spy.first_seen[txid][1])
            for spy in spies
            if txid in spy.first_seen
        ]
        if sightings:
            estimate[txid] = min(sightings)[2]
    return estimate


def precision_recall(origins: dict[bytes, int], estimate: dict[bytes, int]) -> tuple[float, float]:
    """The paper's expected precision and recall over the honest nodes in `origins`
    (txid -> sender), one transaction each."""
    blamed: dict[int, int] = {}
    for suspect in estimate.values():
        blamed[suspect] = blamed.get(suspect, 0) + 1
    precision = recall = 0.0
    for txid, origin in origins.items():
        if estimate.get(txid) == origin:
            recall += 1.0
            precision += 1.0 / blamed[origin]
    return precision / len(origins), recall / len(origins)


def sim_config(config: PrivacyConfig, spies: Sequence[int]) -> SimConfig:
    return SimConfig(
        name=f"privacy-{config.routing}",
        nodes=config.nodes,
        out_degree=config.out_degree,
        duration=MAX_VIRTUAL_SECONDS,
        settle=0.0,
        tx_rate=0.0,  # no background workload: only the experiment's transactions
        wallets=config.nodes,  # one funded wallet per node, so every nonce is 0
        authorities=1,
        block_interval=NO_BLOCKS_INTERVAL,
        adversaries=(AdversarySpec("spy", tuple(spies)),),
        relay=config.relay,
    )


def _send_transactions(world: World, rng: random.Random) -> dict[bytes, int]:
    """Schedule one transaction from each honest node; return txid -> sender."""
    origins: dict[bytes, int] = {}
    wallets = world.wallets
    for host in world.hosts[: world.config.nodes]:
        if not host.honest:
            continue
        key = wallets[host.index]
        recipient = wallets[rng.randrange(len(wallets))]
        body = TxBody(
            world.chain_id,
            key.public_key,
            address_from_public_key(recipient.public_key),
            1 + rng.randrange(1_000),
            rng.randrange(*TX_FEE_RANGE),
            0,
        )
        tx = sign_transaction(body, key, aux_rand=rng.randbytes(32))
        origins[compute_txid(body)] = host.index
        at = SEND_AT + rng.uniform(0.0, SEND_WINDOW)
        world.sim.at(at, host.feed, TransactionSubmitted(encode(tx)))
    return origins


def run_trial(
    config: PrivacyConfig, graph: list[list[int]], spies: Sequence[int], seed: int
) -> TrialResult:
    """One run of the real nodes on `graph`: every honest node sends, the spies listen."""
    world = World(sim_config(config, spies), seed, topology=graph)
    origins = _send_transactions(world, world.sim.rng("privacy/transactions"))
    txids = list(origins)
    pooled = world.spies
    with rare_collections():
        world.start()
        while world.sim.now < MAX_VIRTUAL_SECONDS:
            world.sim.run(world.sim.now + STEP)
            if world.sim.now > SEND_AT + SEND_WINDOW and all(
                any(txid in spy.first_seen for spy in pooled) for txid in txids
            ):
                break
    estimate = first_spy_estimate(pooled, txids)
    precision, recall = precision_recall(origins, estimate)
    return TrialResult(precision, recall, len(txids) - len(estimate), world.sim.now)


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean over runs, and its standard error over graphs: runs on one graph share its
    spies and links, so they are not independent samples (over runs with one graph)."""
    by_graph: dict[int, list[float]] = {}
    for run in runs:
        by_graph.setdefault(run["graph"], []).append(run[key])
    units = (
        [statistics.fmean(values) for values in by_graph.values()]
        if len(by_graph) > 1
        else [run[key] for run in runs]
    )
    error = statistics.stdev(units) / math.sqrt(len(units)) if len(units) > 1 else 0.0
    mean = statistics.fmean(run[key] for run in runs)
    return {"mean": round(mean, DIGITS), "stderr": round(error, DIGITS)}


def run_experiment(
    config: PrivacyConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every graph, every trial; the report (a pure function of the config and seed)."""
    runs: list[dict[str, Any]] = []
    for g in range(config.graphs):
        rng = random.Random(f"{config.seed}/privacy/graph/{g}")
        graph = regular_graph(config.nodes, config.out_degree, rng)
        spies = sorted(rng.sample(range(config.nodes), config.spy_count))
        for t in range(config.trials):
            seed = random.Random(f"{config.seed}/privacy/run/{g}/{t}").getrandbits(31)
            result = run_trial(config, graph, spies, seed)
            runs.append(
                {
                    "graph": g,
                    "trial": t,
                    "seed": seed,
                    "precision": round(result.precision, DIGITS),
                    "recall": round(result.recall, DIGITS),
                    "unseen": result.unseen,
                    "virtual_seconds": round(result.virtual_seconds, 3),
                }
            )
            if progress is not None:
                progress(
                    f"graph {g + 1}/{config.graphs} trial {t + 1}/{config.trials}: "
                    f"precision {result.precision:.3f} recall {result.recall:.3f}"
                )
    precision = _summary(runs, "precision")
    recall = _summary(runs, "recall")
    p = config.spy_count / config.nodes
    return {
        "setting": {
            "nodes": config.nodes,
            "out_degree": config.out_degree,
            "spy_fraction": config.spy_fraction,
            "spies": config.spy_count,
            "honest_nodes": config.nodes - config.spy_count,
            "routing": config.routing,
            "fluff_probability": (
                config.fluff_probability if config.routing == "dandelion" else None
            ),
            "graphs": config.graphs,
            "trials": config.trials,
            "seed": config.seed,
            "estimator": "first-spy",
        },
        "precision": precision["mean"],
        "recall": recall["mean"],
        "precision_stderr": precision["stderr"],
        "recall_stderr": recall["stderr"],
        # The paper's lower bound on expected precision for any routing: p squared.
        "precision_lower_bound": round(p * p, DIGITS),
        "unseen_transactions": sum(run["unseen"] for run in runs),
        "runs": runs,
    }
