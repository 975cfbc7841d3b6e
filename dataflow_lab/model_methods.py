"""Convenience methods on model classes: ``User.create(name="Ann")``, ``User.list(...)``, ``User.frame()``.

``@db.model`` puts them on the class (``install``). Each call is a one-node workflow
run by a LocalRuntime, so it has everything a workflow has: one transaction (or the
``with db.transaction():`` block it joins), hooks and monitoring, access control
(``User.using(user=...)``) and tenancy (``with db.tenant(...)``, or ``using(tenant=...)``).

Each method has an async twin (``acreate``, ``alist``...). The workflow of each node
class is built once; a call puts its parameters into a copy of it, checked as
``add_node`` checks them, so a method costs less than building the workflow by hand.

Method names are reserved on a model: a field (or an attribute of the class) with one
of them is refused at ``@db.model``. A class without an ``__init__`` of its own gets one
that takes its fields as keywords (``User(name="x")``), so it stays a plain class too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import os
import uuid
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import DataFlowError, ValidationError, did_you_mean
from .model import ModelSchema
from .runtime import LocalRuntime
from .workflow import NodeSpec, Workflow

if TYPE_CHECKING:  # pragma: no cover
    from .nodes.base import Node
    from .nodes.base import NodeOwner as DataFlow  # what it asks of its DataFlow (no import cycle)

__all__ = ["RESERVED", "ModelMethods", "check_names", "install"]

# (operation, params, what to make of the node's output)
Call = tuple[str, dict[str, Any], Callable[[Any], Any]]
_KEEP: Callable[[Any], Any] = lambda output: output  # noqa: E731 - the identity, named for reading


def _records(output: Any) -> Any:
    return output["records"]


def _count(output: Any) -> int:
    return int(output["count"])


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (None: the node's default)."""
    return {k: v for k, v in values.items() if v is not None}


# -- what each method sends its node ---------------------------------------------------------
def _create(m: ModelMethods, row: Any = None, /, **fields: Any) -> Call:
    """Insert one row and return it (with its id and timestamps): ``User.create(name="Ann")``.

    ``row``: a dict or an instance of the class, whose values the keywords override.
    """
    return "create", {**m.row_values(row), **fields}, _KEEP


def _get(m: ModelMethods, /, id: Any, **options: Any) -> Call:  # noqa: A002 - the field's name
    """The row with this id; ``raise_on_not_found=False`` gives None for a missing one."""
    return "read", {"id": id, **options}, _KEEP


def _update(m: ModelMethods, /, id: Any, **values: Any) -> Call:  # noqa: A002
    """Change fields of one row and return it: ``User.update(1, email="new@x")`` (``{"$inc": n}`` adds).

    Options of the node (``version=`` of a versioned model, ``raise_on_not_found=``) go with them.
    """
    options, fields = m.split("update", values)
    return "update", {"id": id, "fields": fields, **options}, _KEEP


def _delete(m: ModelMethods, /, id: Any, **options: Any) -> Call:  # noqa: A002
    """Delete one row: ``{"id": id, "deleted": bool}`` (a soft_delete model marks it; ``hard=True``)."""
    return "delete", {"id": id, **options}, _KEEP


def _list(m: ModelMethods, /, filter: Any = None, order_by: Any = None, limit: int | None = None,  # noqa: A002
          offset: int | None = None, **options: Any) -> Call:  # fmt: skip
    """Rows matching ``filter``, as a list of dicts (``.to_pandas()`` makes a DataFrame)."""
    return (
        "list",
        {**_given(filter=filter, order_by=order_by, limit=limit, offset=offset), **options},
        _records,
    )


def _count_rows(m: ModelMethods, /, filter: Any = None, **options: Any) -> Call:  # noqa: A002
    """How many rows match ``filter``, an int."""
    return "count", {**_given(filter=filter), **options}, _count


def _upsert(m: ModelMethods, /, where: Any, create: Any = None, update: Any = None,
            conflict_on: Any = None, **options: Any) -> Call:  # fmt: skip
    """Update the row matching ``where``, or create it: ``{"created": bool, "record": row}``."""
    given = _given(create=create, update=update, conflict_on=conflict_on)
    return "upsert", {"where": where, **given, **options}, _KEEP


