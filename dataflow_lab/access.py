"""Access control: ``db.grant(role, Model, ops)`` and ``User(name, roles=...)``.

A DataFlow with no grants has access control off: every run may do anything.
Once it has one grant, every node of its models needs a grant of the node's
operation, on the node's model, to one of the user's roles; a run without a
user, or with a plain-string user (a name for the audit log, with no roles),
is denied. The check covers every node of the workflow and happens before the
run opens a transaction, so a denied run writes nothing; ``build(user=...)``
runs the same check when the user is already known.

Operations are the node names in snake case (``create``, ``read``, ``update``,
``delete``, ``list``, ``count``, ``upsert``, ``bulk_create``, ``bulk_update``,
``bulk_delete``, ``bulk_upsert``, ``aggregate``) or a group: ``"read"`` (Read, List, Count, Aggregate),
``"write"`` (the eight writing nodes), ``"all"``.

Who a run acts for is in a context variable while it runs (``run_as``, ``current_user``): the
audit log's "who", and the cached reads' key.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import tenancy
from .errors import AccessDeniedError, ValidationError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow, Workflow

__all__ = [
    "OPERATIONS",
    "SQL_OPERATIONS",
    "User",
    "check_nodes",
    "check_run",
    "check_sql",
    "current_user",
    "grant",
    "prepare_run",
    "run_as",
]

T = TypeVar("T")
READS = ("read", "list", "count", "aggregate")
WRITES = ("create", "update", "delete", "upsert", "bulk_create", "bulk_update", "bulk_delete", "bulk_upsert")
OPERATIONS = (*READS, *WRITES)
GROUPS = {"read": READS, "write": WRITES, "all": OPERATIONS}
# Your own SQL (db.sql) sees past every grant, tenant and soft delete: granted only on "*", and
# never by a group ("all" included).
SQL_OPERATIONS = ("sql", "sql_write")

_USER: ContextVar[str | None] = ContextVar("dataflow_lab_user", default=None)


def current_user() -> str | None:
    """The user the running workflow acts for (``LocalRuntime(user=...)``), or None."""
    return _USER.get()


def run_as(user: str | None, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro``, to be run acting for ``user`` (None: for whoever the caller acts for)."""
    return coro if user is None else _acting(user, coro)


async def _acting(user: str, coro: Coroutine[Any, Any, T]) -> T:
    token = _USER.set(user)
    try:
        return await coro
    finally:
        _USER.reset(token)


@dataclass(frozen=True)
class User:
    """Who a run acts for: ``name`` goes to the audit log (None: unnamed), ``roles`` meet ``db.grant``."""

    name: str | None
    roles: frozenset[str] = field(default_factory=frozenset)

    def __init__(self, name: str | None = None, roles: Iterable[str] = ()):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValidationError(f"User name must be a non-empty string or None, got {name!r}.")
        roles = (roles,) if isinstance(roles, str) else tuple(roles)
        bad = [r for r in roles if not isinstance(r, str) or not r]
        if bad:
            raise ValidationError(f"User roles must be non-empty strings, got {bad[0]!r}.")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "roles", frozenset(roles))

    def __repr__(self) -> str:
        return f"User({self.name!r}, roles={sorted(self.roles)!r})"


def user_name(user: Any) -> str | None:
    """The audit log's "who" for a User, a plain name, or None."""
    return user.name if isinstance(user, User) else user


def _roles(user: Any) -> frozenset[str]:
    return user.roles if isinstance(user, User) else frozenset()


def grant(dataflow: DataFlow, role: str, model: Any, ops: str | Iterable[str]) -> None:
    """Let ``role`` run the ``ops`` nodes of ``model`` (a class, a model name, or "*" for every model)."""
    if not isinstance(role, str) or not role:
        raise ValidationError(f"grant(): role must be a non-empty string, got {role!r}.")
    name = model if isinstance(model, str) else getattr(model, "__name__", model)
    expanded = _expand(ops)
    if name != "*" and expanded & set(SQL_OPERATIONS):
        raise ValidationError(
            f"grant(): 'sql' and 'sql_write' are granted on \"*\", not on model '{name}': "
            "a statement of your own can read any table.",
            hint=f'db.grant("{role}", "*", "sql").',
        )
    if name != "*" and name not in dataflow.models:
        raise ValidationError(
            f"grant(): model '{name}' is not defined on {dataflow!r}.{did_you_mean(name, dataflow.models)}",
            hint='decorate the class with @db.model first, or pass "*" for every model.',
        )
    granted = dataflow.__dict__.setdefault("_grants", {})
    granted.setdefault(role, {}).setdefault(name, set()).update(expanded)


