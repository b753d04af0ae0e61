"""One address-book entry's state, and Bitcoin Core's rules for judging it.

`is_terrible` decides what may be overwritten and what is not worth gossiping;
`select_chance` how willing the dialler is to pick an entry now. Times are whole unix
seconds; 0 means "never".
"""

from __future__ import annotations

from meshchain.core.peers.addrbook_codec import StoredEntry
from meshchain.core.peers.address import NetAddress
from meshchain.core.wire.messages import AddrEntry

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# Bitcoin's ADDRMAN_HORIZON: an address not seen for this long is terrible.
HORIZON = 30 * DAY
# Bitcoin's ADDRMAN_RETRIES: failed attempts after which a never-working address is terrible.
RETRIES = 3
# Bitcoin's ADDRMAN_MAX_FAILURES and ADDRMAN_MIN_FAIL: this many failures, with no
# success for this long, make even a once-working address terrible.
MAX_FAILURES = 10
MIN_FAIL = 7 * DAY
# Bitcoin's IsTerrible: an address tried in the last minute is never terrible.
RECENT_TRY_GRACE = MINUTE
# Bitcoin (net_processing, IsTerrible): a timestamp more than 10 minutes ahead is a lie.
MAX_FUTURE_DRIFT = 10 * MINUTE
# Bitcoin's GetChance: an address tried in the last 10 minutes is chosen 1% as often,
# and each failed attempt (up to 8) multiplies the chance by 0.66.
RECENT_TRY_WINDOW = 10 * MINUTE
RECENT_TRY_CHANCE = 0.01
FAILURE_CHANCE_DECAY = 0.66
MAX_DECAYED_ATTEMPTS = 8
# The smallest chance select_chance returns (~0.00036).
MIN_CHANCE = RECENT_TRY_CHANCE * FAILURE_CHANCE_DECAY**MAX_DECAYED_ATTEMPTS
# Node ids are 32-byte identity keys; anything else is treated as unknown.
NODE_ID_SIZE = 32


class EntryState:
    """The mutable state of one entry. `group` is cached (bucketing needs it often);
    `new_buckets` lists the new buckets holding a reference (empty when tried)."""

    __slots__ = (
        "address",
        "attempts",
        "group",
        "in_tried",
        "last_count_attempt",
        "last_success",
        "last_try",
        "new_buckets",
        "node_id",
        "seen",
        "services",
        "source_group",
    )

    def __init__(
        self,
        address: NetAddress,
        group: bytes,
        source_group: bytes,
        entry: AddrEntry | StoredEntry,
    ) -> None:
        self.address = address
        self.group = group
        self.source_group = source_group  # the group of whoever first told us
        self.node_id = entry.node_id if len(entry.node_id) == NODE_ID_SIZE else b""
        self.services = entry.services
        self.seen = entry.seen
        self.last_try = 0
        self.last_success = 0
        self.last_count_attempt = 0  # memory only, as in Bitcoin
        self.attempts = 0  # failures since the last success
        self.in_tried = False
        self.new_buckets: list[int] = []


def is_terrible(entry: EntryState, now: int) -> bool:
    """Bitcoin's IsTerrible: not worth keeping in a full bucket nor worth gossiping."""
    if now - entry.last_try <= RECENT_TRY_GRACE:
        return False
    if entry.seen > now + MAX_FUTURE_DRIFT or now - entry.seen > HORIZON:
        return True
    if entry.last_success == 0 and entry.attempts >= RETRIES:
        return True
    return now - entry.last_success > MIN_FAIL and entry.attempts >= MAX_FAILURES


def select_chance(entry: EntryState, now: int) -> float:
    """Bitcoin's GetChance: how willing Select is to hand this entry out right now."""
    chance = RECENT_TRY_CHANCE if now - entry.last_try < RECENT_TRY_WINDOW else 1.0
    return chance * FAILURE_CHANCE_DECAY ** min(entry.attempts, MAX_DECAYED_ATTEMPTS)
