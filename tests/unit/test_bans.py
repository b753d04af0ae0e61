"""The offence table and the ban list: expiry, precedence, bounds and persistence."""

from __future__ import annotations

import msgspec
import pytest

from meshchain.core.peers.address import AddressError, net_address
from meshchain.core.peers.bans import (
    BAN_LIST_VERSION,
    DEFAULT_BAN_SECONDS,
    MAX_BAN_ENTRIES,
    MAX_BAN_REASON_LENGTH,
    OFFENCES,
    BanKind,
    BanList,
    BanListError,
    Offence,
    Penalty,
    PenaltyAction,
)
from meshchain.errors import MeshchainError

NOW = 1_700_000_000.0
DAY = 24 * 60 * 60
IP_A = net_address("203.0.113.7", 9000).ip
IP_B = net_address("198.51.100.20", 9000).ip
IP_V6 = net_address("2001:db8::1", 9000).ip


def ipv4(index: int) -> bytes:
    return bytes([10, index >> 16 & 0xFF, index >> 8 & 0xFF, index & 0xFF])


# --- The offence table -----------------------------------------------------------------


def test_every_offence_has_a_penalty() -> None:
    assert set(OFFENCES) == set(Offence)
    for offence, penalty in OFFENCES.items():
        assert penalty.description, offence
        assert (penalty.duration == 0) == (penalty.action is PenaltyAction.DISCONNECT)


@pytest.mark.parametrize(
    ("offence", "action", "duration"),
    [
        (Offence.INVALID_BLOCK, PenaltyAction.DISCOURAGE, DAY),
        (Offence.INVALID_TRANSACTION, PenaltyAction.DISCOURAGE, DAY),
        (Offence.INVALID_CONSENSUS_PROOF, PenaltyAction.BAN, DEFAULT_BAN_SECONDS),
        (Offence.ADDR_FLOOD, PenaltyAction.DISCOURAGE, DAY),
        (Offence.RATE_LIMIT_EXCEEDED, PenaltyAction.DISCOURAGE, 300),
        (Offence.STALLING, PenaltyAction.DISCONNECT, 0),
        (Offence.DUPLICATE_HELLO, PenaltyAction.DISCONNECT, 0),
    ],
)
def test_key_entries_of_the_table(offence: Offence, action: PenaltyAction, duration: int) -> None:
    assert OFFENCES[offence].action is action
    assert OFFENCES[offence].duration == duration


def test_bitcoin_ban_time_is_a_day() -> None:
    assert DEFAULT_BAN_SECONDS == 86_400


@pytest.mark.parametrize("offence", list(Offence))
def test_punish_applies_the_table(offence: Offence) -> None:
    bans = BanList()
    penalty = bans.punish(IP_A, offence, NOW)
    assert penalty is OFFENCES[offence]
    assert bans.is_banned(IP_A, NOW) == (penalty.action is PenaltyAction.BAN)
    assert bans.is_discouraged(IP_A, NOW) == (penalty.action is not PenaltyAction.DISCONNECT)
    if penalty.action is not PenaltyAction.DISCONNECT:
        [entry] = bans.entries(NOW)
        assert entry.until == NOW + penalty.duration
        assert entry.reason == penalty.description
        assert not bans.is_discouraged(IP_A, NOW + penalty.duration)
    assert not bans.is_discouraged(IP_B, NOW)


def test_penalty_duration_must_fit_its_action() -> None:
    with pytest.raises(ValueError, match="disconnect lasts 0"):
        Penalty(PenaltyAction.DISCONNECT, 5, "x")
    with pytest.raises(ValueError, match="disconnect lasts 0"):
        Penalty(PenaltyAction.BAN, 0, "x")


# --- Ban, discourage, unban, expiry ------------------------------------------------------


def test_ban_expires() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 60, "manual")
    assert bans.is_banned(IP_A, NOW)
    assert bans.is_banned(IP_A, NOW + 59.9)
    assert not bans.is_banned(IP_A, NOW + 60)
    assert not bans.is_banned(IP_B, NOW)


def test_bans_are_per_ip_not_per_port() -> None:
    bans = BanList()
    bans.ban(net_address("203.0.113.7", 1).ip, NOW + 60, "manual")
    assert bans.is_banned(net_address("203.0.113.7", 65535).ip, NOW)
    # An IPv4-mapped IPv6 form of the same host is the same IP.
    assert bans.is_banned(bytes(10) + b"\xff\xff" + IP_A, NOW)


def test_discouraged_is_not_banned() -> None:
    bans = BanList()
    bans.discourage(IP_A, NOW + 60, "bad block")
    assert bans.is_discouraged(IP_A, NOW)
    assert not bans.is_banned(IP_A, NOW)
    assert [e.kind for e in bans.entries(NOW)] == [BanKind.DISCOURAGED]


