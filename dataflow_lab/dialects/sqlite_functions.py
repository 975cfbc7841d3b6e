"""The SQL functions dataflow_lab registers on each SQLite connection (``register_functions``).

SQLite stores Decimals as text: ``dataflow_decimal_key`` maps one to bytes in numeric order (to
compare and sort exactly), and ``dataflow_decimal_sum/min/max/avg`` aggregate them exactly.
``dataflow_lower`` is Unicode lower() (SQLite's own folds only ASCII), for $ilike; ``unhex`` is
SQLite 3.41's, for older SQLite.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any


def _unhex(text: Any) -> bytes | None:
    """SQLite 3.41's unhex(), for older SQLite: hex text -> bytes (NULL for NULL or bad hex)."""
    try:
        return None if text is None else bytes.fromhex(str(text))
    except ValueError:
        return None


def decimal_key(text: Any) -> Any:
    """A decimal's text -> bytes whose byte order is the numbers' order, equal for equal numbers.

    Layout: a sign byte (negative < zero < positive), then for the magnitude the
    exponent of its first digit (8 bytes, offset so that byte order is numeric
    order) and its digits without leading or trailing zeros. A negative's magnitude
    bytes are complemented, and end in 0xFF so that a longer magnitude sorts first.
    Text that is not a finite decimal comes back unchanged (SQLite sorts text before bytes).
    Integers and reals (a reflected NUMERIC column's) get the key of the number they print as.
    """
    if isinstance(text, int | float):  # a NUMERIC column of a table made elsewhere holds numbers
        text = repr(text)
    if not isinstance(text, str):
        return text
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("+-").partition(".")
    if not (whole + fraction).isdigit() or not whole.isascii() or not fraction.isascii():
        return _exotic_key(text)  # an exponent (1E+3), spaces, or not a number
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return b"\x02"
    first = len(whole.lstrip("0")) - 1 if whole.lstrip("0") else len(digits) - len(fraction) - 1
    body = (first + 2**63).to_bytes(8, "big") + digits.rstrip("0").encode()
    if negative:
        return b"\x01" + body.translate(_COMPLEMENT) + b"\xff"
    return b"\x03" + body


_COMPLEMENT = bytes(range(255, -1, -1))  # byte b -> 255 - b


def _exotic_key(text: str) -> Any:
    try:
        number = Decimal(text)
    except ArithmeticError:
        return text
    if not number.is_finite():
        return text
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    fixed = "".join(map(str, digits))
    if exponent >= 0:
        plain = fixed + "0" * exponent
    else:
        fixed = fixed.rjust(-exponent + 1, "0")
        plain = f"{fixed[:exponent]}.{fixed[exponent:]}"
    return decimal_key(("-" if sign else "") + plain)


def decimal_out(value: Any) -> Decimal:
    # A NUMERIC column of a table made elsewhere hands back REAL: take the number it prints as.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _lower(text: Any) -> Any:
    """Unicode lower case, one character to one (the simple mapping PostgreSQL's lower() uses)."""
    if not isinstance(text, str):
        return text
    if "\u03a3" not in text and "\u0130" not in text:  # Σ and İ: str.lower() maps them by context / to two
        return text.lower()
    return "".join(ch.lower()[0] for ch in text)


class _DecimalAggregate:
    """sum / min / max / avg of Decimals stored as text, exactly (SQLite's own would read them as floats)."""

    def __init__(self) -> None:
        self.values: list[Decimal] = []

    def step(self, text: Any) -> None:
        if text is not None:
            self.values.append(decimal_out(text))


class _DecimalSum(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(sum(self.values, Decimal(0))) if self.values else None


class _DecimalMin(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(min(self.values)) if self.values else None


class _DecimalMax(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(max(self.values)) if self.values else None


class _DecimalAvg(_DecimalAggregate):
    def finalize(self) -> float | None:
        return float(sum(self.values, Decimal(0)) / len(self.values)) if self.values else None


DECIMAL_AGGREGATES = {"sum": _DecimalSum, "min": _DecimalMin, "max": _DecimalMax, "avg": _DecimalAvg}


def register_functions(dbapi_connection: Any) -> None:
    """Register the functions and aggregates above on a new sqlite3 connection (the pool's)."""
    dbapi_connection.create_function("dataflow_decimal_key", 1, decimal_key, deterministic=True)
    dbapi_connection.create_function("dataflow_lower", 1, _lower, deterministic=True)
    if sqlite3.sqlite_version_info < (3, 41):  # unhex() came in 3.41 (Dialect.unhex_sql)
        dbapi_connection.create_function("unhex", 1, _unhex, deterministic=True)
    for function, aggregate in DECIMAL_AGGREGATES.items():
        dbapi_connection.create_aggregate(f"dataflow_decimal_{function}", 1, aggregate)