def _bulk_create(m: ModelMethods, /, data: Any, **options: Any) -> Call:
    """Insert many rows (dicts, or a pandas DataFrame) in one transaction: ``{"inserted": n, ...}``."""
    return "bulk_create", {"data": data, **options}, _KEEP


def _bulk_update(m: ModelMethods, /, filter: Any, fields: Any = None, **values: Any) -> Call:  # noqa: A002
    """Change the rows matching ``filter``: ``User.bulk_update({"active": False}, score=0)``.

    An empty filter (every row) needs ``confirmed=True``.
    """
    options, more = m.split("bulk_update", values)
    return "bulk_update", {"filter": filter, "fields": {**(fields or {}), **more}, **options}, _KEEP


def _bulk_delete(m: ModelMethods, /, filter: Any, **options: Any) -> Call:  # noqa: A002
    """Delete the rows matching ``filter`` (an empty one, every row, needs ``confirmed=True``)."""
    return "bulk_delete", {"filter": filter, **options}, _KEEP


def _bulk_upsert(m: ModelMethods, /, data: Any, **options: Any) -> Call:
    """Insert or update many rows, matched on ``conflict_on`` (default ``["id"]``)."""
    return "bulk_upsert", {"data": data, **options}, _KEEP


def _frame(m: ModelMethods, /, filter: Any = None, order_by: Any = None, limit: int | None = None,  # noqa: A002
           offset: int | None = None, **options: Any) -> Call:  # fmt: skip
    """Rows matching ``filter`` as a pandas DataFrame, one column per field (also when empty)."""
    given = _given(filter=filter, order_by=order_by, limit=limit, offset=offset)
    return "list", {**given, **options}, m.to_frame


def _aggregate(m: ModelMethods, /, group_by: Any = None, metrics: Any = None, *, filter: Any = None,  # noqa: A002
               having: Any = None, order_by: Any = None, limit: int | None = None,
               **options: Any) -> Call:  # fmt: skip
    """Group and measure rows in one query, as a list of dicts (``.to_pandas()``):
    ``Trip.aggregate(["station"], {"trips": "count", "km": ("sum", "km")}, order_by="-trips")``.

    ``group_by`` takes fields and (bucket, field) pairs (day, week, month, year); ``having``
    filters groups on metric names. See the model's AggregateNode for the details.
    """
    given = _given(group_by=group_by, metrics=metrics, filter=filter, having=having, order_by=order_by,
                   limit=limit)  # fmt: skip
    return "aggregate", {**given, **options}, _records


_BUILDERS: dict[str, Callable[..., Call]] = {
    "create": _create, "get": _get, "update": _update, "delete": _delete, "list": _list,
    "count": _count_rows, "upsert": _upsert, "bulk_create": _bulk_create, "bulk_update": _bulk_update,
    "bulk_delete": _bulk_delete, "bulk_upsert": _bulk_upsert, "frame": _frame, "aggregate": _aggregate,
}  # fmt: skip
# names a model's fields may not take
RESERVED = (*_BUILDERS, *(f"a{name}" for name in _BUILDERS), "using", "import_csv")


