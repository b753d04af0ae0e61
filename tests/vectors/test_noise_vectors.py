"""The cacophony Noise test vectors: every 25519 pattern without PSK, both ciphers, four hashes.

Both sides run from the vector's fixed keys; every handshake and transport ciphertext,
every decrypted payload and the handshake hash must match exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshchain.core.transport.noise import HandshakeState

VECTORS_FILE = Path(__file__).parent / "noise-cacophony-25519.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
EXPECTED_COUNT = 304


def _hex(vector: dict[str, Any], key: str) -> bytes | None:
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def _side(vector: dict[str, Any], prefix: str, initiator: bool) -> HandshakeState:
    return HandshakeState.from_protocol_name(
        vector["protocol_name"],
        initiator=initiator,
        prologue=_hex(vector, f"{prefix}_prologue") or b"",
        s=_hex(vector, f"{prefix}_static"),
        e=_hex(vector, f"{prefix}_ephemeral"),
        rs=_hex(vector, f"{prefix}_remote_static"),
    )


def test_vector_file_is_complete() -> None:
    assert len(VECTORS) == EXPECTED_COUNT
    names = [v["protocol_name"] for v in VECTORS]
    assert len(set(names)) == EXPECTED_COUNT
    for cipher in ("ChaChaPoly", "AESGCM"):
        for hash_name in ("SHA256", "SHA512", "BLAKE2s", "BLAKE2b"):
            assert sum(n.endswith(f"_25519_{cipher}_{hash_name}") for n in names) == 38


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    initiator = _side(vector, "init", initiator=True)
    responder = _side(vector, "resp", initiator=False)
    messages = [
        (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in vector["messages"]
    ]

    index = 0
    while not initiator.is_complete:
        payload, ciphertext = messages[index]
        sender, receiver = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert sender.write_message(payload) == ciphertext, f"handshake message {index}"
        assert receiver.read_message(ciphertext) == payload, f"handshake message {index}"
        index += 1
    assert responder.is_complete

    expected_hash = bytes.fromhex(vector["handshake_hash"])
    assert initiator.handshake_hash == expected_hash
    assert responder.handshake_hash == expected_hash

    one_way = index == 1
    init_send, init_recv = initiator.split()
    resp_send, resp_recv = responder.split()
    transport = messages[index:]
    assert transport, "every vector continues in transport mode"
    for number, (payload, ciphertext) in enumerate(transport, start=index):
        from_initiator = one_way or number % 2 == 0
        send, recv = (init_send, resp_recv) if from_initiator else (resp_send, init_recv)
        assert send.encrypt_with_ad(b"", payload) == ciphertext, f"transport message {number}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload, f"transport message {number}"
