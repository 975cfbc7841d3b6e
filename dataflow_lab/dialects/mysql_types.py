"""MySQL and MariaDB column types: the storage table, the value converters, the reflected spellings.

Datetimes are DATETIME(6) (UTC wall time, returned aware); booleans TINYINT(1), returned ``bool``;
Decimals DECIMAL (an undeclared one DECIMAL(38, 18)); JSON is JSON (MariaDB: LONGTEXT with a
json_valid check); text LONGTEXT, a text id VARCHAR(255).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

import sqlalchemy as sa

from ..errors import ValidationError
from .type_names import Converter, normalize_type

UNDECLARED_SCALE = 18  # an undeclared Decimal is DECIMAL(38, 18), as on DuckDB
KEY_TEXT_LENGTH = 255  # 255 utf8mb4 characters are 1,020 bytes: three fit in one key of 3,072


def is_text(kind: sa.types.TypeEngine) -> bool:
    return isinstance(kind, sa.String) and kind.length is None  # TEXT, LONGTEXT


def _float_in(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):  # (NaN: every field's check refuses it)
        raise ValidationError(
            f"{value!r} cannot be stored: MySQL's DOUBLE holds no infinity.",
            hint="store None for a missing value, or a finite bound such as sys.float_info.max.",
        )
    return value


def _enum_text(member: Any) -> str:
    return str(member.value)


def _datetime_in(value: dt.datetime) -> dt.datetime:
    """Aware -> UTC wall time (DATETIME holds no zone); naive is taken as UTC already."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _datetime_out(value: Any) -> Any:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _json_out(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _uuid_out(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


_WIDE = Context(prec=100)  # normalize() rounds to the context's precision: 28 digits by default


def _decimal_out(value: Any) -> Decimal:
    """An exact Decimal; an undeclared column's 18 digits of scale lose their trailing zeros."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if number.as_tuple().exponent != -UNDECLARED_SCALE:
        return number
    if number == number.to_integral_value():
        return number.quantize(Decimal(1), context=_WIDE)
    return number.normalize(_WIDE)


def _bool_out(value: Any) -> bool:
    return bool(value)


def _longtext() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.mysql import LONGTEXT

    return LONGTEXT()


def _longblob() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.mysql import LONGBLOB

    return LONGBLOB()


def _datetime6() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.mysql import DATETIME

    return DATETIME(fsp=6)


class _Json(sa.types.TypeDecorator):
    """JSON whose literal (a DEFAULT) is its text: MariaDB has no CAST(... AS JSON)."""

    impl = sa.JSON
    cache_ok = True

    def literal_processor(self, dialect: Any) -> Any:
        return lambda value: "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


STORAGE: dict[str, Callable[[], sa.types.TypeEngine]] = {
    "text": _longtext,
    "integer": sa.BigInteger,
    "float": sa.Double,
    "boolean": sa.Boolean,
    "datetime": _datetime6,
    "date": sa.Date,
    "decimal": lambda: sa.Numeric(38, UNDECLARED_SCALE),
    "bytes": _longblob,
    "uuid": lambda: sa.CHAR(36),
    "enum": lambda: sa.String(KEY_TEXT_LENGTH),
    "json": _Json,
}
TO_DB: dict[str, Converter] = {
    "enum": _enum_text,
    "float": _float_in,
    "json": json.dumps,
    "uuid": str,
    "datetime": _datetime_in,
}
FROM_DB: dict[str, Converter] = {
    "boolean": _bool_out,
    "json": _json_out,
    "uuid": _uuid_out,
    "datetime": _datetime_out,
    "decimal": _decimal_out,
}  # (DOUBLE comes back a float, BIGINT an int: no converter)


def decimal_type(model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
    precision, scale = digits or (38, UNDECLARED_SCALE)
    if precision > 65 or scale > 30:
        raise ValidationError(
            f"Model '{model}': field '{field}' is Decimal({precision}, {scale}); MySQL's DECIMAL "
            "holds at most 65 digits, 30 of them after the point.",
            hint=f"declare Annotated[Decimal, {min(precision, 65)}, {min(scale, 30)}] or fewer digits.",
        )
    return sa.Numeric(precision, scale)


_INT_WIDTH = re.compile(r"^(TINYINT|SMALLINT|MEDIUMINT|INT|INTEGER|BIGINT)\(\d+\)")
# LONGTEXT is text without a length (VARCHAR, as normalize_type spells TEXT), LONGBLOB a BLOB
_MYSQL_SYNONYMS = {"BOOL": "BOOLEAN", "TINYINT(1)": "BOOLEAN", "INTEGER": "INT", "REAL": "DOUBLE",
                   "NUMERIC": "DECIMAL", "LONGTEXT": "VARCHAR", "MEDIUMTEXT": "VARCHAR",
                   "LONGBLOB": "BLOB", "MEDIUMBLOB": "BLOB"}  # fmt: skip


def mysql_type(spelling: str) -> str:
    """One spelling for a MySQL column type, declared or reflected, for schema diffs.

    TINYINT(1) and BOOLEAN are one; an integer's display width (BIGINT(20)) is dropped; UNSIGNED,
    charsets and collations are not part of the type; 'longtext' with a JSON check is JSON (the
    reader says so: MariaDB stores JSON as LONGTEXT).
    """
    compact = " ".join(str(spelling).upper().split())
    compact = re.sub(r"\s+(CHARACTER SET|COLLATE)\s+\S+", "", compact).replace(" UNSIGNED", "")
    compact = compact.replace(" ", "")
    if compact in _MYSQL_SYNONYMS:
        return _MYSQL_SYNONYMS[compact]
    compact = _INT_WIDTH.sub(r"\1", compact)
    base, paren, args = compact.partition("(")
    base = _MYSQL_SYNONYMS.get(base, base)
    if base == "DECIMAL" and not args:
        args = "10,0)"
    return normalize_type(f"{base}{paren}{args}")
