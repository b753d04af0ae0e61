"""The Noise Protocol Framework, revision 34, over X25519 (sans-IO).

CipherState, SymmetricState and HandshakeState follow section 5 of the specification;
every handshake pattern of `noise_patterns.PATTERNS` runs through one token interpreter.
Primitives come from `cryptography` (X25519, ChaCha20-Poly1305, AES-GCM) and
`hashlib`/`hmac` (SHA256, SHA512, BLAKE2s, BLAKE2b).

Errors: bad input from the peer raises `NoiseError` (a `RemoteProtocolError`); misuse by
the caller (writing out of turn, oversize payloads, missing keys) raises
`LocalProtocolError`. After a `NoiseError` the handshake is dead: start a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Final, Protocol, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from meshchain.core.transport.noise_patterns import PATTERNS, dh_roles
from meshchain.errors import LocalProtocolError, MeshchainError, RemoteProtocolError

MAX_NOISE_MESSAGE: Final = 65535
TAG_LEN: Final = 16
MAX_PAYLOAD: Final = MAX_NOISE_MESSAGE - TAG_LEN  # largest plaintext of an encrypted message
DHLEN: Final = 32
KEY_LEN: Final = 32
MAX_NONCE: Final = 2**64 - 1  # reserved (section 5.1): never used to encrypt a message
BytesLike: TypeAlias = bytes | bytearray | memoryview  # transport data may be a view (no copy)


class NoiseError(RemoteProtocolError):
    """The peer's Noise message is malformed, fails authentication or breaks the protocol."""


# Cipher functions (section 12.3, 12.4)

_Aead: TypeAlias = ChaCha20Poly1305 | AESGCM
_AEADS: Final[dict[str, type[ChaCha20Poly1305] | type[AESGCM]]] = {
    "ChaChaPoly": ChaCha20Poly1305,
    "AESGCM": AESGCM,
}
# 96-bit nonces: 32 zero bits then the 64-bit counter, little-endian (ChaChaPoly) or
# big-endian (AESGCM).
_NONCE_PACKERS: Final[dict[str, Callable[[int], bytes]]] = {
    "ChaChaPoly": struct.Struct("<4xQ").pack,
    "AESGCM": struct.Struct(">4xQ").pack,
}


