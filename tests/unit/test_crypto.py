"""Keys and signatures, bech32m addresses, tagged hashes and Merkle trees."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import pytest
from bech32m import codecs as bech32

from meshchain.core.crypto import keys as keys_module
from meshchain.core.crypto.address import (
    ADDRESS_HRP,
    ADDRESS_SIZE,
    address_from_public_key,
    decode_address,
    encode_address,
)
from meshchain.core.crypto.hashing import sha256, tagged_hash, tagged_hasher
from meshchain.core.crypto.keys import (
    SecretKey,
    SignatureVerifier,
    parse_public_key,
    verify_signature,
)
from meshchain.core.crypto.merkle import (
    EMPTY_ROOT,
    MAX_PROOF_DEPTH,
    MerkleProof,
    MerkleTree,
    leaf_hash,
    merkle_proof,
    merkle_root,
    node_hash,
    verify_proof,
)
from meshchain.errors import AddressError, CryptoError

CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
FIELD_SIZE = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def _not_on_curve_x() -> bytes:
    """The smallest x < p for which x^3 + 7 has no square root mod p (no curve point)."""
    for x in range(1, 100):
        if pow(x**3 + 7, (FIELD_SIZE - 1) // 2, FIELD_SIZE) != 1:
            return x.to_bytes(32, "big")
    raise AssertionError("unreachable: half of all x are not on the curve")


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "secret",
    [
        bytes(32),
        CURVE_ORDER.to_bytes(32, "big"),
        (CURVE_ORDER + 1).to_bytes(32, "big"),
        b"\xff" * 32,
        b"",
        b"\x01" * 31,
        b"\x01" * 33,
    ],
    ids=["zero", "n", "n+1", "2^256-1", "empty", "31-bytes", "33-bytes"],
)
def test_secret_key_rejects_out_of_range_and_wrong_length(secret: bytes) -> None:
    if len(secret) == 32:
        with pytest.raises(CryptoError, match="out of range"):
            SecretKey(secret)
    else:
        with pytest.raises(CryptoError, match="must be 32 bytes"):
            SecretKey(secret)


@pytest.mark.parametrize("value", [1, 2, CURVE_ORDER - 1])
def test_secret_key_accepts_the_whole_range(value: int) -> None:
    secret = value.to_bytes(32, "big")
    key = SecretKey(secret)
    assert key.to_bytes() == secret
    assert len(key.public_key) == 32
    assert parse_public_key(key.public_key) is not None


def test_secret_key_from_hex() -> None:
    key = SecretKey.from_hex(" " + "00" * 31 + "03 \n")
    assert key.to_bytes() == bytes(31) + b"\x03"
    # BIP340 vector 0: secret key 3.
    assert key.public_key.hex().upper() == (
        "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9"
    )
    with pytest.raises(CryptoError, match="not hex"):
        SecretKey.from_hex("zz" * 32)
    with pytest.raises(CryptoError, match="32 bytes"):
        SecretKey.from_hex("01" * 16)
    assert key.public_key.hex() in repr(key)
    assert key.to_bytes().hex() not in repr(key)


def test_generate_is_deterministic_with_a_seeded_rng() -> None:
    first = SecretKey.generate(random.Random(1))
    second = SecretKey.generate(random.Random(1))
    assert first.to_bytes() == second.to_bytes()
    assert first.public_key == second.public_key
    assert first.to_bytes() == random.Random(1).randbytes(32)  # in range, so the first draw
    assert SecretKey.generate(random.Random(2)).to_bytes() != first.to_bytes()
    # Without an rng: fresh OS randomness every time.
    assert SecretKey.generate().to_bytes() != SecretKey.generate().to_bytes()


def test_sign_verify_round_trip_and_tampering() -> None:
    rng = random.Random(7)
    key = SecretKey.generate(rng)
    other = SecretKey.generate(rng)
    for _ in range(20):
        message = rng.randbytes(32)
        aux = rng.randbytes(32)
        signature = key.sign(message, aux)
        assert len(signature) == 64
        assert key.sign(message, aux) == signature  # deterministic given aux_rand
        assert verify_signature(key.public_key, message, signature)
        assert not verify_signature(key.public_key, _flip(message, rng.randrange(32)), signature)
        assert not verify_signature(other.public_key, message, signature)
        assert not verify_signature(key.public_key, message, other.sign(message, aux))
        for index in (0, 31, 32, 63, rng.randrange(64)):
            assert not verify_signature(key.public_key, message, _flip(signature, index))
    # Default aux_rand is fresh randomness: different signatures, both valid.
    message = bytes(32)
    first, second = key.sign(message), key.sign(message)
    assert first != second
    assert verify_signature(key.public_key, message, first)
    assert verify_signature(key.public_key, message, second)


def test_verifier_caches_parsed_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_parse = keys_module.parse_public_key

    def counting_parse(public_key: bytes) -> Any:
        calls.append(public_key)
        return real_parse(public_key)

    monkeypatch.setattr(keys_module, "parse_public_key", counting_parse)
    rng = random.Random(3)
    keys = [SecretKey.generate(rng) for _ in range(3)]
    message = rng.randbytes(32)
    signatures = [key.sign(message, bytes(32)) for key in keys]
    verifier = SignatureVerifier(capacity=2)
    for _ in range(3):
        assert verifier.verify(keys[0].public_key, message, signatures[0])
    assert calls == [keys[0].public_key]  # parsed once, then served from the cache
    assert not verifier.verify(keys[0].public_key, message, signatures[1])
    assert len(calls) == 1
    # Capacity 2, LRU: a third key evicts the least recently used one, results stay right.
    assert verifier.verify(keys[1].public_key, message, signatures[1])
    assert verifier.verify(keys[2].public_key, message, signatures[2])
    assert len(calls) == 3
    assert verifier.verify(keys[0].public_key, message, signatures[0])
    assert len(calls) == 4  # keys[0] was evicted and parsed again
    assert verifier.verify(keys[2].public_key, message, signatures[2])
    assert len(calls) == 4  # keys[2] was still cached


@pytest.mark.parametrize(
    "public_key",
    [
        bytes.fromhex("ff" * 32),
        FIELD_SIZE.to_bytes(32, "big"),
        _not_on_curve_x(),
        b"",
        b"\x02" * 31,
        b"\x02" * 33,
    ],
    ids=["ff32", "p", "not-on-curve", "empty", "31-bytes", "33-bytes"],
)
def test_verifier_rejects_malformed_keys_without_raising(public_key: bytes) -> None:
    key = SecretKey.generate(random.Random(5))
    message = bytes(32)
    signature = key.sign(message, bytes(32))
    with pytest.raises(CryptoError):
        parse_public_key(public_key)
    verifier = SignatureVerifier()
    for _ in range(2):  # the second time the cached "malformed" answer is used
        assert verifier.verify(public_key, message, signature) is False
        assert verify_signature(public_key, message, signature) is False
    # The cache did not poison anything: the real key still verifies.
    assert verifier.verify(key.public_key, message, signature) is True


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_verifier_rejects_wrong_length_signatures_without_raising(length: int) -> None:
    key = SecretKey.generate(random.Random(6))
    message = bytes(32)
    signature = key.sign(message, bytes(32))
    wrong = (signature * 2)[:length]
    assert SignatureVerifier().verify(key.public_key, message, wrong) is False
    assert verify_signature(key.public_key, message, wrong) is False
    assert verify_signature(key.public_key, message, signature) is True


def test_verify_takes_messages_of_any_length_without_raising() -> None:
    # Verification (unlike coincurve's signing) is not limited to 32-byte messages;
    # valid ones of other lengths are BIP340 rows 15-18 (tests/vectors/test_bip340.py).
    key = SecretKey.generate(random.Random(8))
    signature = key.sign(bytes(32), bytes(32))
    for length in (0, 1, 31, 33, 1000):
        assert verify_signature(key.public_key, bytes(length), signature) is False


# ---------------------------------------------------------------------- addresses


def _addresses() -> list[bytes]:
    rng = random.Random(11)
    return [bytes(20), b"\xff" * 20] + [rng.randbytes(20) for _ in range(3)]


@pytest.mark.parametrize("address", _addresses(), ids=lambda a: a.hex()[:8])
def test_address_round_trip(address: bytes) -> None:
    text = encode_address(address)
    assert text.startswith(ADDRESS_HRP + "1")
    assert len(text) == len(ADDRESS_HRP) + 1 + 32 + 6  # 160 bits = 32 chars, 6 checksum
    assert set(text[3:]) <= set(BECH32_CHARSET)
    assert decode_address(text) == address
    hrp, _data, spec = bech32.bech32_decode(text)
    assert (hrp, spec) == (ADDRESS_HRP, bech32.Encoding.BECH32M)


def test_address_from_public_key() -> None:
    key = SecretKey.generate(random.Random(12))
    address = address_from_public_key(key.public_key)
    assert len(address) == ADDRESS_SIZE
    assert address == tagged_hash("meshchain/address", key.public_key)[:20]
    assert address != address_from_public_key(_flip(key.public_key, 0))
    assert decode_address(encode_address(address)) == address


@pytest.mark.parametrize("address", _addresses()[:3], ids=lambda a: a.hex()[:8])
def test_every_single_character_substitution_is_rejected(address: bytes) -> None:
    text = encode_address(address)
    tried = 0
    for position, original in enumerate(text):
        for replacement in BECH32_CHARSET + "1":
            if replacement == original:
                continue
            mutated = text[:position] + replacement + text[position + 1 :]
            with pytest.raises(AddressError) as info:
                decode_address(mutated)
            assert str(info.value)
            tried += 1
        # Mixed case is invalid bech32 too.
        if original.isalpha():
            with pytest.raises(AddressError):
                decode_address(text[:position] + original.upper() + text[position + 1 :])
    assert tried >= len(text) * (len(BECH32_CHARSET) - 1)


def _bech32m(hrp: str, payload: bytes, spec: bech32.Encoding = bech32.Encoding.BECH32M) -> str:
    text: str = bech32.bech32_encode(hrp, bytes(bech32.convertbits(payload, 8, 5, True)), spec)
    return text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_bech32m("bc", bytes(20)), "prefix 'bc'"),
        (_bech32m("mcx", bytes(20)), "prefix 'mcx'"),
        (_bech32m("mc", bytes(20), bech32.Encoding.BECH32), "bech32, not bech32m"),
        (_bech32m("mc", bytes(19)), "does not hold 20 bytes"),
        (_bech32m("mc", bytes(21)), "does not hold 20 bytes"),
        (_bech32m("mc", bytes(32)), "does not hold 20 bytes"),
        (_bech32m("mc", b""), "does not hold 20 bytes"),
        # 33 five-bit groups: 5 bits left over, more padding than 8-to-5 conversion makes.
        (
            bech32.bech32_encode("mc", bytes(33), bech32.Encoding.BECH32M),
            "bad padding",
        ),
        # 32 groups ending in a nonzero value: fine (160 bits, no padding); 34 groups
        # with nonzero padding bits are not.
        (
            bech32.bech32_encode("mc", bytes(33) + b"\x01", bech32.Encoding.BECH32M),
            "bad padding",
        ),
        ("mc1" + "q" * 88, "at most 90 characters"),
        ("", "bad checksum or characters"),
        ("mc1", "bad checksum or characters"),
        ("mc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "bad checksum or characters"),
        ("mc1bqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "bad checksum or characters"),
        ("mc\u00e91" + "q" * 38, "bad checksum or characters"),
    ],
    ids=[
        "prefix-bc",
        "prefix-mcx",
        "bech32-checksum",
        "19-bytes",
        "21-bytes",
        "32-bytes",
        "0-bytes",
        "padding-5-bits",
        "padding-nonzero",
        "too-long",
        "empty",
        "no-data",
        "bad-checksum",
        "bad-char-b",
        "non-ascii",
    ],
)
def test_bad_addresses_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        decode_address(text)


@pytest.mark.parametrize("value", [None, 123, b"mc1", ["mc1"]], ids=repr)
def test_non_string_addresses_are_rejected(value: object) -> None:
    with pytest.raises(AddressError, match="not a string"):
        decode_address(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 19, 21, 32])
def test_encode_address_rejects_wrong_length(length: int) -> None:
    with pytest.raises(AddressError, match=f"got {length}"):
        encode_address(bytes(length))


# ------------------------------------------------------------------- tagged hashes


DATA = [b"", b"\x00", b"abc", bytes(55), bytes(64), bytes(range(256)) * 4]


def _bip340_tagged_hash(tag: str, data: bytes) -> bytes:
    tag_hash = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(tag_hash + tag_hash + data).digest()


@pytest.mark.parametrize("data", DATA, ids=lambda d: f"len{len(d)}")
def test_tagged_hash_matches_the_bip340_definition(data: bytes) -> None:
    for tag in ("BIP0340/challenge", "meshchain/txid", "meshchain/merkle-leaf", ""):
        expected = _bip340_tagged_hash(tag, data)
        assert tagged_hash(tag, data) == expected
        assert tagged_hasher(tag)(data) == expected
    assert sha256(data) == hashlib.sha256(data).digest()


def test_different_tags_give_different_digests() -> None:
    tags = ["meshchain/txid", "meshchain/block", "meshchain/address", "meshchain/merkle-leaf"]
    tags += ["meshchain/merkle-node", "meshchain/txid ", "Meshchain/txid", ""]
    for data in DATA:
        digests = {tagged_hash(tag, data) for tag in tags}
        assert len(digests) == len(tags)
        assert hashlib.sha256(data).digest() not in digests


def test_tagged_hasher_is_reusable() -> None:
    hasher = tagged_hasher("meshchain/test")
    first = hasher(b"one")
    assert hasher(b"two") == tagged_hash("meshchain/test", b"two")
    assert hasher(b"one") == first  # the shared midstate was not mutated
    assert hasher(b"") == tagged_hash("meshchain/test", b"")


# ---------------------------------------------------------------------- Merkle


def _leaves(count: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(f"item {seed} {i}".encode()) for i in range(count)]


def _rfc6962_root(leaves: Sequence[bytes]) -> bytes:
    """Independent reference: RFC 6962's recursive split at the largest power of two < n."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return node_hash(_rfc6962_root(leaves[:split]), _rfc6962_root(leaves[split:]))


