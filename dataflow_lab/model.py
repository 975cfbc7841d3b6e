"""``@db.model``: a typed class becomes a ModelSchema.

Every model gets ``id`` (an integer primary key, ``id: str`` supplied by the
caller, or ``id: UUID``, a uuid4 unless the caller gives one), ``created_at``
and ``updated_at``. A class may declare those managed columns (and the option
columns ``deleted_at``, ``version``, ``tenant_id``) with the type dataflow_lab
gives them; they stay managed. Table names are snake_case plurals unless
``__tablename__`` says otherwise.
"""

from __future__ import annotations

import datetime
import re
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .declarations import DECLARED
from .encryption import ENCRYPTABLE, marked, random_id
from .errors import ValidationError, did_you_mean
from .types import LOGICAL_TYPES, SUPPORTED, LogicalType, resolve_annotation

__all__ = ["Field", "ModelSchema", "MISSING", "check_table_name", "parse_model", "table_name_for"]

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # whole string (fullmatch): "name\n" is refused
# Names the databases or dataflow_lab keep for themselves (lower case; SQLite's names ignore case).
RESERVED_TABLE_PREFIXES = ("sqlite_", "pg_", "duckdb_", "dataflow_", "_dataflow")
RESERVED_TABLES = ("information_schema",)
TIMESTAMP_FIELDS = ("created_at", "updated_at")
MODEL_OPTIONS = ("unique", "indexes", *(d.option for d in DECLARED), "behaviours", "encrypted")
BLIND_SUFFIX = "_blind"  # a searchable encrypted field's blind index column: <field>_blind
# option -> (the column it adds, what it does), for error messages (declarations.py declares them)
FLAG_OPTIONS = {d.option: (d.column, d.purpose) for d in DECLARED}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles as this module's MISSING, so `is MISSING` holds in every process


MISSING: typing.Any = _Missing()


@dataclass(frozen=True)
class Field:
    """One field of a model: its column's name, logical type, and how a write fills it."""

    name: str
    type: LogicalType
    nullable: bool = False
    default: typing.Any = MISSING
    primary_key: bool = False
    generated: bool = False  # filled in by dataflow_lab (integer id, timestamps)
    server_default: bool = False  # the database fills it when a write omits it (reflected tables)
    default_factory: Callable[[], typing.Any] | None = None  # a fresh value per row (uuid4 for id: UUID)

    @property
    def required(self) -> bool:
        return (
            self.default is MISSING
            and self.default_factory is None
            and not self.nullable
            and not self.generated
            and not self.server_default
        )

    def describe(self) -> str:
        text = self.type.python.__name__ + (" | None" if self.nullable else "")
        if self.default is not MISSING:
            text += f" = {self.default!r}"
        elif self.default_factory is not None:
            text += f" = <{self.default_factory.__name__}()>"
        elif self.server_default:
            text += " = <database default>"
        return text