def test_discouragement_extends_but_never_shortens() -> None:
    bans = BanList()
    bans.discourage(IP_A, NOW + 100, "first")
    bans.discourage(IP_A, NOW + 50, "second")
    assert bans.is_discouraged(IP_A, NOW + 75)
    bans.discourage(IP_A, NOW + 200, "third")
    assert bans.is_discouraged(IP_A, NOW + 150)
    assert bans.entries(NOW)[0].reason == "third"


def test_a_ban_outranks_a_discouragement() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 100, "manual")
    bans.discourage(IP_A, NOW + 500, "later offence")
    assert bans.is_banned(IP_A, NOW + 50)
    assert bans.entries(NOW)[0].reason == "manual"
    bans.discourage(IP_B, NOW + 500, "offence")
    bans.ban(IP_B, NOW + 100, "manual")
    assert bans.is_banned(IP_B, NOW)
    assert bans.is_discouraged(IP_A, NOW)  # banned counts as discouraged


def test_a_manual_ban_may_be_shortened() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + DAY, "manual")
    bans.ban(IP_A, NOW + 10, "changed my mind")
    assert not bans.is_banned(IP_A, NOW + 11)


def test_punishing_twice_does_not_shorten_a_ban() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 10 * DAY, "manual")
    bans.punish(IP_A, Offence.INVALID_CONSENSUS_PROOF, NOW)
    assert bans.is_banned(IP_A, NOW + 5 * DAY)
    bans.punish(IP_B, Offence.INVALID_CONSENSUS_PROOF, NOW)
    bans.punish(IP_B, Offence.INVALID_CONSENSUS_PROOF, NOW + 100)
    assert bans.is_banned(IP_B, NOW + DEFAULT_BAN_SECONDS + 50)


def test_an_expired_ban_does_not_block_a_new_punishment() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW - 1, "old manual ban, not yet swept")
    bans.punish(IP_A, Offence.INVALID_BLOCK, NOW)
    assert bans.is_discouraged(IP_A, NOW + 60)
    assert not bans.is_banned(IP_A, NOW + 60)


def test_unban() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 60, "manual")
    bans.discourage(IP_B, NOW + 60, "offence")
    assert bans.unban(IP_A)
    assert not bans.unban(IP_A)
    assert bans.unban(IP_B)
    assert not bans.is_banned(IP_A, NOW)
    assert not bans.is_discouraged(IP_B, NOW)
    assert len(bans) == 0


def test_sweep_removes_only_expired_entries() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 10, "short")
    bans.discourage(IP_B, NOW + 1_000, "long")
    bans.ban(IP_V6, NOW + 20, "v6")
    assert bans.sweep(NOW + 5) == 0
    assert bans.sweep(NOW + 20) == 2
    assert len(bans) == 1
    assert bans.is_discouraged(IP_B, NOW + 20)


def test_entries_for_the_api() -> None:
    bans = BanList()
    bans.discourage(IP_B, NOW + 300, "offence")
    bans.ban(IP_V6, NOW + 100, "manual")
    bans.ban(IP_A, NOW - 1, "expired")
    entries = bans.entries(NOW)
    assert [(e.ip, e.until, e.reason, e.kind) for e in entries] == [
        ("2001:db8::1", NOW + 100, "manual", BanKind.BANNED),
        ("198.51.100.20", NOW + 300, "offence", BanKind.DISCOURAGED),
    ]


def test_reasons_are_cut_to_length() -> None:
    bans = BanList()
    bans.ban(IP_A, NOW + 1, "x" * 1_000)
    assert len(bans.entries(NOW)[0].reason) == MAX_BAN_REASON_LENGTH


def test_mutations_refuse_a_malformed_ip_and_queries_ignore_it() -> None:
    bans = BanList()
    with pytest.raises(AddressError):
        bans.ban(b"\x01\x02\x03", NOW + 1, "bad")
    with pytest.raises(AddressError):
        bans.discourage(b"", NOW + 1, "bad")
    assert not bans.is_banned(b"", NOW)
    assert not bans.is_discouraged(b"\x01" * 5, NOW)
    assert not bans.unban(b"")


# --- Bounded size ----------------------------------------------------------------------


def test_when_full_the_soonest_expiring_goes() -> None:
    bans = BanList(max_entries=3)
    for index, until in enumerate((300.0, 100.0, 200.0)):
        bans.discourage(ipv4(index), NOW + until, "offence")
    bans.discourage(ipv4(9), NOW + 400, "newcomer")
    assert len(bans) == 3
    assert not bans.is_discouraged(ipv4(1), NOW)  # expiring at +100: gone
    assert all(bans.is_discouraged(ipv4(i), NOW) for i in (0, 2, 9))
    # A newcomer expiring sooner than everything kept is the one left out.
    bans.discourage(ipv4(10), NOW + 50, "short")
    assert not bans.is_discouraged(ipv4(10), NOW)
    assert len(bans) == 3


