"""The transaction request tracker: who is asked for what, and when someone else is."""

from __future__ import annotations

from meshchain.core.relay.txrequest import (
    MAX_PEER_ANNOUNCEMENTS,
    MAX_PEER_IN_FLIGHT,
    NONPREFERRED_PEER_DELAY,
    TX_REQUEST_TIMEOUT,
    TxRequestTracker,
)

T0 = 1_000.0


def txid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def tracker(*peers: tuple[str, bool]) -> TxRequestTracker:
    requests = TxRequestTracker()
    for peer, preferred in peers:
        requests.add_peer(peer, preferred)
    return requests


def test_an_outbound_announcement_is_requested_at_once_and_only_once() -> None:
    requests = tracker(("out", True), ("other", True))
    requests.announced("out", txid(1), T0)
    requests.announced("other", txid(1), T0)
    assert requests.requests(T0) == {"out": [txid(1)]}
    assert requests.requests(T0 + 1) == {}
    assert requests.in_flight("out") == 1


def test_an_inbound_announcer_waits_its_delay_unless_an_outbound_one_answers() -> None:
    requests = tracker(("in", False), ("out", True))
    requests.announced("in", txid(1), T0)
    assert requests.requests(T0) == {}
    assert requests.next_wakeup() == T0 + NONPREFERRED_PEER_DELAY
    requests.announced("out", txid(1), T0 + 0.5)
    assert requests.requests(T0 + 0.5) == {"out": [txid(1)]}  # outbound preferred
    alone = tracker(("in", False))
    alone.announced("in", txid(2), T0)
    assert alone.requests(T0 + NONPREFERRED_PEER_DELAY) == {"in": [txid(2)]}


def test_a_timed_out_request_moves_to_the_next_announcer_and_is_reported() -> None:
    requests = tracker(("a", True), ("b", True))
    requests.announced("a", txid(1), T0)
    requests.announced("b", txid(1), T0)
    assert requests.requests(T0) == {"a": [txid(1)]}
    assert requests.requests(T0 + TX_REQUEST_TIMEOUT - 1) == {}
    assert requests.next_wakeup() == T0 + TX_REQUEST_TIMEOUT
    assert requests.requests(T0 + TX_REQUEST_TIMEOUT) == {"b": [txid(1)]}
    assert requests.timed_out == ["a"]
    assert requests.in_flight("a") == 0
    requests.requests(T0 + 2 * TX_REQUEST_TIMEOUT)
    assert len(requests) == 0  # nobody left to ask: forgotten


def test_not_found_and_disconnects_hand_the_request_on() -> None:
    requests = tracker(("a", True), ("b", True), ("c", True))
    for peer in ("a", "b", "c"):
        requests.announced(peer, txid(1), T0)
    assert requests.requests(T0) == {"a": [txid(1)]}
    requests.not_found("b", txid(1))  # b was not asked: ignored
    requests.not_found("a", txid(1))
    assert requests.requests(T0) == {"b": [txid(1)]}
    requests.remove_peer("b")
    assert requests.requests(T0) == {"c": [txid(1)]}


def test_a_delivered_transaction_is_forgotten_everywhere() -> None:
    requests = tracker(("a", True), ("b", True))
    requests.announced("a", txid(1), T0)
    requests.announced("b", txid(1), T0)
    requests.requests(T0)
    requests.forget(txid(1))
    assert len(requests) == 0
    assert requests.in_flight("a") == 0
    assert requests.announcements("a") == requests.announcements("b") == 0
    assert requests.requests(T0 + TX_REQUEST_TIMEOUT) == {}


def test_announcements_per_peer_are_capped() -> None:
    requests = tracker(("flood", True))
    total = MAX_PEER_ANNOUNCEMENTS + 10
    accepted = [requests.announced("flood", txid(n), T0) for n in range(total)]
    assert accepted.count(False) == 10
    assert requests.announcements("flood") == MAX_PEER_ANNOUNCEMENTS


def test_requests_in_flight_per_peer_are_capped_and_resume_as_answers_come() -> None:
    requests = tracker(("a", True))
    for n in range(MAX_PEER_IN_FLIGHT + 5):
        requests.announced("a", txid(n), T0)
    first = requests.requests(T0)["a"]
    assert len(first) == MAX_PEER_IN_FLIGHT
    assert requests.requests(T0) == {}
    for got in first[:3]:
        requests.forget(got)
    requests.capacity_freed("a")
    assert len(requests.requests(T0)["a"]) == 3


def test_each_request_times_out_at_its_own_deadline() -> None:
    requests = tracker(("a", True), ("b", True), ("in", False))
    requests.announced("a", txid(1), T0)
    requests.announced("b", txid(2), T0 + 5)
    requests.announced("in", txid(1), T0)
    requests.announced("in", txid(2), T0)
    assert requests.requests(T0) == {"a": [txid(1)]}
    assert requests.requests(T0 + 5) == {"b": [txid(2)]}
    assert requests.next_wakeup() == T0 + TX_REQUEST_TIMEOUT
    requests.forget(txid(1))  # delivered: its deadline goes with it
    assert requests.requests(T0 + TX_REQUEST_TIMEOUT) == {}
    assert requests.next_wakeup() == T0 + 5 + TX_REQUEST_TIMEOUT
    assert requests.requests(T0 + 5 + TX_REQUEST_TIMEOUT) == {"in": [txid(2)]}
    assert requests.timed_out == ["b"]
    assert requests.in_flight("b") == 0


def test_a_batch_of_announcements_counts_against_the_same_cap() -> None:
    requests = tracker(("flood", True))
    ids = [txid(n) for n in range(MAX_PEER_ANNOUNCEMENTS + 10)]
    assert requests.announced_many("flood", ids, T0) == MAX_PEER_ANNOUNCEMENTS
    assert requests.announcements("flood") == MAX_PEER_ANNOUNCEMENTS
    first = requests.requests(T0)["flood"]
    assert first == ids[:MAX_PEER_IN_FLIGHT]  # oldest first, the rest wait for room
    assert requests.received("flood", [*first[:2], txid(10**6)]) == 1  # one unasked
    requests.capacity_freed("flood")
    assert requests.requests(T0) == {"flood": ids[MAX_PEER_IN_FLIGHT : MAX_PEER_IN_FLIGHT + 2]}