@dataclass(frozen=True)
class ModelSchema:
    """A model as dataflow_lab knows it: its table, fields, keys, indexes and options (``parse_model``)."""

    name: str
    table_name: str
    fields: tuple[Field, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    options: frozenset[str] = frozenset()  # the flag options it turns on (declarations.py)
    behaviours: tuple[typing.Any, ...] = field(default=(), compare=False, repr=False)  # the model's own
    # What its options and behaviours declare of the table (declarations.py), composed by parse_model:
    counters: tuple[str, ...] = field(default=(), repr=False)  # columns an upsert counts up
    key_scope: tuple[str, ...] = field(default=(), repr=False)  # columns leading every key and index
    # Fields encrypted at rest (encryption.py), and those of them with a blind index (<field>_blind)
    encrypted: frozenset[str] = field(default=frozenset(), repr=False)
    searchable: frozenset[str] = field(default=frozenset(), repr=False)
    by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name: f for f in self.fields})

    @property
    def audit_log(self) -> bool:  # every write is logged (audit.py)
        return "audit_log" in self.options

    @property
    def soft_delete(self) -> bool:  # a deleted_at column; Delete marks rows, reads hide them
        return "soft_delete" in self.options

    @property
    def versioned(self) -> bool:  # a version column; Update takes the expected version
        return "versioned" in self.options

    @property
    def multi_tenant(self) -> bool:  # a tenant_id column; every node works within db.tenant(...)
        return "multi_tenant" in self.options

    @property
    def id_field(self) -> Field:
        return self.by_name["id"]

    @property
    def user_fields(self) -> tuple[Field, ...]:
        """Fields a caller may write (id only when it is caller-supplied)."""
        return tuple(f for f in self.fields if not f.generated)

    def field(self, name: str, *, context: str = "") -> Field:
        try:
            return self.by_name[name]
        except KeyError:
            where = f" in {context}" if context else ""
            raise ValidationError(
                f"Model '{self.name}' has no field '{name}'{where}.{did_you_mean(name, self.by_name)}",
                hint=f"fields of {self.name}: {', '.join(self.by_name)}.",
            ) from None

    def is_unique(self, names: typing.Iterable[str]) -> bool:
        """Whether ``names`` are the primary key or a unique group (within its key scope: a tenant)."""
        key = tuple(sorted(n for n in names if n not in self.key_scope))
        return key == ("id",) or any(tuple(sorted(u)) == key for u in self.unique)

    def signature(self) -> tuple:
        """What the table's shape depends on; equal signatures need no migration (asked every run: kept)."""
        kept = self.__dict__.get("_signature")
        if kept is None:
            kept = (
                self.table_name,
                tuple((f.name, f.type.name, f.type.digits, f.nullable, f.primary_key) for f in self.fields),
                self.unique,
                self.indexes,
            )
            self.__dict__["_signature"] = kept  # frozen: its fields never change
        return kept


_IRREGULAR = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "datum": "data",
    "medium": "media",
    "criterion": "criteria",
    "index": "indices",
}
_UNCOUNTABLE = {"data", "information", "equipment", "news", "series", "species", "metadata", "feedback"}


def _pluralize(word: str) -> str:
    if word in _UNCOUNTABLE:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    return word + "s"