def _expand(ops: str | Iterable[str]) -> set[str]:
    names = [ops] if isinstance(ops, str) else list(ops)
    if not names:
        raise ValidationError("grant(): ops is empty.", hint='e.g. "read", "write", ["create", "update"].')
    out: set[str] = set()
    known = (*GROUPS, *OPERATIONS, *SQL_OPERATIONS)
    for op in names:
        if op not in known:
            raise ValidationError(
                f"grant(): unknown operation {op!r}.{did_you_mean(str(op), known)}",
                hint=f"operations: {', '.join(OPERATIONS)}; groups: read, write, all; "
                'on "*" only: sql, sql_write.',
            )
        out.update(GROUPS.get(op, (op,)))
    return out


def _allowed(dataflow: DataFlow, roles: frozenset[str], model: str, op: str) -> bool:
    granted = dataflow.__dict__.get("_grants", {})
    return any(op in granted.get(r, {}).get(m, ()) for r in roles for m in (model, "*"))


def _holders(dataflow: DataFlow, model: str, op: str) -> list[str]:
    granted = dataflow.__dict__.get("_grants", {})
    return sorted(
        r for r, by_model in granted.items() if any(op in by_model.get(m, ()) for m in (model, "*"))
    )


def check_nodes(nodes: Iterable[Any], user: Any) -> None:
    """Raise AccessDeniedError listing every node (a NodeSpec) that ``user`` may not run."""
    roles, denials = _roles(user), []
    for spec in nodes:
        cls = spec.node_class
        db, model = cls.dataflow, cls.model
        if db is None or model is None or not db.__dict__.get("_grants"):
            continue  # a Python node, or a database with access control off
        if not _allowed(db, roles, model.name, cls.operation):
            holders = _holders(db, model.name, cls.operation)
            who = f"roles {', '.join(holders)}" if holders else "no role"
            denials.append(
                f"node '{spec.node_id}' ({cls.type_name}) needs '{cls.operation}' on {model.name}; {who} may"
            )
    if denials:
        described = _describe(user)
        listing = "\n".join(f"  - {d}" for d in denials)
        raise AccessDeniedError(
            f"{described} may not run {len(denials)} node(s) of this workflow; nothing was run:\n{listing}",
            denials=denials,
            hint="run as a User whose roles hold these grants, or grant them: db.grant(role, Model, op).",
        )


def check_sql(dataflow: DataFlow, user: Any, *, write: bool) -> None:
    """On a DataFlow with access control, ``db.sql`` needs a role granted "sql" (or "sql_write") on "*"."""
    if not dataflow.__dict__.get("_grants"):
        return
    op = "sql_write" if write else "sql"
    if not _allowed(dataflow, _roles(user), "*", op):
        holders = _holders(dataflow, "*", op)
        who = f"roles {', '.join(holders)} may" if holders else "no role may"
        raise AccessDeniedError(
            f"{_describe(user)} may not run its own SQL on this DataFlow ({op}); {who}. Nothing was run.",
            denials=[f"{op} on *"],
            hint=f'SQL sees past grants and tenants: grant it on purpose, db.grant(role, "*", "{op}"), '
            "and pass user=User(..., roles=[role]).",
        )


def _describe(user: Any) -> str:
    if user is None:
        return "A run with no user"
    if isinstance(user, User):
        roles = ", ".join(sorted(user.roles)) or "none"
        return f"User '{user.name}' (roles: {roles})" if user.name else f"An unnamed user (roles: {roles})"
    return f"User '{user}' (a plain name, so no roles)"


def check_run(workflow: Workflow, user: Any, tenant: str | None) -> Mapping[Any, str]:
    """Check access and tenants for a run; return the tenants it runs within (``tenancy.captured``).

    Called in the caller's thread, where ``with db.tenant(...)`` is visible.
    """
    check_nodes(workflow.nodes.values(), user)
    tenants = tenancy.captured(tenant)
    if tenant is None:  # the caller's own tenants, which are set here already
        _before_run(workflow)
    else:
        with tenancy.activated(tenants):
            _before_run(workflow)
    return tenants


def _before_run(workflow: Workflow) -> None:
    for spec in workflow.nodes.values():
        cls = spec.node_class
        if cls.model is not None:  # a model's node: its behaviours refuse a run that cannot succeed
            cls.behaviours.before_run(cls, f"{cls.type_name} '{spec.node_id}'")


def prepare_run(workflow: Workflow, user: Any, tenant: str | None, coro: Coroutine[Any, Any, T]) -> Any:
    """Check access and tenants for a run, then wrap ``coro`` to run as ``user`` within the tenant(s).

    The run itself happens on the background loop, so the tenants are captured here (``check_run``)
    and set again around it.
    """
    try:
        tenants = check_run(workflow, user, tenant)
    except BaseException:
        coro.close()  # never started: close it, so Python does not warn it was never awaited
        raise
    return run_as(user_name(user), tenancy.run_with(tenants, coro))