class ModelMethods:
    """The convenience methods of one model of one DataFlow (``User.create`` is ``methods.create``).

    ``using(user=..., tenant=..., runtime=...)``: the same methods, run as that user, within that
    tenant, or by that runtime (its transaction mode, hooks, retries).
    """

    def __init__(self, dataflow: DataFlow, model: str, *, runtime: LocalRuntime | None = None,
                 user: Any = None, tenant: str | None = None, _cache: Any = None):  # fmt: skip
        self._dataflow = weakref.ref(dataflow)  # the class must not keep a closed DataFlow alive
        self.model_name, self.runtime, self.user, self.tenant = (
            model,
            runtime or _default_runtime(),
            user,
            tenant,
        )
        # the one-node workflow of each node class, built once (a redefined model has new classes)
        self._templates: weakref.WeakKeyDictionary[type, Workflow] = (
            weakref.WeakKeyDictionary() if _cache is None else _cache
        )

    def __repr__(self) -> str:
        return f"<convenience methods of {self.model_name}>"

    def using(
        self, *, user: Any = None, tenant: str | None = None, runtime: LocalRuntime | None = None
    ) -> ModelMethods:
        """These methods, run as ``user`` (access control), within ``tenant``, or by ``runtime``."""
        return ModelMethods(self.dataflow, self.model_name, runtime=runtime or self.runtime,
                            user=self.user if user is None else user,
                            tenant=self.tenant if tenant is None else tenant, _cache=self._templates)  # fmt: skip

    def import_csv(self, path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
        """Stream a CSV file (its header names the fields) into this model's table, all or nothing:
        ``Trip.import_csv("trips.csv")`` -> ``{"inserted": 480}``. Options as ``db.import_csv``'s."""
        from .csv_import import import_csv  # loaded at the first import, not with the package

        options = {"runtime": self.runtime, "user": self.user, "tenant": self.tenant, **options}
        return import_csv(self.dataflow, self.model_name, path, **options)

    # -- for the builders ----------------------------------------------------------------------
    @property
    def dataflow(self) -> DataFlow:
        dataflow = self._dataflow()
        if dataflow is None:
            raise DataFlowError(
                f"The DataFlow of model {self.model_name} is gone (closed and freed).",
                hint="define the model again on a live DataFlow.",
            )
        return dataflow

    @property
    def schema(self) -> ModelSchema:
        return self.dataflow.models[self.model_name]

    def node(self, operation: str) -> type[Node]:
        name = "".join(part.capitalize() for part in operation.split("_"))
        return self.dataflow.nodes[f"{self.model_name}{name}Node"]

    def row_values(self, row: Any) -> dict[str, Any]:
        """A row given to create(): a dict, or an instance of the model's class (its attributes)."""
        if row is None:
            return {}
        if isinstance(row, Mapping):
            return dict(row)
        names = self.schema.by_name
        values = {k: v for k, v in vars(row).items() if k in names}
        if not values:
            raise ValidationError(
                f"{self.model_name}.create() takes a dict or a {self.model_name} instance, got "
                f"{type(row).__name__}.",
                hint=f"pass fields as keywords: {self.model_name}.create(name=...).",
            )
        return values

    def split(self, operation: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Keywords of update/bulk_update -> (the node's options, the fields to set).

        A field a caller may write is a field; another name the node takes (``version``,
        ``raise_on_not_found``, ``confirmed``) is an option.
        """
        params, fields = self.node(operation).param_map(), self.schema.by_name
        options = {
            k: v
            for k, v in values.items()
            if k in params
            and k not in ("id", "filter", "fields")
            and (k not in fields or fields[k].generated)
        }
        return options, {k: v for k, v in values.items() if k not in options}

    def to_frame(self, output: Any) -> Any:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataFlowError("frame() needs pandas.", hint="pip install 'dataflow-lab[pandas]'") from exc
        return pd.DataFrame.from_records(list(output["records"]), columns=list(self.schema.by_name))

    # -- running -------------------------------------------------------------------------------
    def workflow(self, operation: str, params: dict[str, Any], method: str) -> Workflow:
        """The one-node workflow of ``operation`` with ``params`` (checked as add_node checks them)."""
        node_class = self.node(operation)
        template = self._templates.get(node_class)
        if template is None:
            template = self._templates[node_class] = _one_node(
                node_class, operation, f"{self.model_name}.{method}"
            )
        checked = node_class.check(params, node_id=operation, partial=True)
        missing = node_class.open_inputs(checked)
        if missing:
            raise ValidationError(
                f"{self.model_name}.{method}(): missing {', '.join(missing)} ({node_class.type_name}).",
                hint=f"pass {', '.join(f'{n}=...' for n in missing)} to {self.model_name}.{method}().",
            )
        spec = NodeSpec(operation, node_class, MappingProxyType(params), MappingProxyType(checked),
                        template.nodes[operation].metadata)  # fmt: skip
        return dataclasses.replace(template, nodes=MappingProxyType({operation: spec}), workflow_inputs=())

    def run(self, method: str, call: Call) -> Any:
        operation, params, finish = call
        workflow = self.workflow(operation, params, method)
        results, _ = self.runtime.execute(workflow, user=self.user, tenant=self.tenant)
        return finish(results[operation])

    async def arun(self, method: str, call: Call) -> Any:
        operation, params, finish = call
        workflow = self.workflow(operation, params, method)
        results, _ = await self.runtime.execute_async(workflow, user=self.user, tenant=self.tenant)
        return finish(results[operation])


def _one_node(node_class: type[Node], node_id: str, name: str) -> Workflow:
    """A workflow of one node and no parameters yet (``workflow`` puts each call's in), as build() makes it."""
    now = dt.datetime.now(dt.UTC)
    metadata = {"added_at": now, "model_name": node_class.model_name, "operation": node_class.operation}
    spec = NodeSpec(
        node_id, node_class, MappingProxyType({}), MappingProxyType({}), MappingProxyType(metadata)
    )
    workflow_id = str(uuid.uuid4())
    about = {"workflow_id": workflow_id, "workflow_name": name, "created_at": now,
             "dataflow_models": frozenset({node_class.model_name})}  # fmt: skip
    return Workflow(workflow_id=workflow_id, name=name, nodes=MappingProxyType({node_id: spec}), connections=(),
                    order=(node_id,), inputs=MappingProxyType({}), metadata=MappingProxyType(about))  # fmt: skip


def _methods(name: str, build: Callable[..., Call]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The sync method ``name`` and its async twin ``a<name>``, with ``build``'s signature and docs."""

    def sync(self: ModelMethods, *args: Any, **kwargs: Any) -> Any:
        return self.run(name, build(self, *args, **kwargs))

    async def asynchronous(self: ModelMethods, *args: Any, **kwargs: Any) -> Any:
        return await self.arun(name, build(self, *args, **kwargs))

    signature = inspect.signature(build).replace(return_annotation=inspect.Signature.empty)
    methods: tuple[Callable[..., Any], Callable[..., Any]] = (sync, asynchronous)
    for method, method_name in zip(methods, (name, f"a{name}"), strict=True):
        method.__name__ = method.__qualname__ = method_name
        method.__doc__ = build.__doc__ if method is sync else f"The async form of ``{name}``: await it."
        setattr(method, "__signature__", signature)  # noqa: B010 - what inspect.signature reads
    return methods


for _name, _build in _BUILDERS.items():
    for _method in _methods(_name, _build):
        setattr(ModelMethods, _method.__name__, _method)


_RUNTIME: list[LocalRuntime] = []


def _default_runtime() -> LocalRuntime:
    if not _RUNTIME:
        _RUNTIME.append(LocalRuntime())
    return _RUNTIME[0]


# -- the model class ---------------------------------------------------------------------------
def check_names(cls: type, schema: ModelSchema) -> None:
    """Refuse a model whose field, or an attribute of its class, a convenience method would shadow."""
    for name in RESERVED:
        if name in schema.by_name:
            raise ValidationError(
                f"Model '{schema.name}': field '{name}' has the name of the convenience method "
                f"{schema.name}.{name}(), which @db.model adds to the class.",
                hint=f"rename the field, e.g. '{name}_' or '{schema.name.lower()}_{name}'; reserved names: "
                f"{', '.join(RESERVED[: len(_BUILDERS)])}, their async twins (a...) and 'using'.",
            )
        own = inspect.getattr_static(cls, name, None)
        if own is not None and not _ours(own):
            raise ValidationError(
                f"Model '{schema.name}': the class defines '{name}', the name of a convenience method "
                f"that @db.model adds ({schema.name}.{name}()).",
                hint=f"rename the class's '{name}', or call the model's nodes directly "
                f"(db.nodes.{schema.name}...Node).",
            )


def _ours(attribute: Any) -> bool:
    return isinstance(getattr(attribute, "__self__", None), ModelMethods)


def install(cls: type, dataflow: DataFlow, schema: ModelSchema) -> None:
    """Put the convenience methods on ``cls`` (and a keyword ``__init__`` when it has none)."""
    methods = ModelMethods(dataflow, schema.name)
    for name in RESERVED:
        setattr(cls, name, getattr(methods, name))
    if cls.__init__ is object.__init__:  # type: ignore[misc]
        cls.__init__ = _record_init  # type: ignore[misc]
        if cls.__repr__ is object.__repr__:
            cls.__repr__ = _record_repr  # type: ignore[assignment, method-assign]


def _record_init(self: Any, **values: Any) -> None:
    """A plain instance of the model's class: ``User(name="x")`` sets those attributes (unset ones
    read the class's defaults). It is not saved: ``User.create(user)`` saves it."""
    schema: ModelSchema = type(self).__dataflow_model__
    for name, value in values.items():
        if name not in schema.by_name:
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {name!r}."
                f"{did_you_mean(name, schema.by_name)}"
            )
        setattr(self, name, value)


def _record_repr(self: Any) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
    return f"{type(self).__name__}({shown})"