def table_name_for(class_name: str) -> str:
    """User -> users, Person -> people, OrderStatus -> order_statuses."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+", class_name)
    words = [w.lower() for w in words] or [class_name.lower()]
    words[-1] = _pluralize(words[-1])
    return "_".join(words)


def check_identifier(name: str, what: str) -> str:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ValidationError(
            f"{what} '{name}' is not a valid identifier.",
            hint="use letters, digits and underscores, start with a letter or underscore, at most 63 characters.",
        )
    return name


def check_table_name(table: str, model: str) -> str:
    """A valid identifier that no database nor dataflow_lab reserves (sqlite_master, pg_class...)."""
    check_identifier(table, f"Table name of model '{model}'")
    lowered = table.lower()
    if lowered in RESERVED_TABLES or lowered.startswith(RESERVED_TABLE_PREFIXES):
        raise ValidationError(
            f"Model '{model}': table name '{table}' is reserved (names starting with "
            f"{', '.join(RESERVED_TABLE_PREFIXES)} and {', '.join(RESERVED_TABLES)} belong to the "
            "databases' catalogues or to dataflow_lab's own tables).",
            hint=f"give the model another __tablename__, such as 'app_{lowered.lstrip('_')}'.",
        )
    return table


def parse_model(
    cls: type,
    *,
    internal: bool = False,
    defaults: typing.Mapping[str, bool] | None = None,
    encryption_at_rest: bool = False,
) -> ModelSchema:
    """Read a class's annotations, defaults and options into a ModelSchema.

    ``internal``: one of dataflow_lab's own tables (the audit log), whose names are reserved.
    ``defaults``: on/off options a model has unless its ``__dataflow__`` says otherwise
    (``DataFlow(audit_logging=True)``, ``DataFlow(multi_tenant=True)``).
    ``encryption_at_rest``: every text, JSON and bytes field is encrypted (``DataFlow(encryption_at_rest=True)``).
    """
    name = cls.__name__
    check_identifier(name, "Model name")
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # a NameError in a forward reference, usually
        raise ValidationError(
            f"Model '{name}': its type hints could not be resolved ({exc}).",
            hint="define every type a field uses before the model class.",
        ) from exc
    hints = {
        k: v
        for k, v in hints.items()
        if not k.startswith("_") and typing.get_origin(v) is not typing.ClassVar
    }
    if not hints:
        raise ValidationError(
            f"Model '{name}' declares no fields.", hint="annotate fields on the class, e.g. `name: str`."
        )
    fields = [_id_field(name, hints.pop("id", None))]
    flags = _flags(cls, name, defaults or {})
    own = _behaviours(cls, name)
    added = [f for b in own for f in b.fields]
    declared = [*(d for d in DECLARED if flags[d.option]), *own]  # what the table takes of each
    managed = [*(f for o in OPTION_FIELDS if flags[o] for f in OPTION_FIELDS[o]), *added, *STAMP_FIELDS]
    for f in managed:  # declared with the type dataflow_lab gives it: accepted, and still managed
        if f.name in hints:
            _check_managed(cls, name, f, hints.pop(f.name))
    for field_name, annotation in hints.items():
        fields.append(_user_field(cls, name, field_name, annotation))
    encrypted, searchable = _encrypted(cls, name, hints, fields, encryption_at_rest and not internal)
    if encrypted and fields[0].generated:  # its ciphertexts bind the row id: made before the INSERT
        fields[0] = Field("id", LOGICAL_TYPES[int], primary_key=True, default_factory=random_id)
    managed = [*(Field(n + BLIND_SUFFIX, LOGICAL_TYPES[str], nullable=True, generated=True)
                 for n in sorted(searchable)), *managed]  # fmt: skip
    table = getattr(cls, "__tablename__", None) or table_name_for(name)
    if internal:
        check_identifier(table, f"Table name of model '{name}'")
    else:
        check_table_name(table, name)
    fields += managed
    options = _options(cls, name, {f.name for f in fields})
    _check_not_keyed(name, encrypted - searchable, options)  # a searchable field's key: its blind index
    return ModelSchema(
        name, table, tuple(fields), **options, options=frozenset(o for o in flags if flags[o]), behaviours=own,
        counters=tuple(c for d in declared for c in getattr(d, "counters", ())),
        key_scope=tuple(dict.fromkeys(c for d in declared for c in getattr(d, "key_scope", ()))),
        encrypted=frozenset(encrypted), searchable=frozenset(searchable),
    )  # fmt: skip


def _encrypted(
    cls: type, model: str, hints: typing.Mapping[str, object], fields: list[Field], everything: bool
) -> tuple[set[str], set[str]]:
    """The fields encrypted at rest (``Encrypted[...]``, ``__dataflow__['encrypted']``, or every
    text, JSON and bytes field), and those of them that are searchable."""
    by_name = {f.name: f for f in fields[1:]}
    listed = dict(getattr(cls, "__dataflow__", None) or {}).get("encrypted", ())
    if isinstance(listed, str) or not isinstance(listed, list | tuple | set | frozenset):
        raise ValidationError(
            f"Model '{model}': __dataflow__['encrypted'] must be a list of field names, got {listed!r}.",
            hint='write __dataflow__ = {"encrypted": ["ssn", "notes"]}.',
        )
    for n in listed:
        if n not in by_name:
            raise ValidationError(
                f"Model '{model}': __dataflow__['encrypted'] names unknown field '{n}'.{did_you_mean(n, by_name)}",
                hint=f"fields: {', '.join(by_name)}.",
            )
    marks = {n: marked(a) for n, a in hints.items()}
    searchable = {n for n, m in marks.items() if m is not None and m.searchable}
    encrypted = {n for n, m in marks.items() if m is not None} | set(listed)
    if everything:
        encrypted |= {n for n, f in by_name.items() if f.type.name in ENCRYPTABLE}
    for n in sorted(encrypted):
        if by_name[n].type.name not in ENCRYPTABLE:
            raise ValidationError(
                f"Model '{model}': field '{n}' is {by_name[n].type.python.__name__}; only str, dict/list "
                "(JSON) and bytes fields can be encrypted at rest.",
                hint=f"store '{n}' as str (Encrypted[str]), or leave it unencrypted.",
            )
        if n + BLIND_SUFFIX in by_name:
            raise ValidationError(
                f"Model '{model}': field '{n + BLIND_SUFFIX}' clashes with the blind index column of '{n}'.",
                hint=f"rename '{n + BLIND_SUFFIX}'.",
            )
    return encrypted, searchable


def _check_not_keyed(model: str, encrypted: set[str], options: typing.Mapping[str, typing.Any]) -> None:
    for key in ("unique", "indexes"):
        for group in options[key]:
            hit = [c for c in group if c in encrypted]
            if hit:
                raise ValidationError(
                    f"Model '{model}': __dataflow__['{key}'] names encrypted field '{hit[0]}'; its stored "
                    "values are random ciphertexts, so a key or index on them means nothing.",
                    hint=f"remove '{hit[0]}' from {key}, or declare it Encrypted[str, 'searchable'] for "
                    "equality filters.",
                )


OPTION_FIELDS = {  # the columns each flag option adds, managed by dataflow_lab like the timestamps
    d.option: tuple(Field(c.name, LOGICAL_TYPES[c.python], generated=True, **c.options) for c in d.columns)
    for d in DECLARED
}
STAMP_FIELDS = tuple(Field(n, LOGICAL_TYPES[datetime.datetime], generated=True) for n in TIMESTAMP_FIELDS)
_MANAGED_HOW = {
    "created_at": "sets it when a row is inserted",
    "updated_at": "sets it on every write",
    **{c.name: c.how for d in DECLARED for c in d.columns},
}


def _check_managed(cls: type, model: str, managed: Field, annotation: object) -> None:
    """A class's declaration of a managed column: its type must be the one dataflow_lab gives it.

    ``Optional[...]`` and a default of None (or the managed default, version's 1) are accepted,
    since the column is filled on every write either way.
    """
    resolved = resolve_annotation(annotation)
    expected = managed.type.python.__name__
    if resolved is None or resolved[0] is not managed.type:
        shown = getattr(annotation, "__name__", None) or repr(annotation)
        raise ValidationError(
            f"Model '{model}': field '{managed.name}' is declared as {shown}, but dataflow_lab manages "
            f"'{managed.name}' as {expected}.",
            hint=f"declare `{managed.name}: {expected}`, or remove it (dataflow_lab {_how(managed.name)}).",
        )
    default = cls.__dict__.get(managed.name, MISSING)
    if default not in (MISSING, None, managed.default) or isinstance(default, bool):
        raise ValidationError(
            f"Model '{model}': field '{managed.name}' has default {default!r}, but dataflow_lab "
            f"{_how(managed.name)}.",
            hint=f"remove the default (`{managed.name}: {expected}` alone is enough).",
        )


def _how(column: str) -> str:
    return _MANAGED_HOW.get(column, "fills it (a behaviour of the model)")


def _behaviours(cls: type, model: str) -> tuple[typing.Any, ...]:
    """The model's own behaviours (``behaviours/base.py``), and the managed fields they add."""
    raw = dict(getattr(cls, "__dataflow__", None) or {}).get("behaviours", ())
    items = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
    for item in items:
        if isinstance(item, type) or not hasattr(item, "insert_values"):
            raise ValidationError(
                f"Model '{model}': __dataflow__['behaviours'] holds {item!r}, which is not a behaviour object.",
                hint="pass instances of dataflow_lab.behaviours.Behaviour subclasses, e.g. [StampSource()].",
            )
        for f in item.fields:
            if not isinstance(f, Field) or not f.generated:
                raise ValidationError(
                    f"Model '{model}': behaviour {item!r} adds {f!r}; a behaviour's fields are managed "
                    "Fields (generated=True).",
                    hint="declare them as Field(name, LOGICAL_TYPES[...], generated=True).",
                )
    return items


def _flags(cls: type, model: str, defaults: typing.Mapping[str, bool]) -> dict[str, bool]:
    """The on/off options (each adds a managed column; see OPTION_FIELDS)."""
    raw = dict(getattr(cls, "__dataflow__", None) or {})
    flags = {}
    for option, (_column, purpose) in FLAG_OPTIONS.items():
        value = raw.get(option, defaults.get(option, False))
        if not isinstance(value, bool):
            raise ValidationError(
                f"Model '{model}': __dataflow__['{option}'] must be True or False, got {value!r}.",
                hint=f"write __dataflow__ = {{'{option}': True}} to {purpose}.",
            )
        flags[option] = value
    return flags


def _id_field(model: str, annotation: object) -> Field:
    if annotation is None or annotation is int:
        return Field("id", LOGICAL_TYPES[int], primary_key=True, generated=True)
    if annotation is str:
        return Field("id", LOGICAL_TYPES[str], primary_key=True)
    if annotation is uuid.UUID:  # a uuid4 when a write omits it; the caller may give one
        return Field("id", LOGICAL_TYPES[uuid.UUID], primary_key=True, default_factory=uuid.uuid4)
    raise ValidationError(
        f"Model '{model}': field 'id' must be int (generated), str (supplied by the caller) "
        "or UUID (a uuid4 unless the caller gives one).",
        hint="remove the `id` annotation to get an integer id counting from 1, or declare `id: str` or `id: UUID`.",
    )


def _user_field(cls: type, model: str, name: str, annotation: object) -> Field:
    check_identifier(name, f"Field of model '{model}'")
    try:
        resolved = resolve_annotation(annotation)
    except ValueError as exc:
        raise ValidationError(
            f"Model '{model}': field '{name}' declares {annotation!r}: {exc}.",
            hint="write Annotated[Decimal, precision, scale], e.g. Annotated[Decimal, 38, 18].",
        ) from None
    if resolved is None:
        raise ValidationError(
            f"Model '{model}': field '{name}' has type {annotation!r}, which dataflow_lab cannot store.",
            hint=f"use one of {SUPPORTED}, optionally wrapped in Optional[...].",
        )
    logical, nullable = resolved
    default = cls.__dict__.get(name, MISSING)
    if default is not MISSING and default is not None:
        try:
            default = logical.check(default)
        except TypeError as exc:
            raise ValidationError(
                f"Model '{model}': the default of field '{name}' is {default!r}: {exc}.",
                hint="give a default of the field's own type.",
            ) from None
    elif default is None and not nullable:
        raise ValidationError(
            f"Model '{model}': field '{name}' defaults to None but is not Optional.",
            hint=f"annotate it as Optional[{getattr(annotation, '__name__', annotation)}].",
        )
    return Field(name, logical, nullable=nullable, default=default)


def _options(cls: type, model: str, field_names: set[str]) -> dict[str, typing.Any]:
    raw = dict(getattr(cls, "__dataflow__", None) or {})
    unknown = [k for k in raw if k not in MODEL_OPTIONS]
    if unknown:
        raise ValidationError(
            f"Model '{model}': unknown __dataflow__ option '{unknown[0]}'.{did_you_mean(unknown[0], MODEL_OPTIONS)}",
            hint=f"known options: {', '.join(MODEL_OPTIONS)}.",
        )
    result: dict = {}
    for key in ("unique", "indexes"):  # ("behaviours": _behaviours)
        groups = []
        for entry in raw.get(key, ()):
            group = (entry,) if isinstance(entry, str) else tuple(entry)
            for column in group:
                if column not in field_names:
                    raise ValidationError(
                        f"Model '{model}': __dataflow__['{key}'] names unknown field '{column}'."
                        + did_you_mean(column, field_names),
                        hint=f"fields: {', '.join(sorted(field_names))}.",
                    )
            groups.append(group)
        result[key] = tuple(groups)
    return result


def check_value(model: ModelSchema, f: Field, value: typing.Any, *, node: str = "") -> typing.Any:
    if value is None:
        if f.nullable:
            return None
        raise ValidationError(
            f"{_where(model, node)}field '{f.name}' may not be None.",
            hint=f"give '{f.name}' a {f.type.python.__name__}, or declare it Optional in the model.",
        )
    try:
        return f.type.check(value)
    except TypeError as exc:
        raise ValidationError(
            f"{_where(model, node)}field '{f.name}' got {type(value).__name__} {_shown(model, f, value)}: {exc}.",
            hint=f"pass a value of type {f.type.python.__name__} for '{f.name}'.",
        ) from None


def _shown(model: ModelSchema, f: Field, value: typing.Any) -> str:
    """A value in an error message; an encrypted field's never (it may be a secret given as the wrong type)."""
    return "<encrypted>" if f.name in model.encrypted else f"{value!r:.60}"


def _where(model: ModelSchema, node: str) -> str:
    return f"{model.name} ({node}): " if node else f"{model.name}: "
