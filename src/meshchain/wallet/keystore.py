"""The wallet's keystore: one JSON file per key, the secret encrypted under a passphrase.

A file is `NAME.json` in the keystore directory (mode 0700), written atomically with
mode 0600 and never overwritten:

    {"version": 1, "address": "mc1…",
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": HEX},
     "cipher": {"name": "chacha20-poly1305", "nonce": HEX, "ciphertext": HEX},
     "check": HEX}

scrypt (RFC 7914) stretches the passphrase into 64 bytes: the first 32 are the
ChaCha20-Poly1305 key that seals the 32-byte secret, with the address as associated data
(so a file whose address was edited does not open); a hash of the last 32 is `check`.
`check` tells a wrong passphrase from a changed file — the AEAD alone cannot — and gives
an attacker nothing the ciphertext does not already: each guess still costs one scrypt
(Ethereum's keystore v3 keeps a MAC from the same derived key for the same reason).
Every primitive comes from `cryptography`; nothing here is hand-made crypto.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshchain.core.crypto.address import (
    ADDRESS_HRP,
    address_from_public_key,
    decode_address,
    encode_address,
)
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import (
    AddressError,
    CryptoError,
    KeyExistsError,
    KeystoreCorruptError,
    UnknownKeyError,
    WalletError,
    WrongPassphraseError,
)

KEYSTORE_VERSION = 1
KEY_FILE_SUFFIX = ".json"
# scrypt's cost: 2**15 x 8 x 128 bytes = 32 MiB and a few tenths of a second a try; the
# interactive figure of the scrypt paper, and what Ethereum's light keystores use.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# The most a file may ask scrypt for (memory 128 * n * r bytes, and p): a changed file
# must not make the wallet allocate gigabytes.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
MAX_SCRYPT_P = 16
SALT_SIZE = 16  # RFC 7914 and NIST SP 800-132: at least 16 random bytes
NONCE_SIZE = 12  # ChaCha20-Poly1305 (RFC 8439)
KEY_SIZE = 32  # the AEAD's key
CHECK_SIZE = 32
SECRET_SIZE = 32  # a secp256k1 secret key
TAG_SIZE = 16  # Poly1305
MAX_KEY_FILE_BYTES = 4096  # a key file is about 400 bytes
MAX_PASSPHRASE_BYTES = 1024
MAX_NAME_LENGTH = 64
# A name is a file name on every system: no separators, no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFAULT_NAME_PREFIX = "key-"

_check_hash = tagged_hasher("meshchain/keystore-check")


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost; tests may lower it, new keys in use never do."""

    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def check(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1:
            raise ValueError(f"scrypt n={self.n} r={self.r} p={self.p}: not valid")
        if 128 * self.n * self.r > MAX_SCRYPT_MEMORY or self.p > MAX_SCRYPT_P:
            raise ValueError(f"scrypt n={self.n} r={self.r} p={self.p}: over this wallet's limits")


DEFAULT_SCRYPT = ScryptParams()


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> tuple[bytes, bytes]:
    """(AEAD key, check) from the passphrase, normalized (NFKD, as BIP39) so the same
    words typed on another keyboard or system open the key."""
    secret = unicodedata.normalize("NFKD", passphrase).encode()
    if len(secret) > MAX_PASSPHRASE_BYTES:
        raise WalletError(f"the passphrase is over {MAX_PASSPHRASE_BYTES} bytes")
    kdf = Scrypt(salt=salt, length=KEY_SIZE + CHECK_SIZE, n=params.n, r=params.r, p=params.p)
    derived = kdf.derive(secret)
    return derived[:KEY_SIZE], _check_hash(derived[KEY_SIZE:])


def encrypt_key(
    key: SecretKey, passphrase: str, params: ScryptParams = DEFAULT_SCRYPT
) -> dict[str, Any]:
    """The keystore document for `key`: fresh salt and nonce every time."""
    if not passphrase:
        raise WalletError("the passphrase is empty")
    params.check()
    address = encode_address(address_from_public_key(key.public_key))
    salt, nonce = secrets.token_bytes(SALT_SIZE), secrets.token_bytes(NONCE_SIZE)
    aead_key, check = _derive(passphrase, salt, params)
    sealed = ChaCha20Poly1305(aead_key).encrypt(nonce, key.to_bytes(), address.encode())
    return {
        "version": KEYSTORE_VERSION,
        "address": address,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": salt.hex()},
        "cipher": {"name": "chacha20-poly1305", "nonce": nonce.hex(), "ciphertext": sealed.hex()},
        "check": check.hex(),
    }


@dataclass(frozen=True)
class _Sealed:
    """A keystore document, parsed and bounds-checked, not yet decrypted."""

    address: str
    params: ScryptParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    check: bytes


def _parse(document: object) -> _Sealed:
    """The document's fields, or KeystoreCorruptError saying which is wrong."""
    try:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("version") != KEYSTORE_VERSION:
            raise ValueError(f"version {document.get('version')!r}, expected {KEYSTORE_VERSION}")
        kdf, cipher = document["kdf"], document["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "chacha20-poly1305":
            raise ValueError(f"unknown kdf {kdf['name']!r} or cipher {cipher['name']!r}")
        if not all(type(kdf[k]) is int for k in ("n", "r", "p")):
            raise ValueError("scrypt parameters are not integers")
        params = ScryptParams(kdf["n"], kdf["r"], kdf["p"])
        params.check()
        address = document["address"]
        decode_address(address)
        sealed = _Sealed(
            address,
            params,
            _hex(kdf["salt"], SALT_SIZE),
            _hex(cipher["nonce"], NONCE_SIZE),
            _hex(cipher["ciphertext"], SECRET_SIZE + TAG_SIZE),
            _hex(document["check"], CHECK_SIZE),
        )
    except (KeyError, TypeError, ValueError, AddressError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise KeystoreCorruptError(f"not a keystore file: {detail}") from None
    return sealed


def _hex(text: object, size: int) -> bytes:
    if not isinstance(text, str):
        raise TypeError("a hex field is not a string")
    value = bytes.fromhex(text)
    if len(value) != size:
        raise ValueError(f"a field holds {len(value)} bytes, expected {size}")
    return value


def decrypt_key(document: object, passphrase: str) -> SecretKey:
    """The secret key in a keystore document: WrongPassphraseError, or
    KeystoreCorruptError when the passphrase is right but the file was changed."""
    sealed = _parse(document)
    aead_key, check = _derive(passphrase, sealed.salt, sealed.params)
    if not hmac.compare_digest(check, sealed.check):
        raise WrongPassphraseError(f"wrong passphrase for {sealed.address}")
    try:
        secret = ChaCha20Poly1305(aead_key).decrypt(
            sealed.nonce, sealed.ciphertext, sealed.address.encode()
        )
        key = SecretKey(secret)
    except (InvalidTag, CryptoError):
        raise KeystoreCorruptError(
            f"the key file of {sealed.address} was changed: it does not decrypt"
        ) from None
    if encode_address(address_from_public_key(key.public_key)) != sealed.address:
        raise KeystoreCorruptError(f"the key file of {sealed.address} holds another key")
    return key


@dataclass(frozen=True)
class KeyEntry:
    """A stored key as listed: no passphrase needed to see its name and address."""

    name: str
    address: str
    path: Path


def check_name(name: str) -> str:
    """`name` if it can name a key file: WalletError otherwise. A name never looks like
    an address, so "ADDRESS|NAME" arguments are never ambiguous."""
    if len(name) > MAX_NAME_LENGTH or NAME_PATTERN.fullmatch(name) is None:
        raise WalletError(
            f"key name {name[:MAX_NAME_LENGTH]!r}: use up to {MAX_NAME_LENGTH} letters, "
            "digits, '.', '_' or '-', not starting with '.', '_' or '-'"
        )
    if name.lower().startswith(ADDRESS_HRP + "1"):
        raise WalletError(f"key name {name!r} looks like an address")
    return name


class Keystore:
    """A directory of key files."""

    def __init__(self, root: Path, params: ScryptParams = DEFAULT_SCRYPT) -> None:
        self.root = root
        self.params = params

    def _load(self, path: Path) -> tuple[object, _Sealed]:
        """A key file's document, and its fields checked; errors name the file."""
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as error:
            raise WalletError(f"{path}: {error.strerror}") from None
        try:
            if len(raw) > MAX_KEY_FILE_BYTES:
                raise KeystoreCorruptError(f"not a keystore file: over {MAX_KEY_FILE_BYTES} bytes")
            try:
                document = json.loads(raw)
            except ValueError as error:
                raise KeystoreCorruptError(f"not a keystore file: {error}") from None
            return document, _parse(document)
        except KeystoreCorruptError as error:
            raise KeystoreCorruptError(f"{path}: {error}") from None

    def entries(self) -> list[KeyEntry]:
        """Every key, by name; a file that is not a keystore file is an error, not
        skipped, so a damaged key is noticed."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob(f"*{KEY_FILE_SUFFIX}")):
            sealed = self._load(path)[1]
            found.append(KeyEntry(path.name.removesuffix(KEY_FILE_SUFFIX), sealed.address, path))
        return found

    def find(self, name_or_address: str) -> KeyEntry:
        """A stored key by its name or its address."""
        wanted = name_or_address
        with contextlib.suppress(AddressError):
            wanted = encode_address(decode_address(name_or_address))  # any case, spaces
        for entry in self.entries():
            if wanted in (entry.name, entry.address):
                return entry
        raise UnknownKeyError(f"no key {name_or_address[:MAX_NAME_LENGTH]!r} in {self.root}")

    def unlock(self, entry: KeyEntry, passphrase: str) -> SecretKey:
        """The secret key of `entry`; WrongPassphraseError or KeystoreCorruptError."""
        document = self._load(entry.path)[0]
        try:
            return decrypt_key(document, passphrase)
        except KeystoreCorruptError as error:
            raise KeystoreCorruptError(f"{entry.path}: {error}") from None

    def check_new(self, key: SecretKey, name: str | None = None) -> str:
        """The name `key` would be stored under (default: the first free key-N);
        KeyExistsError when the key or the name is stored already."""
        address = encode_address(address_from_public_key(key.public_key))
        entries = self.entries()
        taken = {entry.name for entry in entries}
        for entry in entries:
            if entry.address == address:
                raise KeyExistsError(f"{address} is in the keystore already, as {entry.name!r}")
        if name is None:
            free = (f"{DEFAULT_NAME_PREFIX}{i}" for i in range(1, len(taken) + 2))
            name = next(name for name in free if name not in taken)
        if check_name(name) in taken:
            raise KeyExistsError(f"a key named {name!r} is in the keystore already")
        return name

    def add(self, key: SecretKey, passphrase: str, name: str | None = None) -> KeyEntry:
        """Encrypt `key` under `passphrase` into a new file `name`.json."""
        name = self.check_new(key, name)
        path = self.root / (name + KEY_FILE_SUFFIX)
        document = encrypt_key(key, passphrase, self.params)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(path, (json.dumps(document, indent=2) + "\n").encode())
        return KeyEntry(name, str(document["address"]), path)


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that does not exist yet, all or nothing, mode 0600: a temporary file
    beside it, synced, then linked to its name (which fails if the name is taken, where
    a rename would replace the file), then the directory synced."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise KeyExistsError(f"{path} exists; a key is never overwritten") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