def _rfc9162_verify(leaf: bytes, proof: MerkleProof, root: bytes) -> bool:
    """Independent reference: RFC 9162 section 2.1.3.2 inclusion proof verification."""
    if not 0 <= proof.index < proof.leaf_count:
        return False
    fn, sn, node = proof.index, proof.leaf_count - 1, leaf
    for sibling in proof.siblings:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root


def test_empty_tree() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert len(MerkleTree()) == 0
    assert tagged_hash("meshchain/merkle-empty", b"") == EMPTY_ROOT
    assert EMPTY_ROOT not in (leaf_hash(b""), merkle_root([leaf_hash(b"")]))
    with pytest.raises(CryptoError, match="outside a tree of 0"):
        merkle_proof([], 0)


def test_duplicated_last_leaf_changes_the_root_cve_2012_2459() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    leaves = _leaves(20)
    for count in range(1, 20):
        prefix = leaves[:count]
        assert merkle_root(prefix) != merkle_root([*prefix, prefix[-1]])
    # Bitcoin's pairing of an odd last node with itself would make these equal.
    bitcoin_style = node_hash(node_hash(a, b), node_hash(c, c))
    assert merkle_root([a, b, c, c]) == bitcoin_style
    assert merkle_root([a, b, c]) != bitcoin_style


