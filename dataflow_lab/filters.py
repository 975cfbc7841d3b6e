"""Filter documents ({"age": {"$gte": 18}}) -> SQLAlchemy expressions.

``normalize`` validates a document against a model (field names, operators,
value types) and returns it with values coerced; ``to_sql`` turns a
normalized document into a WHERE expression for one ModelTable. Values always
become bound parameters. ``shaped`` splits a document into its shape (a cache
key) and its values, so a node compiles each shape of filter once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from ._record import Record
from .errors import ValidationError, did_you_mean
from .model import BLIND_SUFFIX, ModelSchema, check_value
from .types import ANY_DECIMAL, decimal_bound

__all__ = ["OPERATORS", "Shaped", "normalize", "normalize_order_by", "order_clauses", "shaped", "to_sql"]

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
OPERATORS = (*COMPARISONS, "$in", "$nin", "$like", "$ilike", "$regex", "$exists", "$null", "$not")
LOGICAL = ("$and", "$or", "$not")


MAX_DEPTH = 32  # nesting of $and/$or/$not; deeper documents would overflow the SQL parsers


def normalize(model: ModelSchema, doc: Any, *, node: str = "", depth: int = 0) -> dict[str, Any]:
    """Check a filter document; return a copy with values coerced."""
    if doc is None:
        return {}
    _check_depth(model, node, depth)
    if not isinstance(doc, Mapping):
        raise ValidationError(
            f"{_where(model, node)}filter must be a dict, got {type(doc).__name__}.",
            hint='write filters like {"age": {"$gte": 18}}.',
        )
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple):
                raise ValidationError(
                    f"{_where(model, node)}{key} takes a list of filters.",
                    hint=f'write {{"{key}": [{{...}}, {{...}}]}}.',
                )
            out[key] = [normalize(model, d, node=node, depth=depth + 1) for d in value]
        elif key == "$not":
            out[key] = normalize(model, value, node=node, depth=depth + 1)
        elif not isinstance(key, str):
            raise ValidationError(
                f"{_where(model, node)}filter keys must be field names or operators, got {key!r}.",
                hint=f"fields of {model.name}: {', '.join(model.by_name)}.",
            )
        elif key.startswith("$"):
            raise ValidationError(
                f"{_where(model, node)}unknown filter operator '{key}' at top level.{did_you_mean(key, LOGICAL)}",
                hint="top-level operators are $and, $or and $not; put field operators under a field name.",
            )
        else:
            f = model.field(key, context=f"the filter of {node}" if node else "a filter")
            out[key] = _normalize_condition(model, f, value, node, check_value, depth + 1)
            if key in model.encrypted:
                _check_encrypted(model, key, out[key], node)
    return out


def _check_encrypted(model: ModelSchema, name: str, cond: Mapping[str, Any], node: str) -> None:
    """Equality (``$eq``, ``$in``) on a searchable encrypted field, through its blind index; IS NULL
    on any encrypted field. The database holds only ciphertexts: it cannot compare or match them."""
    searchable = name in model.searchable
    for op, value in cond.items():
        if op in ("$null", "$exists") or (op == "$eq" and value is None):
            continue
        if searchable and op in ("$eq", "$in"):
            continue
        why = (
            "only equality ($eq, $in) works, through its blind index"
            if searchable
            else "declare it Encrypted[str, 'searchable'] for equality filters ($eq, $in) through a blind index"
        )
        raise ValidationError(
            f"{_where(model, node)}{op} on '{name}' is refused: '{name}' is encrypted at rest, and the "
            "database holds only its ciphertexts, which it cannot compare, match or order.",
            hint=f"{why}; filter on other fields, or filter the decrypted rows in Python.",
        )


def _check_depth(model: ModelSchema, node: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValidationError(
            f"{_where(model, node)}the filter nests deeper than {MAX_DEPTH} levels.",
            hint="flatten it: $and/$or take lists, so nesting is rarely needed.",
        )


def _normalize_condition(
    model: ModelSchema, f: Any, cond: Any, node: str, check_value: Any, depth: int = 0
) -> Any:
    _check_depth(model, node, depth)
    if not (
        isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond)
    ):
        return {"$eq": None if cond is None else check_value(model, _loose(_comparand(f)), cond, node=node)}
    out: dict[str, Any] = {}
    for op, value in cond.items():
        if op not in OPERATORS:
            raise ValidationError(
                f"{_where(model, node)}unknown operator '{op}' on field '{f.name}'.{did_you_mean(op, OPERATORS)}",
                hint=f"operators: {' '.join(OPERATORS)}.",
            )
        if op in ("$eq", "$ne"):
            out[op] = None if value is None else check_value(model, _loose(_comparand(f)), value, node=node)
        elif op in COMPARISONS:
            out[op] = (
                check_value(model, _comparand(f), value, node=node)
                if value is not None
                else _no_none(model, f, op, node)
            )
        elif op in ("$in", "$nin"):
            if not isinstance(value, list | tuple | set | frozenset):
                raise ValidationError(
                    f"{_where(model, node)}{op} on '{f.name}' takes a list.",
                    hint=f'write {{"{f.name}": {{"{op}": [a, b]}}}}.',
                )
            loose = _loose(_comparand(f))
            out[op] = [None if v is None else check_value(model, loose, v, node=node) for v in value]
        elif op in ("$like", "$ilike", "$regex"):
            if f.type.name not in ("text", "enum"):
                raise ValidationError(
                    f"{_where(model, node)}{op} works on text fields; '{f.name}' holds {f.type.python.__name__}.",
                    hint="compare numbers and dates with $gt/$lt/$in instead.",
                )
            if not isinstance(value, str):
                raise ValidationError(f"{_where(model, node)}{op} on '{f.name}' takes a string pattern.")
            if op != "$regex" and (len(value) - len(value.rstrip("\\"))) % 2 == 1:
                raise ValidationError(
                    f"{_where(model, node)}{op} pattern on '{f.name}' ends with a lone backslash, the escape "
                    "character.",
                    hint="double it (\\\\) to match a backslash, or remove it.",
                )
            if op == "$regex":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValidationError(
                        f"{_where(model, node)}$regex on '{f.name}' is not a valid regular expression: {exc}."
                    ) from None
            out[op] = value
        elif op in ("$exists", "$null"):
            if not isinstance(value, bool):
                raise ValidationError(f"{_where(model, node)}{op} on '{f.name}' takes True or False.")
            out[op] = value
        else:  # $not
            out[op] = _normalize_condition(model, f, value, node, check_value, depth + 1)
    return out


def _loose(f: Any) -> Any:
    """Equality against NULL is allowed on any field."""
    from dataclasses import replace

    return replace(f, nullable=True) if not f.nullable else f


def _comparand(f: Any) -> Any:
    """The field as a filter sees it: a Decimal field compares with any finite Decimal.

    (A bound the field cannot hold is not refused: ``types.decimal_bound`` rewrites it where needed.)
    """
    from dataclasses import replace

    return replace(f, type=ANY_DECIMAL) if f.type.name == "decimal" else f


def _no_none(model: ModelSchema, f: Any, op: str, node: str) -> NoReturn:
    raise ValidationError(
        f"{_where(model, node)}{op} on '{f.name}' cannot compare with None.",
        hint='use {"$null": true} or {"$eq": None} to find missing values.',
    )


def _where(model: ModelSchema, node: str) -> str:
    return f"{model.name} ({node}): " if node else f"{model.name}: "


# -- to SQL: a document is split into its shape and its values, then built --------------------
#
# ``_shape_of`` walks a normalized document once: every value becomes a ``Slot`` (its place in a
# list of driver values, converted by the dialect's ``to_db``), and what changes the SQL stays
# in the shape (an operator, a None that becomes IS NULL, how long an $in list is, a Decimal
# bound rewritten as always true or false). ``_build`` makes the expression from a shape, with
# the values bound in (``to_sql``) or as named placeholders (``Shaped.where``, a template
# compiled once per shape: schema.ModelTable.template).


class Slot(Record):
    """The place of one bound value in a filter's values."""

    __slots__ = ("index",)
    index: int

    def __init__(self, index: int):
        object.__setattr__(self, "index", index)


