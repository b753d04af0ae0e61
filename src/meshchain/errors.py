"""The error tree every meshchain layer raises from.

    MeshchainError
    ├── DecodeError              bytes that are not a canonical encoding of the expected type
    ├── CryptoError              a key, signature or address that does not parse
    │   └── AddressError         a mistyped or foreign address
    ├── ValidationError          well-formed data that breaks a rule; carries a RejectCode
    ├── ConfigError              a bad genesis file, config file or command-line value
    ├── StoreError               the store is unreadable or inconsistent
    ├── ProtocolError            a session broke the protocol
    │   ├── LocalProtocolError   we were asked to do something the protocol forbids
    │   └── RemoteProtocolError  the peer did
    ├── NodeApiError             a call to a node's JSON-RPC API failed or was refused
    │   └── NodeUnreachableError no connection, or no answer in time
    └── WalletError              the wallet cannot do what was asked
        ├── WrongPassphraseError
        ├── KeystoreCorruptError a keystore file that is not what the wallet wrote
        ├── UnknownKeyError      no key of that name or address in the keystore
        ├── KeyExistsError       the name or the key is in the keystore already
        ├── AmountError          an amount that is not a whole number of base units
        └── TransferRejectedError the node refused a transfer
            └── InsufficientFundsError

Peers' bad input surfaces as one of these, never as a bare KeyError or IndexError, so
the caller can turn it into a disconnect and a score, and a user sees a clear message.
"""

from __future__ import annotations

import enum


class MeshchainError(Exception):
    """Base of every error meshchain raises on purpose."""


class DecodeError(MeshchainError):
    """Bytes that do not decode to the expected type; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CryptoError(MeshchainError):
    """A key, signature or hash input that is malformed."""


class AddressError(CryptoError):
    """An address with a bad checksum, wrong prefix or wrong length."""


class RejectCode(enum.Enum):
    """Why a transaction or block was rejected. Values are stable wire codes."""

    MALFORMED = 1
    BAD_SIGNATURE = 2
    BAD_NONCE = 3
    INSUFFICIENT_FUNDS = 4
    DUPLICATE = 5
    TOO_LARGE = 6
    WRONG_CHAIN = 7
    BAD_MERKLE_ROOT = 8
    BAD_STATE_ROOT = 9
    BAD_TIMESTAMP = 10
    BAD_HEIGHT = 11
    UNKNOWN_PARENT = 12
    BAD_CONSENSUS = 13
    FEE_TOO_LOW = 14
    MEMPOOL_FULL = 15
    BAD_VERSION = 16
    OVERFLOW = 17
    INVALID_ANCESTOR = 18
    EXPIRED = 19
    NONCE_GAP = 20
    TOO_MANY_PENDING = 21


class ValidationError(MeshchainError):
    """Data that decoded fine but breaks a consensus or policy rule."""

    def __init__(self, code: RejectCode, detail: str = "") -> None:
        message = code.name.lower() if not detail else f"{code.name.lower()}: {detail}"
        super().__init__(message)
        self.code = code
        self.detail = detail


class ConfigError(MeshchainError):
    """A genesis file, config file or CLI value that cannot be used; says which key."""


class StoreError(MeshchainError):
    """The store cannot be opened or is inconsistent."""


class ProtocolError(MeshchainError):
    """A broken protocol rule on a session."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """The peer did something the protocol does not allow."""


class NodeApiError(MeshchainError):
    """A JSON-RPC call that failed: the node's error answer (`code`), or a bad answer."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NodeUnreachableError(NodeApiError):
    """No connection to the node, or no answer from it in time."""


class WalletError(MeshchainError):
    """The wallet cannot do what was asked; the message says why, in one line."""


class WrongPassphraseError(WalletError):
    """The passphrase does not open the key."""


class KeystoreCorruptError(WalletError):
    """A keystore file that does not parse, or whose contents were changed."""


class UnknownKeyError(WalletError):
    """No key with that name or address in the keystore."""


class KeyExistsError(WalletError):
    """A key is never overwritten: its name, or the key itself, is stored already."""


class AmountError(WalletError):
    """An amount that is not a positive decimal number of whole base units."""


class TransferRejectedError(WalletError):
    """The node refused the transfer; `reason` is its reject reason (e.g. `bad_nonce`)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class InsufficientFundsError(TransferRejectedError):
    """The balance does not cover amount + fee (seen by the wallet, or by the node)."""
