"""DataFlow: one database, its models, their tables and their generated nodes.

``DataFlow()`` with no URL is an in-memory SQLite database private to this
instance. The database is opened lazily on the runtime's background loop,
and each table is created the first time a workflow uses it. The first
``DataFlow()`` of a process imports SQLAlchemy and prepares its engine on a
background thread (``_warmup.py``), so it returns at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import _loop
from ._warmup import Warm, dialect_now_or_soon
from .clock import clock_for
from .config import DataFlowConfig, redact_url
from .errors import DataFlowError, ValidationError
from .health import HealthMonitor, HealthReport
from .hooks import Hooks
from .ledger import TransactionLedger
from .model import ModelSchema, parse_model
from .nodes import registry
from .nodes.base import Node
from .observability import Observability

__all__ = ["DataFlow"]


class DataFlow(Observability):
    """A database and the models defined on it.

    >>> db = DataFlow()                      # in-memory SQLite, private to db
    >>> db = DataFlow("postgresql://u@host/app")
    """

    def __init__(self, database_url: str | None = None, **options: Any):
        self.config = DataFlowConfig.from_env(database_url, **options)
        self._dialect_or_warmup = dialect_now_or_soon(self.config)
        self._ledger = TransactionLedger()  # its transactions, counted by the scopes (ledger.py)
        self.hooks = Hooks()  # subscribers to every run that touches its models (hooks.py)
        self._models: dict[str, ModelSchema] = {}
        self._tables: dict[str, Any] = {}
        self._nodes: dict[str, type[Node]] = {}
        self._ready: set[tuple] = set()
        self._open_future: asyncio.Future | None = None
        self._ddl_lock: asyncio.Lock | None = None
        self._closed = False
        self._token = uuid.uuid4().hex  # names this instance across processes (see __reduce__)
        self._reflected: set[str] = set()  # models reflected from existing tables: never any DDL
        self.clock = clock_for(self.config.deterministic)
        self._two_phase: bool | None = None
        self._recovered = False
        self._sagas_resumed = False  # owed saga compensations are run at first use (saga_log.py)
        self._pending_compensations: int | None = None  # None: not counted since the last change
        registry.register(self)
        _track(self)
        self._monitor = None
        self._health = HealthMonitor(self)
        if self.config.monitoring:
            from .monitoring import attach

            self._monitor = attach(self)
        if self.config.existing_schema:
            try:
                self.reflect()
            except BaseException:
                self.close()  # a DataFlow that could not start is not left registered
                raise

    @property
    def _dialect(self) -> Any:
        """The dialect; the first use waits for the warm-up, and raises the error it met, if any."""
        dialect = self._dialect_or_warmup
        if isinstance(dialect, Warm):
            dialect = self._dialect_or_warmup = dialect.result()
        return dialect

    # -- identity ----------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with any password replaced by ***."""
        return redact_url(self.config.database_url)

    @property
    def dialect(self) -> str:
        return self._dialect.name

    def __repr__(self) -> str:
        models = ", ".join(self._models) or "no models"
        state = ", closed" if self._closed else ""
        return f"DataFlow({self.url!r}, {models}{state})"

    # -- models and nodes --------------------------------------------------
    def model(self, cls: type) -> type:
        """Register a typed class as a model; generates its eleven nodes. Returns the class.

        The table is created (or migrated, see ``db.migrations``) when a workflow first uses it.
        """
        self._check_open()
        schema = parse_model(cls)
        self._check_redefinition(schema)
        dialect = self._dialect  # waits for the warm-up before importing what it imports
        from .schema import ModelTable

        self._reflected.discard(schema.name)
        self._install(schema, ModelTable(schema, dialect))
        cls.__dataflow_model__ = schema
        return cls

    def _install(self, schema: ModelSchema, table: Any) -> None:
        """Generate and register the eleven nodes of ``schema``."""
        from .nodes.bulk import BULK_OPERATIONS
        from .nodes.crud import CRUD_OPERATIONS

        for old in [n for n, c in self._nodes.items() if c.model is not None and c.model.name == schema.name]:
            del self._nodes[old]
        for op in (*CRUD_OPERATIONS, *BULK_OPERATIONS):
            bulk = "Bulk" if op in BULK_OPERATIONS else ""
            name = f"{schema.name}{bulk}{op.op_name}Node"
            node_cls = type(
                name,
                (op,),
                {
                    "type_name": name,
                    "dataflow": self,
                    "model": schema,
                    "model_name": schema.name,
                    "mt": table,
                    "operation": f"{bulk.lower()}_{op.op_name.lower()}".lstrip("_"),
                    "__module__": __name__,
                    "__doc__": f"{op.description} Generated for model {schema.name}.",
                },
            )
            node_cls.parameters = node_cls.make_parameters(schema)
            self._nodes[name] = node_cls
        self._models[schema.name] = schema
        self._tables[schema.name] = table

    def reflect(self, tables: list[str] | None = None) -> list[str]:
        """Model existing tables as they are (all, or ``tables``); returns the new model names.

        Each table gets its eleven nodes (``users`` -> ``UserCreateNode`` ...). Reflected
        tables are never created, altered or migrated. See migrations/reflect.py for the rules.
        """
        from .migrations.reflect import reflect
        from .transactions import ACTIVE_SCOPE

        self._check_open()
        return _loop.run(reflect(self, tables, ACTIVE_SCOPE.get()))

    def __reduce__(self) -> tuple:
        """Pickle as a description (URL, configuration, model schemas), never as pools or connections.

        Another process (a Dask worker) rebuilds an equivalent DataFlow from it once and reuses it
        (see ``_remote.py``); this process gets this very instance back. The description holds the
        full URL, password included, since workers must connect: pickle it only to your own workers.
        """
        from ._remote import dataflow_from_description

        options = dataclasses.asdict(self.config)
        url = options.pop("database_url")
        schemas = tuple(self._models.values())
        return dataflow_from_description, (self._token, url, options, schemas, frozenset(self._reflected))

    def _check_redefinition(self, schema: ModelSchema) -> None:
        for other in self._models.values():
            if other.name != schema.name and other.table_name == schema.table_name:
                raise ValidationError(
                    f"Models '{other.name}' and '{schema.name}' would share table '{schema.table_name}'.",
                    hint="set __tablename__ on one of them.",
                )
        # Other changes to a model's table are the migration engine's business, at first use
        # (additive: applied in development; destructive: refused until confirmed).

    @property
    def nodes(self) -> registry.NodeNamespace:
        """Generated node classes by name: ``db.nodes.UserCreateNode`` or ``db.nodes["UserCreateNode"]``."""
        return registry.NodeNamespace(self, self._nodes)

    @property
    def models(self) -> Mapping[str, ModelSchema]:
        return MappingProxyType(self._models)

    def table(self, model: type | str) -> Any:
        name = model if isinstance(model, str) else model.__name__
        try:
            return self._tables[name]
        except KeyError:
            raise ValidationError(
                f"Model '{name}' is not defined on {self!r}.", hint="decorate the class with @db.model first."
            ) from None

    def tenant(self, tenant: str) -> Any:
        """``with db.tenant("acme"):``: multi_tenant models of this database see only acme's rows."""
        from .tenancy import tenant_scope

        return tenant_scope(self, tenant)

    def grant(self, role: str, model: type | str, ops: str | list[str]) -> None:
        """Let ``role`` run ``ops`` ("read", "write", "all", or node names like "bulk_create") on ``model``.

        Once a database has any grant, runs need a ``User`` whose roles hold the grants (access.py).
        """
        from .access import grant

        grant(self, role, model, ops)

    def import_csv(self, model: type | str, path: Any, **options: Any) -> dict[str, Any]:
        """Stream a CSV file (header = field names) into ``model``'s table, in one transaction.

        Options: delimiter, encoding, batch_size, on_error ("raise" | "skip"), progress.
        Returns BulkCreate's output, e.g. ``{"inserted": 1000}``.
        """
        from .csv_import import import_csv

        return import_csv(self, model, path, **options)

    # -- lifecycle -----------------------------------------------------------
    async def _opened(self) -> Any:
        """The dialect, opened once, on the background loop."""
        self._check_open()
        if self._open_future is None:
            self._open_future = asyncio.ensure_future(self._dialect.open())
            self._open_future.add_done_callback(
                lambda f: f.cancelled() or f.exception() or self._health.start()
            )
        try:
            await asyncio.shield(self._open_future)
        except Exception as exc:
            self._open_future = None
            raise DataFlowError(
                f"Could not open {self!r}: {self._dialect.scrub(str(exc))}",
                hint="check the database URL and that the server is running.",
            ) from None
        return self._dialect

    async def _ensure_table(self, table: Any, scope: Any = None) -> None:
        if not self._recovered:
            self._recovered = True
            await self._recover_at_start()
        if not self._sagas_resumed and (scope is None or not scope.holds(self)):
            # (inside an open transaction a second connection could wait forever: at a later use)
            self._sagas_resumed = True
            await self._resume_at_start()
        if (
            scope is not None
            and scope.holds(self)
            and table.model.signature() not in self._ready_signatures()
        ):
            # Inside an open transaction on this database: a second connection could wait forever for
            # the one writer (SQLite, DuckDB). Create the table in that transaction; a rollback undoes it,
            # so it is not marked ready.
            conn = await scope.connection(self, write=True)
            await table.ensure(conn, **self._migration_policy())
            return
        await self._ensure_table_once(table)

    def _migration_policy(self) -> dict[str, Any]:
        return {"auto_migrate": self.config.auto_migrate, "existing_schema": self.config.existing_schema,
                "clock": self.clock}  # fmt: skip

    @property
    def migrations(self) -> Any:
        """Plan, apply, roll back and generate schema migrations (migrations/__init__.py)."""
        from .migrations import Migrations

        return Migrations(self)

    def _ready_signatures(self) -> set:
        return {key[1] for key in self._ready}

    async def _ensure_table_once(self, table: Any) -> None:
        if table.model.audit_log:  # its writes log to the audit table in their own transaction
            from .audit import ensure_table

            await ensure_table(self)
        key = (table.model.table_name, table.model.signature())
        if key in self._ready:
            return
        if self._ddl_lock is None:
            self._ddl_lock = asyncio.Lock()
        async with self._ddl_lock:
            if key in self._ready:
                return
            dialect = await self._opened()
            conn = await dialect.acquire()
            try:
                await conn.begin()
                try:
                    await table.ensure(conn, **self._migration_policy())
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
            except DataFlowError:
                raise
            except Exception as exc:
                raise DataFlowError(
                    f"Could not prepare table '{table.model.table_name}' on {self!r}: {dialect.scrub(str(exc))}",
                    hint="check that the database is reachable and writable; the run changed nothing.",
                ) from exc
            finally:
                await dialect.release(conn)
            self._ready = {k for k in self._ready if k[0] != key[0]} | {key}

    async def _allows_two_phase(self) -> bool:
        """PostgreSQL with max_prepared_transactions > 0 (asked once)."""
        if self._two_phase is None:
            self._two_phase = False
            if self.dialect == "postgresql":
                dialect = await self._opened()
                conn = await dialect.acquire()
                try:
                    self._two_phase = int((await conn.fetch("SHOW max_prepared_transactions"))[0][0]) > 0
                finally:
                    await dialect.release(conn)
        return self._two_phase

    def transaction(self, isolation: str | None = None) -> Any:
        """One transaction for a block: ``with db.transaction():`` or ``async with db.transaction():``.

        Workflows run inside it join it; a nested block is a savepoint; an exception
        rolls the block back and propagates unchanged.
        """
        from .transactions import TransactionBlock

        self._check_open()
        return TransactionBlock(self, isolation)

    def recover_in_doubt(self, *others: DataFlow, force: bool = False) -> dict[str, str]:
        """Resolve prepared (two-phase) transactions a crash left behind, on this and ``others``.

        Commits those whose decision the coordinator recorded; rolls back the rest. Like
        start-up recovery it leaves transactions younger than ``in_doubt_grace`` alone unless
        ``force=True``; never one whose coordinating process is still alive.
        """
        from .two_phase import recover_in_doubt

        grace = 0.0 if force else self.config.in_doubt_grace
        return _loop.run(recover_in_doubt([self, *others], min_age=grace))

    async def _recover_at_start(self) -> None:
        """At first use of a PostgreSQL database: resolve two-phase commits a crash left in doubt."""
        from .two_phase import recover_in_doubt

        if self.dialect != "postgresql" or not await self._allows_two_phase():
            return
        others = [db for db in registry.live_dataflows() if db is not self and db.dialect == "postgresql"]
        try:
            outcome = await recover_in_doubt([self, *others], min_age=self.config.in_doubt_grace)
        except Exception:  # recovery must never stop a database from opening
            logging.getLogger("dataflow_lab.transactions").warning("in-doubt recovery failed", exc_info=True)
            return
        if outcome:
            logging.getLogger("dataflow_lab.transactions").warning(
                "resolved in-doubt transactions: %s", outcome
            )

    def resume_compensations(self, *, force: bool = False) -> list[Any]:
        """Run the saga compensations still owed on this database (the server was down when they
        ran, or the process died); returns a ``ResumedCompensation`` per compensation tried.

        Like start-up, which does this at first use, it leaves entries younger than
        ``in_doubt_grace`` seconds alone (a run in another process may still own them) unless
        ``force=True``.
        """
        from .saga_log import resume

        self._check_open()
        grace = 0.0 if force else self.config.in_doubt_grace
        return _loop.run(resume(self, min_age=grace))

    def pending_compensations(self) -> int:
        """How many saga compensations are still owed on this database (see resume_compensations)."""
        from .saga_log import pending

        self._check_open()
        self._pending_compensations = len(_loop.run(pending(self)))
        return self._pending_compensations

    async def _resume_at_start(self) -> None:
        from .saga_log import resume

        try:
            done = await resume(self, min_age=self.config.in_doubt_grace)
        except Exception:  # resuming must never stop a database from opening
            logging.getLogger("dataflow_lab.transactions").warning("saga resume failed", exc_info=True)
            return
        if done:
            logging.getLogger("dataflow_lab.transactions").warning("resumed saga compensations: %s", done)

    def _check_open(self) -> None:
        if self._closed:
            raise DataFlowError(f"{self!r} is closed.", hint="create a new DataFlow.")

    def pool_status(self) -> dict[str, Any]:
        """Connection pool figures (size, checked out, overflow...)."""
        return {**self._dialect.pool_status(), "health_status": self._health.status_word()}

    def health(self) -> HealthReport:
        """Probe the database now: ping idle pooled connections, discard dead ones (see health.py)."""
        self._check_open()
        return _loop.run(self._health.check())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        registry.unregister(self)
        self._stop_monitoring()
        self._health.stop()
        if self._open_future is not None and self._open_future.done() and not self._open_future.exception():
            await self._dialect.dispose()

    def close(self) -> None:
        """Release every connection and thread this instance holds. Idempotent."""
        if self._closed:
            return
        if self._open_future is None:
            self._closed = True
            registry.unregister(self)
            self._stop_monitoring()
            return
        _loop.run(self.aclose())

    def __enter__(self) -> DataFlow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> DataFlow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await _loop.run_async(self.aclose())


_INSTANCES: weakref.WeakSet[DataFlow] = weakref.WeakSet()


def _track(dataflow: DataFlow) -> None:
    if not _INSTANCES:
        _loop.on_exit(_close_all)
    _INSTANCES.add(dataflow)


async def _close_all() -> None:
    for dataflow in list(_INSTANCES):
        await dataflow.aclose()