class ManySlot(Record):
    """A long $in list's values, bound as one array parameter (``has_none``: it also holds None)."""

    __slots__ = ("index", "has_none")
    index: int
    has_none: bool

    def __init__(self, index: int, has_none: bool):
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "has_none", has_none)


class _Unshaped(Exception):
    """A value whose SQL depends on more than its shape (a long $in list): compile it with its values."""


class Shaped:
    """A filter as a cache key and its values: ``where()`` is the same for every filter of that key."""

    __slots__ = ("_mt", "_shape", "key", "values")

    def __init__(self, mt: Any, shape: list, values: list[Any]):
        self._mt, self._shape = mt, shape
        self.key = _frozen(shape)  # the structure; values replaced by their slots
        self.values = {f"_f{i}": v for i, v in enumerate(values)}  # bind name -> driver value

    def where(self) -> Any:
        """The WHERE expression (or None), each value a bind parameter named as in ``values``."""
        return _build(self._mt, self._shape, _named)


def shaped(mt: Any, doc: Mapping[str, Any]) -> Shaped | None:
    """A normalized filter split into shape and values; None when a long $in list makes it one of a kind."""
    values: list[Any] = []
    shape = _shape_of(mt, doc, values)
    if any(isinstance(v, ManySlot) for v in _slots(shape)):
        return None
    return Shaped(mt, shape, values)