def test_inner_node_cannot_pose_as_a_leaf() -> None:
    a, b, c, d = (leaf_hash(x) for x in (b"a", b"b", b"c", b"d"))
    # An item whose bytes are an inner node's preimage hashes (as a leaf) to something else.
    assert merkle_root([a, b]) != merkle_root([leaf_hash(a + b)])
    assert merkle_root([a, b]) != merkle_root([leaf_hash(node_hash(a, b))])
    assert leaf_hash(a + b) != node_hash(a, b)
    four = merkle_root([a, b, c, d])
    assert four != merkle_root([leaf_hash(a + b), leaf_hash(c + d)])
    assert four != merkle_root([leaf_hash(node_hash(a, b)), leaf_hash(node_hash(c, d))])


def test_root_matches_the_rfc6962_reference() -> None:
    leaves = _leaves(70)
    roots = set()
    for count in range(71):
        root = merkle_root(leaves[:count])
        assert root == _rfc6962_root(leaves[:count])
        assert root == MerkleTree(leaves[:count]).root()
        roots.add(root)
    assert len(roots) == 71  # every prefix has its own root


@pytest.mark.parametrize("count", range(1, 41))
def test_proofs_for_every_leaf(count: int) -> None:
    rng = random.Random(count)
    leaves = _leaves(count, seed=count)
    root = merkle_root(leaves)
    tree = MerkleTree(leaves)
    assert tree.root() == root
    for index, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, index)
        assert proof == tree.proof(index)
        assert (proof.index, proof.leaf_count) == (index, count)
        assert verify_proof(leaf, proof, root)
        assert _rfc9162_verify(leaf, proof, root)
        siblings = proof.siblings

        # Wrong leaf or root.
        assert not verify_proof(_flip(leaf, 5), proof, root)
        assert not verify_proof(leaf, proof, _flip(root, 0))
        if count > 1:
            other = leaves[(index + 1) % count]
            assert not verify_proof(other, proof, root)

        # A flipped byte in any sibling.
        for position in range(len(siblings)):
            for byte in (0, rng.randrange(32), 31):
                bad = list(siblings)
                bad[position] = _flip(bad[position], byte, 0x80)
                assert not verify_proof(leaf, MerkleProof(index, count, tuple(bad)), root)

        # An extra or a missing sibling.
        extra = rng.randbytes(32)
        for bad_siblings in ((*siblings, extra), (extra, *siblings), (*siblings, root)):
            assert not verify_proof(leaf, MerkleProof(index, count, bad_siblings), root)
        if siblings:
            assert not verify_proof(leaf, MerkleProof(index, count, siblings[1:]), root)
            assert not verify_proof(leaf, MerkleProof(index, count, siblings[:-1]), root)
        else:
            assert count == 1
            assert root == leaf

        # A wrong index: every other position, and out-of-range ones.
        for wrong in (*range(count), count, count + 1, -1, -count):
            if wrong != index:
                assert not verify_proof(leaf, MerkleProof(wrong, count, siblings), root)

        # A wrong leaf_count. The root does not commit to the count, so a count whose
        # path has the same shape is accepted, exactly as by RFC 9162's algorithm; any
        # count that changes the path (or puts the index out of range) is rejected.
        rejected = 0
        for wrong_count in range(count + 4):
            if wrong_count == count:
                continue
            wrong_proof = MerkleProof(index, wrong_count, siblings)
            accepted = verify_proof(leaf, wrong_proof, root)
            assert accepted == _rfc9162_verify(leaf, wrong_proof, root), (count, wrong_count)
            if wrong_count <= index:
                assert not accepted
            rejected += not accepted
        assert rejected >= index + 1
    # Proofs cannot be asked for leaves that are not there.
    for index in (-1, count):
        with pytest.raises(CryptoError, match="outside"):
            merkle_proof(leaves, index)


