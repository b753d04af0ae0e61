"""Noise transport: round trips, tampering, replay, truncation, misuse and bounds."""

from __future__ import annotations

import contextlib
from typing import Literal

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.core.transport.noise import (
    MAX_NOISE_MESSAGE,
    MAX_NONCE,
    MAX_PAYLOAD,
    CipherState,
    HandshakeState,
    NoiseError,
)
from meshchain.core.transport.noise_patterns import PATTERNS, TOKENS
from meshchain.errors import LocalProtocolError, RemoteProtocolError

PROLOGUE = b"meshchain test"


def new_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def xx_pair(cipher: str = "ChaChaPoly") -> tuple[HandshakeState, HandshakeState, bytes, bytes]:
    s_i, s_r = new_key(), new_key()
    init = HandshakeState("XX", True, PROLOGUE, s=s_i, cipher=cipher)
    resp = HandshakeState("XX", False, PROLOGUE, s=s_r, cipher=cipher)
    return init, resp, s_i, s_r


def completed_xx() -> tuple[CipherState, CipherState, CipherState, CipherState]:
    """(initiator send, initiator receive, responder send, responder receive)."""
    init, resp, _, _ = xx_pair()
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    return (*init.split(), *resp.split())


# --- round trips ---


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_xx_round_trip(cipher: str) -> None:
    init, resp, s_i, s_r = xx_pair(cipher)
    assert init.is_my_turn
    assert not resp.is_my_turn
    assert resp.read_message(init.write_message(b"")) == b""
    assert resp.remote_static is None
    msg2 = resp.write_message(b"responder payload")
    assert init.read_message(msg2) == b"responder payload"
    assert init.remote_static == public(s_r)
    msg3 = init.write_message(b"initiator payload")
    assert resp.read_message(msg3) == b"initiator payload"
    assert resp.remote_static == public(s_i)
    assert init.local_static_public == public(s_i)
    assert init.is_complete
    assert resp.is_complete
    assert init.handshake_hash == resp.handshake_hash
    assert len(init.handshake_hash) == 32

    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    for n in range(3):
        ct = i_send.encrypt_with_ad(b"", b"ping %d" % n)
        assert b"ping" not in ct
        assert r_recv.decrypt_with_ad(b"", ct) == b"ping %d" % n
        assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"pong")) == b"pong"
    assert i_send.nonce == 3
    assert r_recv.nonce == 3


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_pattern_round_trips_with_random_keys(name: str) -> None:
    pattern = PATTERNS[name]
    s_i, s_r = new_key(), new_key()
    init_rs = public(s_r) if "s" in pattern.responder_pre else None
    resp_rs = public(s_i) if "s" in pattern.initiator_pre else None
    init = HandshakeState(name, True, PROLOGUE, s=s_i, rs=init_rs, hash="BLAKE2s")
    resp = HandshakeState(name, False, PROLOGUE, s=s_r, rs=resp_rs, hash="BLAKE2s")
    sender, receiver = init, resp
    number = 0
    while not init.is_complete:
        payload = b"message %d" % number
        assert receiver.read_message(sender.write_message(payload)) == payload
        sender, receiver = receiver, sender
        number += 1
    assert resp.is_complete
    assert init.handshake_hash == resp.handshake_hash
    uses_s = {side: any("s" in m for m in PATTERNS[name].messages[side::2]) for side in (0, 1)}
    if uses_s[1] or "s" in PATTERNS[name].responder_pre:
        assert init.remote_static == public(s_r)
    if uses_s[0] or "s" in PATTERNS[name].initiator_pre:
        assert resp.remote_static == public(s_i)
    i_send, _ = init.split()
    _, r_recv = resp.split()
    assert r_recv.decrypt_with_ad(b"ad", i_send.encrypt_with_ad(b"ad", b"data")) == b"data"


def test_different_prologues_fail_the_handshake() -> None:
    init = HandshakeState("NN", True, b"one")
    resp = HandshakeState("NN", False, b"two")
    resp.read_message(init.write_message())
    with pytest.raises(NoiseError):
        init.read_message(resp.write_message())


# --- tampering, replay, reordering ---