def to_sql(mt: Any, doc: Mapping[str, Any]) -> Any:
    """A normalized filter -> a SQLAlchemy boolean expression (or None), its values bound in."""
    values: list[Any] = []
    shape = _shape_of(mt, doc, values)

    def bound(slot: Any, type_: Any) -> Any:
        return (
            values[slot.index] if type_ is _MANY else _sa().bindparam(None, values[slot.index], type_=type_)
        )

    return _build(mt, shape, bound)


_MANY = object()  # asks a binder for a ManySlot's list itself (what the dialect's in_array binds)


def _named(slot: Any, type_: Any) -> Any:
    if type_ is _MANY:
        raise _Unshaped  # pragma: no cover - shaped() never builds such a shape
    return _sa().bindparam(f"_f{slot.index}", type_=type_)


def _sa() -> Any:
    import sqlalchemy as sa

    return sa


def _frozen(shape: Any) -> Any:
    if isinstance(shape, list):
        return (list, *map(_frozen, shape))
    if isinstance(shape, tuple):
        return tuple(map(_frozen, shape))
    return shape


def _slots(shape: Any) -> Iterator[Any]:
    if isinstance(shape, list | tuple):
        for item in shape:
            yield from _slots(item)
    elif isinstance(shape, Slot | ManySlot):
        yield shape


def _shape_of(mt: Any, doc: Mapping[str, Any], values: list[Any]) -> list:
    """A document as [(key, shape)...]: '$and'/'$or' with a list of shapes, '$not' with one, a field
    with its condition's [(op, slot or what stays)...]."""
    out: list = []
    for key, value in doc.items():
        if key in ("$and", "$or"):
            out.append((key, [_shape_of(mt, d, values) for d in value]))
        elif key == "$not":
            out.append((key, _shape_of(mt, value, values)))
        else:
            out.append((key, _condition_shape(mt, key, value, values)))
    return out