class CipherState:
    """A key `k` (possibly empty) and a counter nonce `n` (section 5.1)."""

    __slots__ = ("_aead", "_aead_cls", "_n", "_pack")

    def __init__(self, cipher: str = "ChaChaPoly", key: bytes | None = None) -> None:
        try:
            self._aead_cls = _AEADS[cipher]
            self._pack = _NONCE_PACKERS[cipher]
        except KeyError:
            raise LocalProtocolError(f"unknown Noise cipher {cipher!r}") from None
        self._aead: _Aead | None = None
        self._n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        """Set k = key (None empties it) and n = 0. One AEAD object per key."""
        if key is not None and len(key) != KEY_LEN:
            raise LocalProtocolError(f"a Noise cipher key is {KEY_LEN} bytes, got {len(key)}")
        self._aead = None if key is None else self._aead_cls(key)
        self._n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The nonce the next encryption or decryption uses."""
        return self._n

    def set_nonce(self, n: int) -> None:
        if not 0 <= n <= MAX_NONCE:
            raise LocalProtocolError(f"a Noise nonce is a 64-bit unsigned integer, got {n}")
        self._n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: BytesLike) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext), or plaintext itself while k is empty."""
        aead = self._aead
        if len(plaintext) > (MAX_NOISE_MESSAGE if aead is None else MAX_PAYLOAD):
            raise LocalProtocolError(f"{len(plaintext)} bytes exceed the Noise message limit")
        if aead is None:
            return bytes(plaintext)
        n = self._n
        if n >= MAX_NONCE:
            raise LocalProtocolError("nonce space exhausted: start a new handshake")
        ciphertext = aead.encrypt(self._pack(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: BytesLike) -> bytes:
        """DECRYPT(k, n, ad, ciphertext); n advances only if authentication succeeds."""
        if len(ciphertext) > MAX_NOISE_MESSAGE:
            raise NoiseError(f"Noise message of {len(ciphertext)} bytes exceeds the limit")
        aead = self._aead
        if aead is None:
            return bytes(ciphertext)
        n = self._n  # `_receive_nonce` written out: this runs once per transport frame
        if n >= MAX_NONCE:
            raise NoiseError("peer exceeded the nonce space")
        try:
            plaintext = aead.decrypt(self._pack(n), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("authentication failed") from None
        self._n = n + 1
        return plaintext

    def decrypt_into(self, ad: bytes, ciphertext: BytesLike, out: memoryview) -> None:
        """DECRYPT as `decrypt_with_ad`, the plaintext written into `out` (exactly its size).

        The transport's receive path: no plaintext object, no copy of it. Needs a key.
        """
        aead = self._aead
        if aead is None:
            raise LocalProtocolError("decrypt_into needs a CipherState with a key")
        n = self._receive_nonce(ciphertext)
        try:
            aead.decrypt_into(self._pack(n), ciphertext, ad, out)
        except InvalidTag:
            raise NoiseError("authentication failed") from None
        self._n = n + 1

    def _receive_nonce(self, ciphertext: BytesLike) -> int:
        """The nonce to decrypt `ciphertext` with, once its size is checked."""
        if len(ciphertext) > MAX_NOISE_MESSAGE:
            raise NoiseError(f"Noise message of {len(ciphertext)} bytes exceeds the limit")
        if len(ciphertext) < TAG_LEN:
            raise NoiseError(f"ciphertext of {len(ciphertext)} bytes is shorter than its tag")
        if self._n >= MAX_NONCE:
            raise NoiseError("peer exceeded the nonce space")
        return self._n

    def rekey(self) -> None:
        """k = REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, b"", zeros). n is kept."""
        aead = self._aead
        if aead is None:
            raise LocalProtocolError("cannot rekey a CipherState without a key")
        self._aead = self._aead_cls(aead.encrypt(self._pack(MAX_NONCE), bytes(32), b"")[:KEY_LEN])


# Hash functions (section 4.3, 12.5-12.8)


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


# name -> (constructor, hmac digest name, HASHLEN). BLOCKLEN (64 for SHA256 and BLAKE2s,
# 128 for SHA512 and BLAKE2b) is the block size `hmac` takes from the hash itself.
_HASHES: Final[dict[str, tuple[Callable[[bytes], _Hasher], str, int]]] = {
    "SHA256": (hashlib.sha256, "sha256", 32),
    "SHA512": (hashlib.sha512, "sha512", 64),
    "BLAKE2s": (hashlib.blake2s, "blake2s", 32),
    "BLAKE2b": (hashlib.blake2b, "blake2b", 64),
}


class SymmetricState:
    """A CipherState plus the chaining key `ck` and handshake hash `h` (section 5.2)."""

    __slots__ = ("_cipher", "_ck", "_cs", "_ctor", "_h", "_hashlen", "_hmac")

    def __init__(
        self, protocol_name: bytes, cipher: str = "ChaChaPoly", hash: str = "SHA256"
    ) -> None:
        if hash not in _HASHES:
            raise LocalProtocolError(f"unknown Noise hash {hash!r}")
        self._ctor, self._hmac, self._hashlen = _HASHES[hash]
        self._cipher = cipher
        self._cs = CipherState(cipher)
        if len(protocol_name) <= self._hashlen:
            self._h = protocol_name.ljust(self._hashlen, b"\x00")
        else:
            self._h = self._ctor(protocol_name).digest()
        self._ck = self._h

    @property
    def cipher_state(self) -> CipherState:
        return self._cs

    def _hkdf(self, ikm: bytes, outputs: int) -> list[bytes]:
        """HKDF(ck, ikm) with empty info: 2 or 3 outputs of HASHLEN bytes (section 4.3)."""
        name = self._hmac
        temp_key = hmac.digest(self._ck, ikm, name)
        out = [hmac.digest(temp_key, b"\x01", name)]
        for i in range(2, outputs + 1):
            out.append(hmac.digest(temp_key, out[-1] + bytes((i,)), name))
        return out

    def mix_key(self, input_key_material: bytes) -> None:
        self._ck, temp_k = self._hkdf(input_key_material, 2)
        self._cs.initialize_key(temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        hasher = self._ctor(self._h)
        hasher.update(data)
        self._h = hasher.digest()

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self._ck, temp_h, temp_k = self._hkdf(input_key_material, 3)
        self.mix_hash(temp_h)
        self._cs.initialize_key(temp_k[:KEY_LEN])

    def get_handshake_hash(self) -> bytes:
        return self._h

    def has_key(self) -> bool:
        return self._cs.has_key()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cs.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cs.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(c1, c2): c1 encrypts initiator-to-responder, c2 the other way."""
        temp_k1, temp_k2 = self._hkdf(b"", 2)
        cipher = self._cipher
        return CipherState(cipher, temp_k1[:KEY_LEN]), CipherState(cipher, temp_k2[:KEY_LEN])


# X25519 (section 12.1)


def _private_key(raw: bytes, what: str) -> X25519PrivateKey:
    if len(raw) != DHLEN:
        raise LocalProtocolError(f"{what} must be a {DHLEN}-byte X25519 private key")
    return X25519PrivateKey.from_private_bytes(raw)


def _public_key(raw: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise NoiseError("malformed X25519 public key") from None


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # an all-zero shared secret: the public key is a low-order point
        raise NoiseError("X25519 with a low-order public key") from None


# HandshakeState (section 5.3)


class HandshakeState:
    """One side of a Noise handshake; `split()` it once `is_complete` for transport."""

    def __init__(
        self,
        pattern: str,
        initiator: bool,
        prologue: bytes = b"",
        *,
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        cipher: str = "ChaChaPoly",
        hash: str = "SHA256",
    ) -> None:
        spec = PATTERNS.get(pattern)
        if spec is None:
            raise LocalProtocolError(f"unknown or unsupported Noise pattern {pattern!r}")
        if cipher not in _AEADS:
            raise LocalProtocolError(f"unknown Noise cipher {cipher!r}")
        self._protocol_name = f"Noise_{pattern}_25519_{cipher}_{hash}"
        self._ss = SymmetricState(self._protocol_name.encode("ascii"), cipher, hash)
        self._ss.mix_hash(prologue)
        self._initiator = initiator
        self._messages = spec.messages
        self._index = 0
        self._failed = False
        self._split_done = False

        self._s = None if s is None else _private_key(s, "s")
        self._s_pub = None if self._s is None else self._s.public_key().public_bytes_raw()
        self._e = None if e is None else _private_key(e, "e")
        self._e_pub = None if self._e is None else self._e.public_key().public_bytes_raw()
        for name, value in (("rs", rs), ("re", re)):
            if value is not None and len(value) != DHLEN:
                raise LocalProtocolError(f"{name} must be a {DHLEN}-byte X25519 public key")
        self._rs = rs
        self._re = re
        self._rs_key = None if rs is None else X25519PublicKey.from_public_bytes(rs)
        self._re_key = None if re is None else X25519PublicKey.from_public_bytes(re)

        own_pre, peer_pre = spec.pre_messages(initiator)
        self._dh_roles = dh_roles(initiator)
        if spec.needs_local_static(initiator) and self._s is None:
            raise LocalProtocolError(f"pattern {pattern} needs a local static key (s)")
        for token, given in (("s", rs), ("e", re)):
            if (token in peer_pre) != (given is not None):
                raise LocalProtocolError(
                    f"pattern {pattern} {'needs' if token in peer_pre else 'takes no'}"
                    f" pre-known remote key r{token}"
                )
        if "e" in own_pre and self._e is None:
            raise LocalProtocolError(f"pattern {pattern} needs a pre-shared local ephemeral (e)")
        # Pre-message public keys: the initiator's first, then the responder's.
        for local, tokens in ((initiator, spec.initiator_pre), (not initiator, spec.responder_pre)):
            for token in tokens:
                if token == "e":
                    key = self._e_pub if local else self._re
                else:
                    key = self._s_pub if local else self._rs
                assert key is not None  # checked above
                self._ss.mix_hash(key)

    @classmethod
    def from_protocol_name(
        cls,
        protocol_name: str,
        initiator: bool,
        prologue: bytes = b"",
        *,
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
    ) -> HandshakeState:
        """E.g. "Noise_XX_25519_ChaChaPoly_SHA256"; only the 25519 DH is supported."""
        parts = protocol_name.split("_")
        if len(parts) != 5 or parts[0] != "Noise" or parts[2] != "25519":
            raise LocalProtocolError(f"unsupported Noise protocol name {protocol_name!r}")
        _, pattern, _, cipher, hash_name = parts
        return cls(
            pattern, initiator, prologue, s=s, e=e, rs=rs, re=re, cipher=cipher, hash=hash_name
        )

    @property
    def protocol_name(self) -> str:
        return self._protocol_name

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def is_my_turn(self) -> bool:
        """True if the next handshake message is ours to write."""
        return not self.is_complete and (self._index % 2 == 0) == self._initiator

    @property
    def handshake_hash(self) -> bytes:
        """h: after completion, a unique identifier of this session (channel binding)."""
        return self._ss.get_handshake_hash()

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def local_static_public(self) -> bytes | None:
        return self._s_pub

    def write_message(self, payload: bytes = b"") -> bytes:
        self._check_turn(writing=True)
        tokens = self._messages[self._index]
        size = self._written_size(tokens, len(payload))
        if size > MAX_NOISE_MESSAGE:
            raise LocalProtocolError(f"a handshake message of {size} bytes exceeds the limit")
        ss = self._ss
        parts: list[bytes] = []
        try:
            for token in tokens:
                if token == "e":
                    if self._e is None:
                        self._e = X25519PrivateKey.generate()
                        self._e_pub = self._e.public_key().public_bytes_raw()
                    assert self._e_pub is not None
                    parts.append(self._e_pub)
                    ss.mix_hash(self._e_pub)
                elif token == "s":
                    assert self._s_pub is not None  # checked in __init__
                    parts.append(ss.encrypt_and_hash(self._s_pub))
                else:
                    ss.mix_key(self._dh(token))
            parts.append(ss.encrypt_and_hash(payload))
        except MeshchainError:
            self._failed = True
            raise
        self._index += 1
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        self._check_turn(writing=False)
        try:
            payload = self._read(message)
        except MeshchainError:
            self._failed = True
            raise
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) CipherStates for this side. Callable once, after completion."""
        if not self.is_complete:
            raise LocalProtocolError("the handshake is not complete")
        if self._split_done:
            raise LocalProtocolError("split() already called: its keys must not be reused")
        self._split_done = True
        self._e = None  # forget the ephemeral private key
        c1, c2 = self._ss.split()
        return (c1, c2) if self._initiator else (c2, c1)

    def _check_turn(self, writing: bool) -> None:
        if self._failed:
            raise LocalProtocolError("this handshake failed; start a new one")
        if self.is_complete:
            raise LocalProtocolError("the handshake is complete; use split() for transport")
        if self.is_my_turn != writing:
            whose = "our" if self.is_my_turn else "the peer's"
            raise LocalProtocolError(f"it is {whose} turn to write")

    def _written_size(self, tokens: tuple[str, ...], payload_len: int) -> int:
        keyed = self._ss.has_key()
        size = payload_len
        for token in tokens:
            if token == "e":
                size += DHLEN
            elif token == "s":
                size += DHLEN + (TAG_LEN if keyed else 0)
            else:
                keyed = True
        return size + (TAG_LEN if keyed else 0)

    def _read(self, message: bytes) -> bytes:
        if len(message) > MAX_NOISE_MESSAGE:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds the Noise limit")
        ss = self._ss
        pos = 0
        for token in self._messages[self._index]:
            if token == "e":
                end = pos + DHLEN
                if end > len(message):
                    raise NoiseError("truncated handshake message: missing ephemeral key")
                self._re = message[pos:end]
                self._re_key = _public_key(self._re)
                ss.mix_hash(self._re)
                pos = end
            elif token == "s":
                end = pos + DHLEN + (TAG_LEN if ss.has_key() else 0)
                if end > len(message):
                    raise NoiseError("truncated handshake message: missing static key")
                self._rs = ss.decrypt_and_hash(message[pos:end])
                self._rs_key = _public_key(self._rs)
                pos = end
            else:
                ss.mix_key(self._dh(token))
        return ss.decrypt_and_hash(message[pos:] if pos else message)

    def _dh(self, token: str) -> bytes:
        local, remote = self._dh_roles[token]
        private = self._e if local == "e" else self._s
        public = self._re_key if remote == "e" else self._rs_key
        if private is None or public is None:  # impossible for the patterns of the table
            raise LocalProtocolError(f"DH token {token!r} with a missing key")
        return _dh(private, public)
