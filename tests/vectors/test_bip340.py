"""The official BIP340 Schnorr test vectors, row by row, against meshchain's key API."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshchain.core.crypto.keys import SecretKey, SignatureVerifier, verify_signature

VECTORS_PATH = Path(__file__).parent / "bip340-test-vectors.csv"
# BIP340's test-vectors.csv has rows 0..18 (rows 15-18, variable-length messages, added 2022-12).
EXPECTED_ROWS = 19
EXPECTED_HEADER = [
    "index",
    "secret key",
    "public key",
    "aux_rand",
    "message",
    "signature",
    "verification result",
    "comment",
]


@dataclass(frozen=True)
class Vector:
    index: int
    secret_key: bytes | None
    public_key: bytes
    aux_rand: bytes | None
    message: bytes
    signature: bytes
    result: bool
    comment: str


def _load() -> tuple[list[str], list[Vector]]:
    with VECTORS_PATH.open(newline="", encoding="ascii") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        vectors: list[Vector] = []
        for row in reader:
            index, sk, pk, aux, msg, sig, result, comment = row
            assert result in ("TRUE", "FALSE"), f"row {index}: bad result {result!r}"
            vectors.append(
                Vector(
                    index=int(index),
                    secret_key=bytes.fromhex(sk) if sk else None,
                    public_key=bytes.fromhex(pk),
                    aux_rand=bytes.fromhex(aux) if aux else None,
                    message=bytes.fromhex(msg),
                    signature=bytes.fromhex(sig),
                    result=result == "TRUE",
                    comment=comment,
                )
            )
    return header, vectors


HEADER, VECTORS = _load()


def test_file_is_complete() -> None:
    assert HEADER == EXPECTED_HEADER
    assert len(VECTORS) == EXPECTED_ROWS
    assert [v.index for v in VECTORS] == list(range(EXPECTED_ROWS))
    # The file covers both outcomes, signing rows and the variable-length messages.
    assert any(v.result for v in VECTORS)
    assert any(not v.result for v in VECTORS)
    assert sum(v.secret_key is not None for v in VECTORS) == 8
    assert {len(v.message) for v in VECTORS} >= {0, 1, 17, 32, 100}


SIGNING_VECTORS = [v for v in VECTORS if v.secret_key is not None]


@pytest.mark.parametrize("vector", VECTORS, ids=[f"row{v.index}" for v in VECTORS])
def test_verify(vector: Vector) -> None:
    # Must return the listed bool (never raise), through the shared and a fresh verifier.
    assert verify_signature(vector.public_key, vector.message, vector.signature) is vector.result
    verifier = SignatureVerifier()
    for _ in range(2):  # the second call goes through the parsed-key cache
        verified = verifier.verify(vector.public_key, vector.message, vector.signature)
        assert verified is vector.result


@pytest.mark.parametrize("vector", SIGNING_VECTORS, ids=[f"row{v.index}" for v in SIGNING_VECTORS])
def test_public_key(vector: Vector) -> None:
    assert vector.secret_key is not None
    key = SecretKey(vector.secret_key)
    assert key.public_key == vector.public_key
    assert key.to_bytes() == vector.secret_key


@pytest.mark.parametrize("vector", SIGNING_VECTORS, ids=[f"row{v.index}" for v in SIGNING_VECTORS])
def test_sign(vector: Vector) -> None:
    assert vector.secret_key is not None
    assert vector.aux_rand is not None
    signature = SecretKey(vector.secret_key).sign(vector.message, vector.aux_rand)
    assert signature == vector.signature
    assert verify_signature(vector.public_key, vector.message, signature)