def _condition_shape(mt: Any, name: str, cond: Mapping[str, Any], values: list[Any]) -> list:
    if name in mt.model.encrypted:
        return _blind_shape(mt, name, cond, values)
    field = mt.model.by_name[name]

    def slot(v: Any) -> Slot:
        if not mt.dialect.text_allows_nul and _has_nul(v):
            raise ValidationError(
                f"{mt.model.name}: a filter value for '{name}' contains a NUL character, which "
                f"{mt.dialect.name} text cannot hold.",
                hint="remove the NUL (\\x00) from the value; no stored text can contain it.",
            )
        values.append(mt.to_db(name, v))
        return Slot(len(values) - 1)

    bounds = mt.dialect.decimal_bounds(field.type.digits) if field.type.name == "decimal" else None
    unwrapped = mt.dialect.comparable(mt.table.c[name], field.type.name) is mt.table.c[name]
    parts: list = []
    for op, value in cond.items():
        if bounds is not None and value is not None:
            op, value = decimal_bound(op, value, bounds)
        if op in ("$in", "$nin"):
            present = [v for v in value if v is not None]
            if len(present) > LONG_IN and unwrapped:
                values.append([mt.to_db(name, v) for v in present])
                parts.append((op, ManySlot(len(values) - 1, len(present) < len(value))))
            else:
                parts.append((op, [None if v is None else slot(v) for v in value]))
        elif op in ("$like", "$ilike", "$regex"):
            values.append(value)
            parts.append((op, Slot(len(values) - 1)))
        elif op == "$not":
            parts.append((op, _condition_shape(mt, name, value, values)))
        elif op in COMPARISONS and value is not None:
            parts.append((op, slot(value)))
        else:  # None, $exists/$null's bool, $true/$false: part of the shape
            parts.append((op, value))
    return parts


def _build(mt: Any, shape: list, bind: Any) -> Any:
    """A shape -> a SQLAlchemy boolean expression (or None); ``bind(slot, type)`` makes each value's."""
    import sqlalchemy as sa

    clauses = []
    for key, value in shape:
        if key == "$and":
            clauses.append(sa.and_(sa.true(), *[_expr(mt, d, bind) for d in value]))
        elif key == "$or":
            clauses.append(sa.or_(sa.false(), *[_expr(mt, d, bind) for d in value]))
        elif key == "$not":
            # NOT over SQL's unknown (a comparison with NULL) would drop the row; treat unknown as false
            clauses.append(sa.not_(sa.func.coalesce(_expr(mt, value, bind), sa.false())))
        else:
            clauses.append(_condition(mt, key, value, bind))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else sa.and_(*clauses)


def _expr(mt: Any, shape: list, bind: Any) -> Any:
    import sqlalchemy as sa

    return _build(mt, shape, bind) if shape else sa.true()


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is anywhere in ``value``: a string, or a JSON value's keys and strings."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _blind_shape(mt: Any, name: str, cond: Mapping[str, Any], values: list[Any]) -> list:
    """An encrypted field's condition (checked by ``_check_encrypted``) as a shape: IS NULL on its
    column, or equality on its blind index column, whose keyed hashes are bound like any value
    (a value can have one hash per key of the ring)."""
    kind = mt.model.by_name[name].type.name
    parts: list = []
    for op, value in cond.items():
        if op == "$eq" and value is None or op in ("$null", "$exists") and value is (op == "$null"):
            parts.append(("$blind_null", True))
        elif op in ("$null", "$exists"):
            parts.append(("$blind_null", False))
        else:  # $eq or $in
            given = [value] if op == "$eq" else list(value)
            slots = []
            for v in given:
                for hashed in mt.cipher.blinds(name, kind, v) if v is not None else ():
                    values.append(hashed)
                    slots.append(Slot(len(values) - 1))
            parts.append(("$blind_in", (tuple(slots), op == "$in" and None in value)))
    return parts


def _blind_condition(mt: Any, name: str, shape: list, bind: Any) -> Any:
    import sqlalchemy as sa

    col, blind = mt.table.c[name], mt.table.c.get(name + BLIND_SUFFIX)
    parts = []
    for op, value in shape:
        if op == "$blind_null":
            parts.append(col.is_(None) if value else col.is_not(None))
        else:
            slots, with_none = value
            found = blind.in_([bind(slot, blind.type) for slot in slots]) if slots else sa.false()
            parts.append(sa.or_(found, col.is_(None)) if with_none else found)
    return sa.and_(*parts) if len(parts) > 1 else parts[0]


