"""Python annotation -> logical column type, and the checks that guard writes.

The mapping is data: ``LOGICAL_TYPES`` names each logical type with the
Python type it holds and the function that checks (and losslessly coerces) a
value. How each logical type is *stored* is a dialect fact, kept in
``dialects/``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import types as _pytypes
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext

__all__ = ["LOGICAL_TYPES", "LogicalType", "decimal_type", "resolve_annotation"]

_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError("expected str")


INT64 = (-(2**63), 2**63 - 1)


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("expected int, not bool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and _INT_TEXT.match(value):
        value = int(value)
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise TypeError("expected an int that fits in 64 bits (databases store BIGINT)")
        return value
    raise TypeError("expected int (a whole number; '42' is accepted, 3.7 and 'abc' are not)")


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError("expected float, not bool")
    if isinstance(value, int) and not -(2**53) <= value <= 2**53 and not _float_holds(value):
        raise TypeError(
            "expected a float; this int has more digits than a float holds and would be rounded "
            "(use an int or Decimal field)"
        )
    try:
        if isinstance(value, int | float | Decimal):
            number = float(value)
        elif isinstance(value, str):
            number = float(value)
        else:
            raise TypeError("expected float")
    except (ValueError, ArithmeticError):
        raise TypeError("expected float") from None
    if number != number:
        raise TypeError("expected a float that is not NaN (SQLite cannot store NaN; use None for missing)")
    return number


def _float_holds(value: int) -> bool:
    try:
        return int(float(value)) == value
    except OverflowError:
        return False


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError("expected bool (True or False)")


def _datetime(value: object) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise TypeError("expected datetime or an ISO 8601 string") from None
    if isinstance(value, dt.datetime):
        # Naive datetimes are taken as UTC; everything is stored and returned in UTC.
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        try:
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise TypeError(
                f"a datetime whose UTC time is outside years 1..9999 ({value.isoformat()} is, after its "
                f"{value.utcoffset()} offset); use a moment within the calendar"
            ) from None
    raise TypeError("expected datetime")


def _date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        raise TypeError("expected date, not datetime (use .date())")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise TypeError("expected date or an ISO 8601 date string")


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("expected Decimal, not bool")
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            pass
    if number is None:
        raise TypeError("expected Decimal")
    if not number.is_finite():
        raise TypeError("expected a finite Decimal (not NaN or Infinity)")
    return number


DECIMAL_DEFAULT = (38, 18)  # an undeclared Decimal: DuckDB's widest DECIMAL, 20 digits before the point


def _fits(number: Decimal, precision: int, scale: int) -> Decimal:
    """``number`` with exactly ``scale`` decimals; TypeError when that would round or overflow."""
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent < -scale and any(digits[exponent + scale :]):
        raise TypeError(
            f"{number} has more than {scale} digit(s) after the point, and would be rounded "
            f"(the field holds Decimal({precision}, {scale}))"
        )
    whole = len(digits) + exponent if any(digits) else 0  # digits before the point
    if whole > precision - scale:
        raise TypeError(
            f"{number} has {whole} digit(s) before the point; the field holds Decimal({precision}, {scale}), "
            f"at most {precision - scale}"
        )
    kept = (
        digits[: len(digits) + exponent + scale] if exponent < -scale else digits + (0,) * (exponent + scale)
    )
    return Decimal((sign if any(kept) else 0, kept or (0,), -scale))  # one zero: 0.00, never -0.00


def decimal_type(precision: int, scale: int, *, declared: bool = True) -> LogicalType:
    """A Decimal that holds ``precision`` digits, ``scale`` of them after the point.

    Declared (``Annotated[Decimal, 38, 18]``): values are stored with exactly ``scale``
    decimals, as NUMERIC(p, s) does. Undeclared: values keep their own scale, within
    ``DECIMAL_DEFAULT``. A value that does not fit is refused, never rounded.
    """
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (precision, scale)):
        raise ValueError("precision and scale must be whole numbers")
    if not (1 <= precision <= 1000 and 0 <= scale <= precision):
        raise ValueError(
            f"Decimal({precision}, {scale}) needs 1 <= precision <= 1000 and 0 <= scale <= precision"
        )

    def check(value: object) -> Decimal:
        number = _decimal(value)
        if declared:
            return _fits(number, precision, scale)
        try:
            _fits(number, precision, scale)
        except TypeError as exc:
            raise TypeError(
                f"{exc}; declare the field Annotated[Decimal, precision, scale] to hold it"
            ) from None
        return number

    return LogicalType("decimal", Decimal, check, (precision, scale) if declared else None)


def decimal_bound(op: str, value: object, digits: tuple[int, int]) -> tuple[str, object]:
    """A filter's (op, value) on a Decimal(p, s) column, with a bound the column cannot hold rewritten.

    Stored values all fit ``digits``, so ``= 0.1000000000000000001`` on Decimal(38, 18) is false
    and ``< 0.1000000000000000001`` is ``<= 0.1``: exact, where binding the value would round it.
    Returns ``("$true"|"$false", None)`` when the condition holds for every or no stored value.
    """
    precision, scale = digits
    if op in ("$in", "$nin"):
        assert isinstance(value, list)
        return op, [v for v in (_fitted(v, precision, scale) for v in value) if v is not _UNFIT]
    if op not in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"):
        return op, value
    assert isinstance(value, Decimal)
    fitted = _fitted(value, precision, scale)
    if fitted is not _UNFIT:
        return op, fitted
    if op in ("$eq", "$ne"):
        return ("$false" if op == "$eq" else "$true"), None
    largest = Decimal((0, (9,) * precision, -scale))
    above = op in ("$gt", "$gte")  # a lower bound
    if abs(value) > largest:
        return ("$false", None) if above == (value > 0) else ("$null", False)
    step = Decimal((0, (1,), -scale))
    with localcontext() as context:
        context.prec = precision + 2
        rounded = value.quantize(step, rounding=ROUND_CEILING if above else ROUND_FLOOR)
    return ("$gte" if above else "$lte"), rounded


_UNFIT = object()


def _fitted(value: object, precision: int, scale: int) -> object:
    if value is None:
        return None
    assert isinstance(value, Decimal)
    try:
        return _fits(value, precision, scale)
    except TypeError:
        return _UNFIT


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError("expected bytes")


def _uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise TypeError("expected UUID or a UUID string")


def _json_ready(value: object) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a JSON field can hold only JSON values ({exc})") from None


def _json_dict(value: object) -> dict:
    if isinstance(value, dict):
        _json_ready(value)
        return value
    raise TypeError("expected dict")


def _json_list(value: object) -> list:
    if isinstance(value, list | tuple):
        value = list(value)
        _json_ready(value)
        return value
    raise TypeError("expected list")


@dataclass(frozen=True)
class LogicalType:
    """A field's logical type: its name, the Python type it holds, and the check a value passes."""

    name: str
    python: type
    check: Callable[[object], object]
    digits: tuple[int, int] | None = None  # a declared Decimal's (precision, scale)