@pytest.mark.parametrize("position", [0, 31, 32, 40, 79, 80, 95, -1])
def test_tampered_handshake_message_raises_noise_error(position: int) -> None:
    init, resp, _, _ = xx_pair()
    resp.read_message(init.write_message())
    msg2 = bytearray(resp.write_message(b"payload"))
    msg2[position] ^= 0x01
    with pytest.raises(NoiseError):
        init.read_message(bytes(msg2))
    with pytest.raises(LocalProtocolError):  # a failed handshake stays dead
        init.write_message()


def test_tampered_first_message_is_caught_by_the_responders_reply() -> None:
    init, resp, _, _ = xx_pair()
    msg1 = bytearray(init.write_message(b"hello"))
    msg1[-1] ^= 0x80  # the cleartext payload is still hashed into h
    resp.read_message(bytes(msg1))
    with pytest.raises(NoiseError):
        init.read_message(resp.write_message())


def test_tampered_transport_message_does_not_advance_the_nonce() -> None:
    i_send, _, _, r_recv = completed_xx()
    genuine = i_send.encrypt_with_ad(b"", b"first")
    following = i_send.encrypt_with_ad(b"", b"second")
    for position in (0, len(genuine) // 2, len(genuine) - 1):
        tampered = bytearray(genuine)
        tampered[position] ^= 0x04
        with pytest.raises(NoiseError):
            r_recv.decrypt_with_ad(b"", bytes(tampered))
        assert r_recv.nonce == 0
    with pytest.raises(NoiseError):  # wrong associated data
        r_recv.decrypt_with_ad(b"x", genuine)
    assert r_recv.decrypt_with_ad(b"", genuine) == b"first"
    assert r_recv.decrypt_with_ad(b"", following) == b"second"


def test_replayed_transport_message_raises() -> None:
    i_send, _, _, r_recv = completed_xx()
    ct = i_send.encrypt_with_ad(b"", b"pay me once")
    assert r_recv.decrypt_with_ad(b"", ct) == b"pay me once"
    with pytest.raises(NoiseError):
        r_recv.decrypt_with_ad(b"", ct)


def test_reordered_transport_messages_raise() -> None:
    i_send, _, _, r_recv = completed_xx()
    first = i_send.encrypt_with_ad(b"", b"1")
    second = i_send.encrypt_with_ad(b"", b"2")
    with pytest.raises(NoiseError):
        r_recv.decrypt_with_ad(b"", second)
    assert r_recv.decrypt_with_ad(b"", first) == b"1"
    assert r_recv.decrypt_with_ad(b"", second) == b"2"


def test_message_from_the_wrong_direction_raises() -> None:
    i_send, i_recv, _, _ = completed_xx()
    with pytest.raises(NoiseError):
        i_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"echo"))


# --- truncation and malformed input ---


@pytest.mark.parametrize("length", [0, 1, 31, 32, 48, 63, 64, 79, 80, 95])
def test_truncated_handshake_message_raises_noise_error(length: int) -> None:
    init, resp, _, _ = xx_pair()
    resp.read_message(init.write_message())
    msg2 = resp.write_message()  # 32 (e) + 48 (encrypted s) + 16 (payload tag) = 96
    assert len(msg2) == 96
    with pytest.raises(NoiseError):
        init.read_message(msg2[:length])


@pytest.mark.parametrize("length", [0, 16, 31])
def test_truncated_first_message_raises_noise_error(length: int) -> None:
    _, resp, _, _ = xx_pair()
    with pytest.raises(NoiseError):
        resp.read_message(bytes(length))


def test_short_transport_ciphertext_raises_noise_error() -> None:
    _, _, _, r_recv = completed_xx()
    for length in (0, 1, 15):
        with pytest.raises(NoiseError):
            r_recv.decrypt_with_ad(b"", bytes(length))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_second_message_raises_only_noise_error(data: bytes) -> None:
    init = HandshakeState("IK", True, PROLOGUE, s=new_key(), e=None, rs=public(new_key()))
    init.write_message()
    with contextlib.suppress(NoiseError):
        init.read_message(data)


# --- low-order keys ---

LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little")]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_remote_ephemeral_in_reply_raises(point: bytes) -> None:
    init, resp, _, _ = xx_pair()
    resp.read_message(init.write_message())
    msg2 = point + resp.write_message()[32:]
    with pytest.raises(NoiseError):
        init.read_message(msg2)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_remote_ephemeral_in_first_message_raises(point: bytes) -> None:
    _, resp, _, _ = xx_pair()
    resp.read_message(point)  # "e" alone only hashes the key; the DH comes with "ee"
    with pytest.raises(NoiseError):
        resp.write_message()
    with pytest.raises(LocalProtocolError):
        resp.write_message()


def test_low_order_ephemeral_rejected_when_read_with_dh() -> None:
    # NK: the responder performs "es" while reading the initiator's ephemeral.
    s_r = new_key()
    resp = HandshakeState("NK", False, PROLOGUE, s=s_r)
    with pytest.raises(NoiseError):
        resp.read_message(bytes(32) + bytes(16))


# --- misuse ---


def test_writing_or_reading_out_of_turn_raises_local_error() -> None:
    init, resp, _, _ = xx_pair()
    with pytest.raises(LocalProtocolError):
        resp.write_message()
    with pytest.raises(LocalProtocolError):
        init.read_message(bytes(32))
    with pytest.raises(LocalProtocolError):
        init.split()
    resp.read_message(init.write_message())
    with pytest.raises(LocalProtocolError):
        init.write_message()
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    for side in (init, resp):
        with pytest.raises(LocalProtocolError):
            side.write_message(b"late")
        with pytest.raises(LocalProtocolError):
            side.read_message(bytes(64))
    init.split()
    with pytest.raises(LocalProtocolError):
        init.split()


def test_missing_or_superfluous_keys_raise_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        HandshakeState("XX", True, PROLOGUE)  # XX sends the initiator's static key
    with pytest.raises(LocalProtocolError):
        HandshakeState("NK", True, PROLOGUE)  # NK needs the responder's key in advance
    with pytest.raises(LocalProtocolError):
        HandshakeState("XX", True, PROLOGUE, s=new_key(), rs=public(new_key()))
    with pytest.raises(LocalProtocolError):
        HandshakeState("XX", True, PROLOGUE, s=b"short")
    with pytest.raises(LocalProtocolError):
        HandshakeState("NK", True, PROLOGUE, rs=b"\x09" * 31)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_448_ChaChaPoly_SHA256",
        "Noise_XXpsk3_25519_ChaChaPoly_SHA256",
        "Noise_XX_25519_AES_SHA256",
        "Noise_XX_25519_ChaChaPoly_MD5",
        "Noise_XX_25519_ChaChaPoly",
        "Nose_XX_25519_ChaChaPoly_SHA256",
    ],
)
def test_unsupported_protocol_names_raise_local_error(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        HandshakeState.from_protocol_name(name, initiator=True, s=new_key())


def test_from_protocol_name_matches_the_constructor() -> None:
    s_r = new_key()
    a = HandshakeState.from_protocol_name(
        "Noise_NK_25519_AESGCM_SHA512", initiator=True, prologue=b"p", rs=public(s_r)
    )
    b = HandshakeState("NK", True, b"p", rs=public(s_r), cipher="AESGCM", hash="SHA512")
    assert a.protocol_name == b.protocol_name == "Noise_NK_25519_AESGCM_SHA512"
    assert a.handshake_hash == b.handshake_hash
    assert len(a.handshake_hash) == 64


# --- bounds ---


def test_handshake_message_size_limit() -> None:
    init, resp, _, _ = xx_pair()
    with pytest.raises(LocalProtocolError):
        init.write_message(bytes(MAX_NOISE_MESSAGE - 32 + 1))
    msg1 = init.write_message(bytes(MAX_NOISE_MESSAGE - 32))  # still usable after refusal
    assert len(msg1) == MAX_NOISE_MESSAGE
    assert len(resp.read_message(msg1)) == MAX_NOISE_MESSAGE - 32
    with pytest.raises(LocalProtocolError):
        resp.write_message(bytes(MAX_NOISE_MESSAGE - 96 + 1))
    assert len(resp.write_message(bytes(MAX_NOISE_MESSAGE - 96))) == MAX_NOISE_MESSAGE


def test_oversize_handshake_input_raises_noise_error() -> None:
    _, resp, _, _ = xx_pair()
    with pytest.raises(NoiseError):
        resp.read_message(bytes(MAX_NOISE_MESSAGE + 1))


def test_transport_size_limits() -> None:
    i_send, _, _, r_recv = completed_xx()
    with pytest.raises(LocalProtocolError):
        i_send.encrypt_with_ad(b"", bytes(MAX_PAYLOAD + 1))
    assert i_send.nonce == 0
    ct = i_send.encrypt_with_ad(b"", bytes(MAX_PAYLOAD))
    assert len(ct) == MAX_NOISE_MESSAGE
    assert r_recv.decrypt_with_ad(b"", ct) == bytes(MAX_PAYLOAD)
    with pytest.raises(NoiseError):
        r_recv.decrypt_with_ad(b"", bytes(MAX_NOISE_MESSAGE + 1))


# --- nonces and rekey ---


@pytest.mark.parametrize(
    ("cipher", "aead", "order"),
    [("ChaChaPoly", ChaCha20Poly1305, "little"), ("AESGCM", AESGCM, "big")],
)
def test_nonce_encoding(
    cipher: str, aead: type[ChaCha20Poly1305 | AESGCM], order: Literal["little", "big"]
) -> None:
    key = bytes(range(32))
    cs = CipherState(cipher, key)
    for n in (0, 1, 0x0102030405060708, MAX_NONCE - 1):
        cs.set_nonce(n)
        expected = aead(key).encrypt(bytes(4) + n.to_bytes(8, order), b"data", b"ad")
        assert cs.encrypt_with_ad(b"ad", b"data") == expected


def test_reserved_nonce_is_never_used() -> None:
    key = bytes(range(32))
    sender, receiver = CipherState("ChaChaPoly", key), CipherState("ChaChaPoly", key)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    assert sender.nonce == MAX_NONCE
    with pytest.raises(LocalProtocolError):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NoiseError):
        receiver.decrypt_with_ad(b"", bytes(32))
    with pytest.raises(LocalProtocolError):
        sender.set_nonce(MAX_NONCE + 1)
    with pytest.raises(LocalProtocolError):
        sender.set_nonce(-1)


