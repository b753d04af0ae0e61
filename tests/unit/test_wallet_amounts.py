"""Amounts in coins: exact parsing, nothing finer than a base unit, exact printing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshchain.cli.setup import COIN
from meshchain.core.wire.codec import MAX_UINT
from meshchain.errors import AmountError
from meshchain.wallet.amounts import format_amount, parse_amount

MAX_COINS = "92233720368.54775807"  # MAX_UINT base units


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1", COIN),
        ("12.5", 1_250_000_000),
        ("0.1", 10_000_000),  # exactly: no binary floating point on the way
        ("0.00000001", 1),
        ("1.000000000000", COIN),  # more digits, but no finer value
        ("007", 7 * COIN),
        (MAX_COINS, MAX_UINT),
    ],
)
def test_amounts_parse_exactly(text: str, units: int) -> None:
    assert parse_amount(text) == units


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.000000001", "finer than the base unit"),
        ("1.123456789", "finer than the base unit"),
        ("0", "more than zero"),
        ("0.00000000", "more than zero"),
        ("92233720368.54775808", "more than a transaction"),
        ("", "not a decimal number"),
        ("-1", "not a decimal number"),
        ("+1", "not a decimal number"),
        ("1e3", "not a decimal number"),
        ("1_000", "not a decimal number"),
        (" 1", "not a decimal number"),
        ("1.", "not a decimal number"),
        (".5", "not a decimal number"),
        ("NaN", "not a decimal number"),
        ("Infinity", "not a decimal number"),
        ("1" * 49, "not a decimal number"),  # bounded before any arithmetic
        ("\u0661", "not a decimal number"),  # an Arabic-Indic 1: Decimal would take it
    ],
)
def test_bad_amounts_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_amount(text)


def test_a_zero_fee_is_allowed_where_asked_and_named_in_errors() -> None:
    assert parse_amount("0", what="fee", allow_zero=True) == 0
    with pytest.raises(AmountError, match=r"^fee "):
        parse_amount("0.000000001", what="fee", allow_zero=True)


@pytest.mark.parametrize(
    ("units", "text"), [(0, "0"), (1, "0.00000001"), (COIN, "1"), (1_250_000_000, "12.5")]
)
def test_amounts_print_exactly_without_trailing_zeros(units: int, text: str) -> None:
    assert format_amount(units) == text


@given(st.integers(min_value=1, max_value=MAX_UINT))
def test_printing_then_parsing_gives_the_same_units(units: int) -> None:
    assert parse_amount(format_amount(units)) == units
