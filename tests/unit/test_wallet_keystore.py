"""The keystore: encryption round trips, a wrong passphrase and a changed file told
apart, files that are never overwritten and readable by their owner only.

Most tests lower scrypt's cost (`FAST`) so the file stays quick; one round trip uses the
real parameters and checks they are what the file records."""

from __future__ import annotations

import copy
import json
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import (
    KeyExistsError,
    KeystoreCorruptError,
    UnknownKeyError,
    WalletError,
    WrongPassphraseError,
)
from meshchain.wallet.keystore import (
    KEYSTORE_VERSION,
    MAX_KEY_FILE_BYTES,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    Keystore,
    ScryptParams,
    check_name,
    decrypt_key,
    encrypt_key,
)

FAST = ScryptParams(n=2**4, r=8, p=1)
PASSPHRASE = "correct horse battery staple"


def _key(seed: int = 1) -> SecretKey:
    return SecretKey.generate(random.Random(seed))


def _address(key: SecretKey) -> str:
    return encode_address(address_from_public_key(key.public_key))


def test_a_key_round_trips_and_each_encryption_is_fresh() -> None:
    key = _key()
    first, second = encrypt_key(key, PASSPHRASE, FAST), encrypt_key(key, PASSPHRASE, FAST)
    assert first["version"] == KEYSTORE_VERSION
    assert first["address"] == _address(key)
    assert key.to_bytes().hex() not in json.dumps(first)
    assert first["kdf"]["salt"] != second["kdf"]["salt"]
    assert first["cipher"]["nonce"] != second["cipher"]["nonce"]
    for document in (first, second):
        assert decrypt_key(document, PASSPHRASE).to_bytes() == key.to_bytes()


def test_the_real_parameters_are_recorded_and_used(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "w")
    entry = store.add(_key(), PASSPHRASE, "real")
    kdf = json.loads(entry.path.read_text())["kdf"]
    assert (kdf["n"], kdf["r"], kdf["p"]) == (SCRYPT_N, SCRYPT_R, SCRYPT_P) == (2**15, 8, 1)
    assert store.unlock(entry, PASSPHRASE).to_bytes() == _key().to_bytes()


def test_a_passphrase_is_normalized_so_it_opens_from_any_keyboard() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # é as one code point, or e + accent
    document = encrypt_key(_key(), composed, FAST)
    assert decrypt_key(document, decomposed).to_bytes() == _key().to_bytes()


def test_a_wrong_passphrase_is_named_as_such() -> None:
    document = encrypt_key(_key(), PASSPHRASE, FAST)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        decrypt_key(document, PASSPHRASE + "!")


def test_an_empty_passphrase_is_refused() -> None:
    with pytest.raises(WalletError, match="empty"):
        encrypt_key(_key(), "", FAST)


def _changed(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def _flip(hex_text: str) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[0] ^= 1
    return raw.hex()


@pytest.mark.parametrize(
    ("path", "change"),
    [
        (("cipher", "ciphertext"), _flip),
        (("cipher", "nonce"), _flip),
        # Another valid address: the AEAD's associated data no longer matches.
        (("address",), lambda _: _address(_key(2))),
    ],
)
def test_a_changed_file_with_the_right_passphrase_is_called_corrupt(
    path: tuple[str, ...], change: Any
) -> None:
    document = encrypt_key(_key(), PASSPHRASE, FAST)
    value: Any = document
    for part in path:
        value = value[part]
    with pytest.raises(KeystoreCorruptError, match="changed"):
        decrypt_key(_changed(document, path, change(value)), PASSPHRASE)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("version",), 2, "version"),
        (("kdf", "name"), "pbkdf2", "unknown kdf"),
        (("kdf", "n"), 2**40, "limits"),  # refused before scrypt could allocate it
        (("kdf", "n"), 1000, "not valid"),  # not a power of two
        (("kdf", "r"), "8", "not integers"),
        (("kdf", "salt"), "zz", "non-hexadecimal"),
        (("cipher", "nonce"), "00" * 11, "11 bytes"),
        (("cipher", "ciphertext"), 7, "not a string"),
        (("address",), "mc1notanaddress", "checksum"),
    ],
)
def test_a_malformed_file_is_called_corrupt_before_any_decryption(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    document = _changed(encrypt_key(_key(), PASSPHRASE, FAST), path, value)
    with pytest.raises(KeystoreCorruptError, match=message):
        decrypt_key(document, PASSPHRASE)


def test_a_missing_field_or_a_non_object_is_corrupt() -> None:
    document = encrypt_key(_key(), PASSPHRASE, FAST)
    del document["check"]
    with pytest.raises(KeystoreCorruptError, match="missing field 'check'"):
        decrypt_key(document, PASSPHRASE)
    with pytest.raises(KeystoreCorruptError, match="not a JSON object"):
        decrypt_key([1, 2], PASSPHRASE)


def test_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "w", FAST)
    entry = store.add(_key(), PASSPHRASE, "alice")
    assert entry.path == tmp_path / "w" / "alice.json"
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert sorted(p.name for p in store.root.iterdir()) == ["alice.json"]  # no temporaries
    before = entry.path.read_bytes()
    with pytest.raises(KeyExistsError, match="already, as 'alice'"):
        store.add(_key(), PASSPHRASE, "bob")  # the same key under another name
    with pytest.raises(KeyExistsError, match="named 'alice'"):
        store.add(_key(2), PASSPHRASE, "alice")
    assert entry.path.read_bytes() == before


def test_default_names_entries_and_lookups(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "w", FAST)
    assert store.entries() == []  # no directory yet: no keys, no error
    first = store.add(_key(1), PASSPHRASE)
    second = store.add(_key(2), PASSPHRASE)
    named = store.add(_key(3), PASSPHRASE, "carol")
    assert (first.name, second.name) == ("key-1", "key-2")
    assert [e.name for e in store.entries()] == ["carol", "key-1", "key-2"]
    assert store.find("carol") == named
    assert store.find(second.address) == second
    assert store.find(second.address.upper()) == second  # bech32 is case-insensitive
    with pytest.raises(UnknownKeyError, match="no key 'dave'"):
        store.find("dave")
    assert store.unlock(named, PASSPHRASE).to_bytes() == _key(3).to_bytes()


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", ".hidden", "-x", "with space", "x" * 65, "mc1qxyz"]
)
def test_names_that_cannot_be_file_names_or_look_like_addresses_are_refused(name: str) -> None:
    with pytest.raises(WalletError):
        check_name(name)


def test_a_damaged_file_in_the_keystore_is_reported_with_its_path(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "w", FAST)
    entry = store.add(_key(), PASSPHRASE, "alice")
    entry.path.write_text(entry.path.read_text()[:-20])  # truncated
    with pytest.raises(KeystoreCorruptError, match=r"alice\.json: not a keystore file"):
        store.entries()
    entry.path.write_bytes(b" " * (MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeystoreCorruptError, match="over"):
        store.find("alice")


def test_a_file_changed_on_disk_does_not_unlock(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "w", FAST)
    entry = store.add(_key(), PASSPHRASE, "alice")
    document = json.loads(entry.path.read_text())
    document["cipher"]["ciphertext"] = _flip(document["cipher"]["ciphertext"])
    entry.path.write_text(json.dumps(document))
    with pytest.raises(KeystoreCorruptError, match=r"alice\.json: .*changed"):
        store.unlock(entry, PASSPHRASE)