def test_a_flood_of_discouragements_cannot_push_out_bans() -> None:
    bans = BanList(max_entries=4)
    bans.ban(IP_A, NOW + 60, "manual, expires soon")
    bans.ban(IP_B, NOW + 60, "manual, expires soon")
    for index in range(100):
        bans.punish(ipv4(index), Offence.INVALID_BLOCK, NOW + index)
    assert len(bans) == 4
    assert bans.is_banned(IP_A, NOW)
    assert bans.is_banned(IP_B, NOW)
    assert bans.is_discouraged(ipv4(99), NOW + 99)


def test_default_bound_is_enforced() -> None:
    bans = BanList()
    for index in range(MAX_BAN_ENTRIES + 50):
        bans.discourage(ipv4(index), NOW + index, "flood")
    assert len(bans) == MAX_BAN_ENTRIES
    assert not bans.is_discouraged(ipv4(0), NOW)
    assert bans.is_discouraged(ipv4(MAX_BAN_ENTRIES + 49), NOW)


def test_max_entries_is_checked() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        BanList(max_entries=0)
    with pytest.raises(ValueError, match="max_entries"):
        BanList(max_entries=MAX_BAN_ENTRIES + 1)


# --- Persistence -----------------------------------------------------------------------


def sample_list() -> BanList:
    bans = BanList()
    bans.ban(IP_A, NOW + 100.5, "manual ban")
    bans.discourage(IP_V6, NOW + DAY, "invalid block ✗")
    bans.ban(IP_B, NOW - 5, "already expired")
    return bans


def test_round_trip() -> None:
    original = sample_list()
    data = original.to_bytes()
    restored = BanList.from_bytes(data)
    assert restored.entries(NOW - 100) == original.entries(NOW - 100)
    assert len(restored.entries(NOW - 100)) == 3
    assert restored.is_banned(IP_A, NOW)
    assert restored.is_discouraged(IP_V6, NOW)
    assert restored.to_bytes() == data  # one encoding per list
    assert BanList.from_bytes(BanList().to_bytes()).entries(NOW) == []


def test_encoding_does_not_depend_on_insertion_order() -> None:
    one, two = BanList(), BanList()
    one.ban(IP_A, NOW + 1, "a")
    one.ban(IP_B, NOW + 2, "b")
    two.ban(IP_B, NOW + 2, "b")
    two.ban(IP_A, NOW + 1, "a")
    assert one.to_bytes() == two.to_bytes()


def encoded(version: int, entries: list[list[object]]) -> bytes:
    return msgspec.msgpack.encode([version, entries])


def test_the_hand_made_encoding_matches_ours() -> None:
    # Guards the corruption cases below: they differ from a valid file in one place only.
    valid = encoded(BAN_LIST_VERSION, [[IP_A, 1, NOW + 1, "r"]])
    assert BanList.from_bytes(valid).is_banned(IP_A, NOW)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\x00garbage", id="garbage"),
        pytest.param(msgspec.msgpack.encode(7), id="not-a-list"),
        pytest.param(encoded(BAN_LIST_VERSION, [[IP_A, 1, NOW + 1, "r"]])[:-2], id="truncated"),
        pytest.param(encoded(BAN_LIST_VERSION + 1, []), id="future-version"),
        pytest.param(encoded(BAN_LIST_VERSION, [[b"\x01\x02\x03", 1, NOW, "r"]]), id="ip-3-bytes"),
        pytest.param(encoded(BAN_LIST_VERSION, [[b"\x01" * 8, 1, NOW, "r"]]), id="ip-8-bytes"),
        pytest.param(
            encoded(BAN_LIST_VERSION, [[bytes(10) + b"\xff\xff" + IP_A, 1, NOW, "r"]]),
            id="ip-mapped",
        ),
        pytest.param(encoded(BAN_LIST_VERSION, [[IP_A, 9, NOW, "r"]]), id="unknown-kind"),
        pytest.param(encoded(BAN_LIST_VERSION, [[IP_A, 1, float("nan"), "r"]]), id="nan-expiry"),
        pytest.param(
            encoded(BAN_LIST_VERSION, [[IP_A, 1, NOW, "r"], [IP_A, 2, NOW, "r"]]), id="duplicate"
        ),
        pytest.param(encoded(BAN_LIST_VERSION, [[IP_A, 1, NOW, "r", 5]]), id="extra-field"),
        pytest.param(
            encoded(BAN_LIST_VERSION, [[IP_A, 1, NOW, "r" * (MAX_BAN_REASON_LENGTH + 1)]]),
            id="long-reason",
        ),
        pytest.param(sample_list().to_bytes() + b"\x00", id="trailing-byte"),
    ],
)
def test_corrupt_data_raises_a_typed_error(data: bytes) -> None:
    with pytest.raises(BanListError) as caught:
        BanList.from_bytes(data)
    assert isinstance(caught.value, MeshchainError)