def test_wrong_leaf_count_concrete_cases() -> None:
    leaves = _leaves(5)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 4)  # the promoted last leaf: one sibling, at the top
    assert len(proof.siblings) == 1
    assert verify_proof(leaves[4], proof, root)
    for wrong_count in (0, 4, 6, 7, 8, 9, 16):
        assert not verify_proof(leaves[4], MerkleProof(4, wrong_count, proof.siblings), root)


def test_proof_depth_and_huge_counts_are_bounded() -> None:
    leaf = leaf_hash(b"x")
    siblings = (bytes(32),) * (MAX_PROOF_DEPTH + 1)
    assert not verify_proof(leaf, MerkleProof(0, 2**65, siblings), bytes(32))
    assert not verify_proof(leaf, MerkleProof(0, 2**64, siblings[:-1]), bytes(32))
    assert not verify_proof(leaf, MerkleProof(0, 0, ()), leaf)
    assert verify_proof(leaf, MerkleProof(0, 1, ()), leaf)


def test_merkle_tree_pop_after_append_between_roots() -> None:
    # Regression: a leaf appended and popped again between two root() calls left its
    # index in the dirty set, and the incremental update indexed past the end.
    leaves = _leaves(100)
    tree = MerkleTree(leaves)
    assert tree.root() == merkle_root(leaves)
    tree.append(leaf_hash(b"new"))
    tree.append(leaf_hash(b"newer"))
    assert tree.pop() == leaf_hash(b"newer")
    assert tree.pop() == leaf_hash(b"new")
    assert tree.root() == merkle_root(leaves)
    tree.update(99, leaf_hash(b"changed"))
    assert tree.pop() == leaf_hash(b"changed")
    assert tree.root() == merkle_root(leaves[:99])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merkle_tree_agrees_with_merkle_root_under_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    tree = MerkleTree()
    model: list[bytes] = []
    checks = emptied = 0
    growing, target = True, rng.randrange(40, 300)
    for step in range(3000):
        if growing and len(model) >= target:
            growing = False
        elif not growing and not model:
            growing, target = True, rng.randrange(40, 300)
            emptied += 1
        roll = rng.random()
        if model and roll < 0.25:
            index = rng.randrange(len(model))
            leaf = leaf_hash(rng.randbytes(8))
            tree.update(index, leaf)
            model[index] = leaf
        elif model and (roll < 0.45 if growing else roll < 0.9):
            assert tree.pop() == model.pop()
        else:
            leaf = leaf_hash(rng.randbytes(8))
            assert tree.append(leaf) == len(model)
            model.append(leaf)
        assert len(tree) == len(model)
        # Check after a random number of operations, so that root() sees every mix of
        # pending appends, pops and updates (including ones that cancel out).
        if rng.random() < 0.4:
            assert tree.root() == merkle_root(model), (seed, step)
            checks += 1
            if model and rng.random() < 0.1:
                index = rng.randrange(len(model))
                assert tree.leaf(index) == model[index]
                assert verify_proof(model[index], tree.proof(index), merkle_root(model))
        if rng.random() < 0.01:
            rebuilt = MerkleTree(model)
            assert rebuilt.root() == merkle_root(model)
    while model:
        assert tree.pop() == model.pop()
    assert tree.root() == EMPTY_ROOT
    tree.append(leaf_hash(b"again"))
    assert tree.root() == leaf_hash(b"again")
    assert checks > 1000
    assert emptied >= 2  # the sequence went down to an empty tree and back up