LOGICAL_TYPES: dict[type, LogicalType] = {
    str: LogicalType("text", str, _text),
    int: LogicalType("integer", int, _integer),
    float: LogicalType("float", float, _float),
    bool: LogicalType("boolean", bool, _boolean),
    dt.datetime: LogicalType("datetime", dt.datetime, _datetime),
    dt.date: LogicalType("date", dt.date, _date),
    Decimal: decimal_type(*DECIMAL_DEFAULT, declared=False),
    bytes: LogicalType("bytes", bytes, _bytes),
    uuid.UUID: LogicalType("uuid", uuid.UUID, _uuid),
    dict: LogicalType("json", dict, _json_dict),
    list: LogicalType("json", list, _json_list),
}

ANY_DECIMAL = LogicalType("decimal", Decimal, _decimal)  # what a filter compares a Decimal field with

SUPPORTED = "str, int, float, bool, datetime, date, Decimal, bytes, UUID, an Enum, dict or list"


def enum_type(enum_cls: type[enum.Enum]) -> LogicalType:
    """A logical type for one Enum class: accepts a member, its value or its name."""
    by_value = {m.value: m for m in enum_cls}
    by_text = {str(m.value): m for m in enum_cls}

    def check(value: object) -> enum.Enum:
        if isinstance(value, enum_cls):
            return value
        try:
            if value in by_value:
                return by_value[value]
        except TypeError:
            pass
        if isinstance(value, str):
            if value in by_text:
                return by_text[value]
            if value in enum_cls.__members__:
                return enum_cls[value]
        choices = ", ".join(repr(m.value) for m in enum_cls)
        raise TypeError(f"expected one of {enum_cls.__name__}'s values: {choices}")

    return LogicalType("enum", enum_cls, check)


def resolve_annotation(annotation: object) -> tuple[LogicalType, bool] | None:
    """Map an annotation to (logical type, nullable); None when unsupported.

    ``Annotated[Decimal, 38, 18]`` declares a Decimal's precision and scale (ValueError when
    they make no sense); ``Optional`` may wrap it or be wrapped by it.
    """
    annotation, digits = _annotated(annotation)
    nullable = False
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is _pytypes.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        nullable = len(args) < len(typing.get_args(annotation))
        annotation, inner = _annotated(args[0])
        digits = digits or inner
        origin = typing.get_origin(annotation)
    if annotation is Decimal and digits:
        if len(digits) != 2:
            raise ValueError(f"Annotated[Decimal, ...] takes a precision and a scale, got {digits}")
        return decimal_type(*digits), nullable
    if origin in (dict, list):
        annotation = origin
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return enum_type(annotation), nullable
    logical = LOGICAL_TYPES.get(typing.cast(type, annotation))  # a type, or a key it has not got
    return (logical, nullable) if logical else None


def _annotated(annotation: object) -> tuple[object, tuple[int, ...]]:
    """``Annotated[T, 10, 2]`` -> (T, (10, 2)); any other annotation -> (it, ())."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, ()
    inner, *extras = typing.get_args(annotation)
    return inner, tuple(x for x in extras if isinstance(x, int) and not isinstance(x, bool))
