"""The handshake patterns of the Noise Protocol Framework, revision 34, as data.

Each pattern is its pre-messages (public keys each side knows of the other in advance)
and its message patterns. Messages alternate initiator, responder, initiator, ...; the
first is always sent by the initiator. Tokens: "e", "s" (send a public key) and "ee",
"es", "se", "ss" (a DH between the initiator's key named by the first letter and the
responder's key named by the second). PSK and fallback modifiers are not supported.
"""

from __future__ import annotations

from typing import Final, NamedTuple

TOKENS: Final = frozenset({"e", "s", "ee", "es", "se", "ss"})
DH_TOKENS: Final = frozenset({"ee", "es", "se", "ss"})


class HandshakePattern(NamedTuple):
    """Pre-message tokens of each side and the message token lists, initiator first."""

    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        return len(self.messages) == 1

    def pre_messages(self, initiator: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(own, peer) pre-message tokens for one side."""
        if initiator:
            return self.initiator_pre, self.responder_pre
        return self.responder_pre, self.initiator_pre

    def needs_local_static(self, initiator: bool) -> bool:
        """True if this side sends, pre-shares or DHs with its static key."""
        own_pre, _ = self.pre_messages(initiator)
        own = [t for m in self.messages[0 if initiator else 1 :: 2] for t in m]
        roles = dh_roles(initiator)
        dh_with_s = any(roles[t][0] == "s" for m in self.messages for t in m if t in DH_TOKENS)
        return "s" in own_pre or "s" in own or dh_with_s


def dh_roles(initiator: bool) -> dict[str, tuple[str, str]]:
    """DH token -> (local key, remote key) for one side: "es" is initiator e with responder s."""
    if initiator:
        return {"ee": ("e", "e"), "es": ("e", "s"), "se": ("s", "e"), "ss": ("s", "s")}
    return {"ee": ("e", "e"), "es": ("s", "e"), "se": ("e", "s"), "ss": ("s", "s")}


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _p(initiator_pre: str, responder_pre: str, *messages: str) -> HandshakePattern:
    return HandshakePattern(
        _tokens(initiator_pre), _tokens(responder_pre), tuple(_tokens(m) for m in messages)
    )


PATTERNS: Final[dict[str, HandshakePattern]] = {
    # 7.4 One-way patterns: pre-messages (initiator, responder), then "-> ..." messages.
    "N": _p("", "s", "e, es"),
    "K": _p("s", "s", "e, es, ss"),
    "X": _p("", "s", "e, es, s, ss"),
    # 7.5 Interactive patterns (fundamental).
    "NN": _p("", "", "e", "e, ee"),
    "NK": _p("", "s", "e, es", "e, ee"),
    "NX": _p("", "", "e", "e, ee, s, es"),
    "KN": _p("s", "", "e", "e, ee, se"),
    "KK": _p("s", "s", "e, es, ss", "e, ee, se"),
    "KX": _p("s", "", "e", "e, ee, se, s, es"),
    "XN": _p("", "", "e", "e, ee", "s, se"),
    "XK": _p("", "s", "e, es", "e, ee", "s, se"),
    "XX": _p("", "", "e", "e, ee, s, es", "s, se"),
    "IN": _p("", "", "e, s", "e, ee, se"),
    "IK": _p("", "s", "e, es, s, ss", "e, ee, se"),
    "IX": _p("", "", "e, s", "e, ee, se, s, es"),
    # 7.6 Interactive patterns (deferred).
    "NK1": _p("", "s", "e", "e, ee, es"),
    "NX1": _p("", "", "e", "e, ee, s", "es"),
    "X1N": _p("", "", "e", "e, ee", "s", "se"),
    "X1K": _p("", "s", "e, es", "e, ee", "s", "se"),
    "XK1": _p("", "s", "e", "e, ee, es", "s, se"),
    "X1K1": _p("", "s", "e", "e, ee, es", "s", "se"),
    "X1X": _p("", "", "e", "e, ee, s, es", "s", "se"),
    "XX1": _p("", "", "e", "e, ee, s", "es, s, se"),
    "X1X1": _p("", "", "e", "e, ee, s", "es, s", "se"),
    "K1N": _p("s", "", "e", "e, ee", "se"),
    "K1K": _p("s", "s", "e, es", "e, ee", "se"),
    "KK1": _p("s", "s", "e", "e, ee, se, es"),
    "K1K1": _p("s", "s", "e", "e, ee, es", "se"),
    "K1X": _p("s", "", "e", "e, ee, s, es", "se"),
    "KX1": _p("s", "", "e", "e, ee, se, s", "es"),
    "K1X1": _p("s", "", "e", "e, ee, s", "se, es"),
    "I1N": _p("", "", "e, s", "e, ee", "se"),
    "I1K": _p("", "s", "e, es, s", "e, ee", "se"),
    "IK1": _p("", "s", "e, s", "e, ee, se, es"),
    "I1K1": _p("", "s", "e, s", "e, ee, es", "se"),
    "I1X": _p("", "", "e, s", "e, ee, s, es", "se"),
    "IX1": _p("", "", "e, s", "e, ee, se, s", "es"),
    "I1X1": _p("", "", "e, s", "e, ee, s", "se, es"),
}
