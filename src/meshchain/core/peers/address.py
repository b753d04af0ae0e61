"""Network addresses of peers: parsing, routability and address groups.

An address is an IP (4 or 16 bytes) and a TCP port; it is what peers exchange in `Addr`
messages and what the address book stores. Its *group* — the /16 of an IPv4 address, the
/32 of an IPv6 one, as in Bitcoin Core's netgroup — stands for "the same operator or
network": bucketing, outbound diversity and eviction all work on groups, so an attacker
with many addresses in few networks gets few slots. The prefix lengths are parameters so
that tests on 127.0.0.0/8 and the simulator's 10.0.0.0/8 can emulate many groups.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass
from typing import Annotated

import msgspec

from meshchain.core.wire.codec import UInt16, WireStruct
from meshchain.errors import MeshchainError

IPV4_GROUP_BITS = 16  # Bitcoin Core: an IPv4 /16 is one group
IPV6_GROUP_BITS = 32  # and an IPv6 /32
IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
ADDRESS_KIND_CACHE = 1 << 16  # IPs whose kind (public, local, unusable) is remembered

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")

IpBytes = Annotated[bytes, msgspec.Meta(min_length=4, max_length=16)]


class AddressError(MeshchainError):
    """A peer address that cannot be parsed or used."""


class NetAddress(WireStruct, frozen=True):
    """An IP address and port. Hashable: the address book keys its entries by it.

    IPv4 is always 4 bytes (an IPv4-mapped IPv6 address is folded to 4 bytes when
    parsed), so the same endpoint has one form and one group.
    """

    ip: IpBytes
    port: UInt16

    @property
    def is_ipv4(self) -> bool:
        return len(self.ip) == 4

    def __str__(self) -> str:
        text = str(ipaddress.ip_address(self.ip))
        return f"{text}:{self.port}" if self.is_ipv4 else f"[{text}]:{self.port}"


def net_address(host: str, port: int) -> NetAddress:
    """The address of a literal IP and a port (no name lookup: the core does no I/O)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise AddressError(f"{host!r} is not an IP address") from None
    if not 0 <= port <= 0xFFFF:
        raise AddressError(f"port {port} is out of range")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return NetAddress(ip.packed, port)


def parse_address(text: str) -> NetAddress:
    """`"1.2.3.4:8333"` or `"[2001:db8::1]:8333"` as a `NetAddress`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise AddressError(f"{text!r} is not HOST:PORT")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise AddressError(f"{text!r}: an IPv6 host goes in brackets, [::1]:PORT")
    return net_address(host, int(port_text))


def checked_address(ip: bytes, port: int) -> NetAddress | None:
    """A `NetAddress` from wire fields that may be malformed; None if they are."""
    if len(ip) not in (4, 16) or not 0 <= port <= 0xFFFF:
        return None
    if len(ip) == 16 and ip.startswith(IPV4_MAPPED_PREFIX):
        ip = ip[12:]
    return NetAddress(ip, port)


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """How addresses are grouped and which ones a node will store and dial.

    `allow_local`: loopback and private (RFC 1918, unique-local) addresses are usable.
    On by default for devnets and the simulator; a public deployment turns it off so a
    peer cannot fill our book with addresses that lead nowhere.
    """

    ipv4_bits: int = IPV4_GROUP_BITS
    ipv6_bits: int = IPV6_GROUP_BITS
    allow_local: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.ipv4_bits <= 32 or not 1 <= self.ipv6_bits <= 128:
            raise AddressError("group prefix lengths are 1..32 (IPv4) and 1..128 (IPv6)")

    def group(self, address: NetAddress) -> bytes:
        """The network an address belongs to: a family byte and the prefix bits."""
        ip = address.ip
        bits = self.ipv4_bits if len(ip) == 4 else self.ipv6_bits
        value = int.from_bytes(ip, "big") >> (len(ip) * 8 - bits)
        return bytes([len(ip)]) + value.to_bytes((bits + 7) // 8, "big")

    def is_usable(self, address: NetAddress) -> bool:
        """Worth storing and dialling: a unicast address with a port, local only if allowed."""
        if address.port == 0:
            return False
        kind = _address_kind(address.ip)
        return kind is _Kind.PUBLIC or (kind is _Kind.LOCAL and self.allow_local)


class _Kind(enum.Enum):
    UNUSABLE = 0
    LOCAL = 1
    PUBLIC = 2


@functools.lru_cache(maxsize=ADDRESS_KIND_CACHE)
def _address_kind(packed: bytes) -> _Kind:
    """Classify an IP once: the address book asks about the same addresses again and again."""
    ip = ipaddress.ip_address(packed)
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip.is_link_local:
        return _Kind.UNUSABLE
    if ip == _BROADCAST:
        return _Kind.UNUSABLE
    if ip.is_loopback or ip.is_private:
        return _Kind.LOCAL
    return _Kind.PUBLIC