def test_cipher_state_without_key_passes_through() -> None:
    cs = CipherState("AESGCM")
    assert not cs.has_key()
    assert cs.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert cs.decrypt_with_ad(b"ad", b"clear") == b"clear"
    with pytest.raises(LocalProtocolError):
        cs.rekey()
    with pytest.raises(LocalProtocolError):
        cs.initialize_key(bytes(16))
    with pytest.raises(LocalProtocolError):
        CipherState("Salsa20")


def test_rekey_changes_the_key_and_keeps_the_nonce() -> None:
    i_send, _, _, r_recv = completed_xx()
    r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"before"))
    probe = CipherState("ChaChaPoly")
    i_send.rekey()
    assert i_send.nonce == 1
    ct = i_send.encrypt_with_ad(b"", b"after")
    with pytest.raises(NoiseError):  # receiver has not rekeyed yet
        r_recv.decrypt_with_ad(b"", ct)
    r_recv.rekey()
    assert r_recv.decrypt_with_ad(b"", ct) == b"after"
    assert not probe.has_key()


def test_one_way_pattern_sends_initiator_to_responder() -> None:
    s_i, s_r = new_key(), new_key()
    init = HandshakeState("X", True, PROLOGUE, s=s_i, rs=public(s_r))
    resp = HandshakeState("X", False, PROLOGUE, s=s_r)
    assert resp.read_message(init.write_message(b"sealed")) == b"sealed"
    assert init.is_complete
    assert resp.is_complete
    assert resp.remote_static == public(s_i)
    i_send, _ = init.split()
    _, r_recv = resp.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"more")) == b"more"


# --- the pattern table ---


def test_pattern_table_covers_the_specification() -> None:
    assert len(PATTERNS) == 3 + 12 + 23
    for name, pattern in PATTERNS.items():
        assert pattern.one_way == (len(name) == 1)
        tokens = [t for m in pattern.messages for t in m]
        assert set(tokens) <= TOKENS, name
        assert pattern.messages[0][0] == "e", name
        for side in (0, 1):
            sent = [t for m in pattern.messages[side::2] for t in m]
            assert sent.count("e") <= 1, name
            assert sent.count("s") <= 1, name


def test_noise_error_is_a_remote_protocol_error() -> None:
    assert issubclass(NoiseError, RemoteProtocolError)
