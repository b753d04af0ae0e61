"""Amounts as people write them (coins, with decimals) and as the chain counts them.

The chain counts integer base units, `COIN` to a coin. Text is parsed with `Decimal` in
a context that traps any rounding, so "0.1" is exactly 10,000,000 units, and an amount
finer than one base unit is an error rather than silently rounded away.
"""

from __future__ import annotations

import decimal
import re

from meshchain.cli.setup import COIN
from meshchain.core.wire.codec import MAX_UINT
from meshchain.errors import AmountError

COIN_DECIMALS = len(str(COIN)) - 1  # 8: COIN is a power of ten
# Plain decimal notation only: no sign, exponent, spaces, underscores, NaN or Infinity.
AMOUNT_PATTERN = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
# Longer than any amount that fits a transaction (MAX_UINT has 19 digits), with room
# for trailing zeros; bounds the Decimal work on hostile input.
MAX_AMOUNT_TEXT = 48
_EXACT = decimal.Context(
    prec=2 * MAX_AMOUNT_TEXT,
    traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation],
)

assert 10**COIN_DECIMALS == COIN


def parse_amount(text: str, *, what: str = "amount", allow_zero: bool = False) -> int:
    """Coins as text ("12.5") to base units; AmountError naming `what` otherwise."""
    if len(text) > MAX_AMOUNT_TEXT or AMOUNT_PATTERN.fullmatch(text) is None:
        raise AmountError(f"{what} {text[:MAX_AMOUNT_TEXT]!r} is not a decimal number of coins")
    scaled = _EXACT.multiply(decimal.Decimal(text), decimal.Decimal(COIN))
    if scaled != scaled.to_integral_value(context=_EXACT):
        raise AmountError(
            f"{what} {text} is finer than the base unit (at most {COIN_DECIMALS} decimals)"
        )
    units = int(scaled)
    if units == 0 and not allow_zero:
        raise AmountError(f"{what} must be more than zero")
    if units > MAX_UINT:
        raise AmountError(f"{what} {text} is more than a transaction can carry")
    return units


def format_amount(units: int) -> str:
    """Base units as coins, exactly, with no trailing zeros: 1250000000 -> "12.5"."""
    whole, fraction = divmod(units, COIN)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:0{COIN_DECIMALS}d}".rstrip("0")