def _condition(mt: Any, name: str, shape: list, bind: Any) -> Any:
    import sqlalchemy as sa

    if name in mt.model.encrypted:
        return _blind_condition(mt, name, shape, bind)
    field = mt.model.by_name[name]
    nullable = field.nullable
    raw_col = mt.table.c[name]
    col = mt.dialect.comparable(raw_col, field.type.name)

    def value_of(slot: Slot) -> Any:
        return mt.dialect.comparable(bind(slot, raw_col.type), field.type.name)

    parts: list[sa.ColumnElement[bool]] = []
    for op, value in shape:
        if op == "$true":
            parts.append(sa.true())
        elif op == "$false":
            parts.append(sa.false())
        elif op == "$eq":
            parts.append(col.is_(None) if value is None else col == value_of(value))
        elif op == "$ne":
            if value is None:
                parts.append(col.is_not(None))
            else:
                parts.append(
                    sa.or_(col != value_of(value), col.is_(None)) if nullable else col != value_of(value)
                )
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            compare = {"$gt": col.__gt__, "$gte": col.__ge__, "$lt": col.__lt__, "$lte": col.__le__}[op]
            parts.append(compare(value_of(value)))
        elif op == "$in":
            parts.append(_in(mt, col, value_of, bind, value))
        elif op == "$nin":
            inner = _in(mt, col, value_of, bind, value)
            has_null = value.has_none if isinstance(value, ManySlot) else any(v is None for v in value)
            parts.append(
                sa.and_(sa.not_(inner), col.is_not(None))
                if has_null
                else sa.or_(sa.not_(inner), col.is_(None))
                if nullable
                else sa.not_(inner)
            )
        elif op == "$like":  # one escape rule everywhere: \% \_ \\ match literally
            parts.append(raw_col.like(bind(value, sa.String()), escape="\\"))
        elif op == "$ilike":
            parts.append(mt.dialect.ilike(raw_col, bind(value, sa.String())))
        elif op == "$regex":
            parts.append(mt.dialect.regex(raw_col, bind(value, sa.String())))
        elif op == "$exists":
            parts.append(col.is_not(None) if value else col.is_(None))
        elif op == "$null":
            parts.append(col.is_(None) if value else col.is_not(None))
        elif op == "$not":
            parts.append(
                sa.not_(sa.func.coalesce(sa.and_(sa.true(), _condition(mt, name, value, bind)), sa.false()))
            )
    return parts[0] if len(parts) == 1 else sa.and_(*parts)


LONG_IN = 500  # longer $in lists travel as one array parameter (no bind-limit trouble)


def _in(mt: Any, col: Any, value_of: Any, bind: Any, shape: Any) -> Any:
    import sqlalchemy as sa

    if isinstance(shape, ManySlot):
        clause = mt.dialect.in_array(col, bind(shape, _MANY))
        return sa.or_(clause, col.is_(None)) if shape.has_none else clause
    present = [s for s in shape if s is not None]
    clause = col.in_([value_of(s) for s in present]) if present else sa.false()
    return sa.or_(clause, col.is_(None)) if len(present) < len(shape) else clause


_DIRECTIONS = {1: False, "asc": False, "ASC": False, -1: True, "desc": True, "DESC": True}
_NULLS = {"first": True, "last": False}
_ORDER_FORMS = "'age', '-age', {'age': -1} or {'age': {'direction': 'desc', 'nulls': 'first'}}"


