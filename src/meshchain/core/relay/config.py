"""How a node relays: the mode, the trickle timers, compact blocks and Dandelion++."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

# Bitcoin's OUTBOUND_INVENTORY_BROADCAST_INTERVAL: mean seconds between announcements
# of transactions to one outbound peer (a Poisson timer per peer).
OUTBOUND_TRICKLE_MEAN = 2.0
# Bitcoin's INBOUND_INVENTORY_BROADCAST_INTERVAL: the same for inbound peers, on one timer
# shared by all of them, so a spy with many connections learns nothing from the timing.
INBOUND_TRICKLE_MEAN = 5.0
# BIP156, Dandelion++ paper: the chance that a relay fluffs rather than stems, per epoch.
DEFAULT_FLUFF_PROBABILITY = 0.1
# Dandelion++ paper and BIP156: stem routes are redrawn every 10 minutes.
DANDELION_EPOCH = 600.0
# Monero (cryptonote_config.h): each epoch is lengthened by up to 30 s at random, so
# nodes do not all redraw at once.
DANDELION_EPOCH_JITTER = 30.0
# Monero's mean embargo (about 39 s): how long a stem transaction may go unseen in the
# fluff phase before this node fluffs it itself.
DANDELION_EMBARGO_MEAN = 39.0


class RelayMode(enum.Enum):
    FLOOD = "flood"  # every new item pushed whole to every peer: the simulator baseline
    ANNOUNCE = "announce"  # inventory, then the peer fetches what it lacks (Bitcoin)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    mode: RelayMode = RelayMode.ANNOUNCE
    outbound_trickle: float = OUTBOUND_TRICKLE_MEAN
    inbound_trickle: float = INBOUND_TRICKLE_MEAN
    compact_blocks: bool = True
    dandelion: bool = True
    fluff_probability: float = DEFAULT_FLUFF_PROBABILITY
    epoch: float = DANDELION_EPOCH
    epoch_jitter: float = DANDELION_EPOCH_JITTER
    embargo_mean: float = DANDELION_EMBARGO_MEAN

    def __post_init__(self) -> None:
        for name in ("outbound_trickle", "inbound_trickle", "epoch", "embargo_mean"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"relay {name} must be a positive number of seconds")
        if not (math.isfinite(self.epoch_jitter) and self.epoch_jitter >= 0):
            raise ValueError("relay epoch_jitter must be >= 0 seconds")
        if not 0.0 <= self.fluff_probability <= 1.0:
            raise ValueError("relay fluff_probability must be between 0 and 1")