def normalize_order_by(model: ModelSchema, order_by: Any, *, node: str = "") -> list[tuple[str, bool, bool]]:
    """'age', ['-age'], [{'age': -1}], {'age': {'nulls': 'first'}} -> [(field, descending, nulls_first)].

    NULLs sort last ascending and first descending (as on PostgreSQL), on every backend,
    unless ``nulls`` says otherwise.
    """
    if order_by is None:
        return []
    if isinstance(order_by, str | Mapping):
        items = [order_by]
    elif isinstance(order_by, list | tuple):
        items = list(order_by)
    else:
        raise ValidationError(
            f"{_where(model, node)}order_by must be a field name, a list or a dict, got {type(order_by).__name__}.",
            hint=f"use {_ORDER_FORMS}.",
        )
    context = f"order_by of {node}" if node else "order_by"
    out: list[tuple[str, bool, bool]] = []
    for item in items:
        if isinstance(item, str):
            desc = item.startswith("-")
            out.append((model.field(item.lstrip("-+"), context=context).name, desc, desc))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bool):
            out.append((model.field(item[0], context=context).name, item[1], item[1]))
        elif isinstance(item, Mapping):
            for name, spec in item.items():
                model.field(name, context=context)
                out.append((name, *_order_spec(model, node, name, spec)))
        else:
            raise ValidationError(
                f"{_where(model, node)}order_by item {item!r} is not understood.", hint=f"use {_ORDER_FORMS}."
            )
    for name, _desc, _nulls in out:
        if name in model.encrypted:
            raise ValidationError(
                f"{_where(model, node)}order_by '{name}' is refused: '{name}' is encrypted at rest, and the "
                "database holds only its ciphertexts, whose order means nothing.",
                hint="order by another field, or sort the decrypted rows in Python.",
            )
    return out


def _order_spec(model: ModelSchema, node: str, name: str, spec: Any) -> tuple[bool, bool]:
    """A direction (1, -1, 'asc', 'desc') or {'direction': ..., 'nulls': 'first' | 'last'}."""
    if not isinstance(spec, Mapping):
        desc = _direction(model, node, name, spec)
        return desc, desc
    unknown = [k for k in spec if k not in ("direction", "nulls")]
    if unknown:
        raise ValidationError(
            f"{_where(model, node)}order_by for '{name}' has unknown key {unknown[0]!r}."
            + did_you_mean(str(unknown[0]), ("direction", "nulls")),
            hint="use {'direction': 'asc' | 'desc', 'nulls': 'first' | 'last'}; both are optional.",
        )
    desc = _direction(model, node, name, spec.get("direction", 1))
    nulls = spec.get("nulls", "first" if desc else "last")
    if not isinstance(nulls, str) or nulls.lower() not in _NULLS:
        raise ValidationError(
            f"{_where(model, node)}order_by 'nulls' for '{name}' is {nulls!r}.",
            hint="use 'first' or 'last' (the default: last ascending, first descending).",
        )
    return desc, _NULLS[nulls.lower()]


def _direction(model: ModelSchema, node: str, name: str, direction: Any) -> bool:
    if isinstance(direction, bool) or not isinstance(direction, int | str) or direction not in _DIRECTIONS:
        raise ValidationError(
            f"{_where(model, node)}order_by direction for '{name}' is {direction!r}.",
            hint="use 1 or 'asc' for ascending, -1 or 'desc' for descending.",
        )
    return _DIRECTIONS[direction]


def order_clauses(mt: Any, order: list[tuple[str, bool, bool]]) -> list[Any]:
    """ORDER BY clauses: NULLs placed explicitly (the databases' defaults differ), then id ascending."""
    clauses = []
    for name, desc, nulls_first in order:
        column = mt.dialect.comparable(mt.table.c[name], mt.model.by_name[name].type.name)
        clause = column.desc() if desc else column.asc()
        if mt.model.by_name[name].nullable:
            clauses.extend(mt.dialect.nulls_placed(column, clause, first=nulls_first))
        else:
            clauses.append(clause)
    if not any(entry[0] == "id" for entry in order):
        clauses.append(mt.table.c.id.asc())  # a stable, documented default: id ascending
    return clauses
