"""Database: what a DataFlow holds, behind the interface the package's other modules use.

``DataFlow`` (dataflow.py) is the public facade; ``db.database`` is this object,
package-internal, and the only way other modules reach a DataFlow's state. Its
interface is the list below; everything else on it is private.

=============  ==========================================================================
lifecycle      ``await open()`` -> the opened ``Dialect`` (once; later calls share that
               opening), ``await close()`` / ``shut()``, ``closed``, ``opened``, ``settled``
               (opened, and its first use's recovery done), ``check_open()``
connections    ``await acquire()`` (opens first) / ``await release(conn)``
dialect        ``dialect``: the database's facts and capabilities (dialects/base.py); the
               first use waits for the warm-up (_warmup.py)
tables         ``await ensure_table(table, scope=None, create=False)``: created or migrated
               once (inside ``scope``'s transaction when it holds this database; without
               auto_migrate a missing table is refused unless ``create``); ``is_ready(key)`` /
               ``mark_ready(key)`` for dataflow_lab's own tables; ``forget_ready()`` after a
               migration, so every table is checked again
transactions   ``ledger`` (ledger.py), ``await allows_two_phase()``
registry       ``models``, ``tables``, ``nodes``, ``reflected``; ``install(schema, table)``
               generates and registers a model's twelve nodes
identity       ``dataflow`` (the facade), ``token`` (names it across processes, _remote.py)
health         ``health``: the HealthMonitor (health.py); ``leak_watch`` (leaks.py)
cache          ``cache``: the ResultCache (result_cache.py), watching other processes' writes
               from the opening on (``Dialect.watch_changes``)
sagas          ``pending_count``: compensations owed, as last counted (None: count again)
=============  ==========================================================================

At first use (the first ``ensure_table``) it resolves what a crash left behind:
two-phase commits in doubt (two_phase.py) and saga compensations still owed
(saga_log.py).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

from ._warmup import Warm, dialect_now_or_soon
from .errors import DataFlowError
from .health import HealthMonitor
from .leaks import watch
from .ledger import TransactionLedger
from .nodes.registry import NodeClasses
from .result_cache import ResultCache

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataFlowConfig
    from .dialects import Connection, Dialect
    from .interfaces import DataFlow
    from .model import ModelSchema
    from .nodes.model_node import ModelNode

__all__ = ["Database"]

log = logging.getLogger("dataflow_lab.transactions")

# The nodes a model gets at their first lookup: (module, its tuple of operations, "Bulk" or not in the
# node's name, the operations' op_name). Their modules are a sixth of the package's code, which a
# first run rarely needs; test_dataflow checks these names against the modules' tuples.
_LATER = (
    ("dataflow_lab.nodes.bulk", "BULK_OPERATIONS", "Bulk", ("Create", "Update", "Delete", "Upsert")),
    ("dataflow_lab.nodes.aggregate", "AGGREGATE_OPERATIONS", "", ("Aggregate",)),
)


class Database:
    """The connections, tables, ledger and registry of one DataFlow (see the module's docstring)."""

    def __init__(self, dataflow: DataFlow, config: DataFlowConfig):
        self.dataflow = dataflow
        self.config = config
        self.token = uuid.uuid4().hex  # names this database across processes (DataFlow.__reduce__)
        self.ledger = TransactionLedger()  # its transactions, counted by the scopes (ledger.py)
        self.models: dict[str, ModelSchema] = {}
        self.tables: dict[str, Any] = {}
        self.nodes = NodeClasses()  # by name; a model's bulk and Aggregate nodes are made at first lookup
        self.reflected: set[str] = set()  # models reflected from existing tables: never any DDL
        self.health = HealthMonitor(dataflow)
        self.cache = ResultCache(config.cache)  # off unless DataFlow(cache=...) (result_cache.py)
        self._watch: Any = None  # what watches other processes' writes for the cache (closed at close)
        self.leak_watch = watch(dataflow)  # warns if it is collected unclosed, holding connections
        self.pending_count: int | None = None  # saga compensations owed; None: not counted since a change
        self.closed = False
        self._dialect: Dialect | Warm = dialect_now_or_soon(config)
        self._open_future: asyncio.Future | None = None
        self._ready: set[tuple[str, Any]] = set()  # (table name, signature) of tables checked
        self._ddl_lock: asyncio.Lock | None = None
        self._two_phase: bool | None = None
        self._recovered = False
        self._sagas_resumed = False  # owed saga compensations are run at first use (saga_log.py)

    # -- the dialect ---------------------------------------------------------------------
    @property
    def dialect(self) -> Dialect:
        """The dialect; the first use waits for the warm-up, and raises the error it met, if any."""
        dialect = self._dialect
        if isinstance(dialect, Warm):
            dialect = self._dialect = dialect.result()
        return dialect

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def opened(self) -> bool:
        """Whether opening has been asked for (it may still be under way)."""
        return self._open_future is not None

    @property
    def settled(self) -> bool:
        """Whether it is open, and what its first use resolves (in-doubt commits, owed sagas) is done."""
        future = self._open_future
        return (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
            and self._recovered
            and self._sagas_resumed
            and not self.closed
        )

    def check_open(self) -> None:
        if self.closed:
            raise DataFlowError(f"{self.dataflow!r} is closed.", hint="create a new DataFlow.")

    async def open(self) -> Dialect:
        """The dialect, opened once, on the background loop (the health task starts then)."""
        self.check_open()
        future = self._open_future
        if future is not None and self._watch is not None and future.done() and not future.cancelled():
            if future.exception() is None:  # opened: asked at each run's first connection, no shield
                return self.dialect
        if self._open_future is None:
            self._open_future = asyncio.ensure_future(self.dialect.open())

            def opened(future: asyncio.Future) -> None:
                if not future.cancelled() and future.exception() is None:
                    self.leak_watch.dialect = self.dialect
                    self.health.start()

            self._open_future.add_done_callback(opened)
        try:
            await asyncio.shield(self._open_future)
        except Exception as exc:
            self._open_future = None
            raise DataFlowError(
                f"Could not open {self.dataflow!r}: {self.dialect.scrub(str(exc))}",
                hint="check the database URL and that the server is running.",
            ) from None
        if self._watch is None:
            await self._watch_changes()
        return self.dialect

    async def _watch_changes(self) -> None:
        """Start seeing other processes' writes, for the cache (once); a database that cannot turns it
        off (``Dialect.changes``: dialects/change_feed.py)."""
        self._watch = True  # asked once, even when it fails
        self.dialect.changes.join(self.cache)  # (a plain DataFlow's writes reach the others' caches)
        if not self.cache.enabled:
            return
        try:
            self._watch = await self.dialect.changes.watch(self.cache)
        except Exception as exc:
            self.cache.turn_off(f"could not watch other processes' writes: {self.dialect.scrub(str(exc))}")

    def shut(self) -> None:
        """Refuse any further use and stop the health task (``close()`` also disposes of the pool)."""
        self.closed = True
        self.leak_watch.closed = True
        self.health.stop()
        statements = getattr(self._dialect, "statements", None)  # one still warming up has none yet
        if statements is not None:
            statements.close()  # no more EXPLAINs of slow statements

    async def close(self) -> None:
        """Shut, then release every pooled connection (when it was ever opened). Idempotent."""
        if self.closed:
            return
        self.shut()
        await self.health.settle()
        future = self._open_future
        if future is not None and future.done() and not future.cancelled() and not future.exception():
            watch, self._watch = self._watch, None
            if watch is not None and watch is not True:
                self.cache.turn_off("the database is closed", warn=False)
                await watch.close()
            if self.dialect.statements is not None:
                await self.dialect.statements.aclose()  # an EXPLAIN in flight gives its connection back
            await self.dialect.dispose()

    # -- connections -----------------------------------------------------------------------
    async def acquire(self) -> Connection:
        """A connection of its own (opens the database first); give it back with ``release``."""
        dialect = await self.open()
        return await dialect.acquire()

    async def release(self, conn: Connection) -> None:
        await self.dialect.release(conn)

    # -- tables ----------------------------------------------------------------------------
    def is_ready(self, key: tuple[str, Any]) -> bool:
        """Whether the table ``key`` ((name, signature)) was checked since the last migration."""
        return key in self._ready

    def mark_ready(self, key: tuple[str, Any]) -> None:
        """Record ``key`` as checked; an older signature of the same table is forgotten (and its
        cached results: the migration to this one may have changed its rows)."""
        if any(k[0] == key[0] and k != key for k in self._ready):
            self.cache.invalidate([key[0]])
        self._ready = {k for k in self._ready if k[0] != key[0]} | {key}

    def forget_ready(self) -> None:
        """Check every table again at its next use (after a migration); forget every cached result."""
        self._ready.clear()
        self.cache.clear()

    async def ensure_table(self, table: Any, scope: Any = None, *, create: bool = False) -> None:
        """Create or migrate a model's table, once, before it is used.

        Inside an open transaction on this database (``scope`` holds it), a second connection
        could wait forever for the one writer (SQLite, DuckDB): then the table is made in that
        transaction, and not marked ready, since a rollback undoes it. Where DDL commits the
        transaction it runs in (MySQL), the table is made on a connection of its own.
        """
        await self._first_use(scope)
        held = scope is not None and scope.holds(self.dataflow)
        if held and not (await self.open()).transactional_ddl:
            held = False  # DDL would commit the block's transaction (MySQL): a connection of its own
        if held and table.model.signature() not in {key[1] for key in self._ready}:
            conn = await scope.connection(self.dataflow, write=True)
            await table.ensure(conn, **self._migration_policy(create))
            return
        await self._ensure_table_once(table, create)

    def _migration_policy(self, create: bool) -> dict[str, Any]:
        return {"auto_migrate": self.config.auto_migrate, "existing_schema": self.config.existing_schema,
                "clock": self.dataflow.clock, "create": create}  # fmt: skip

    async def _ensure_table_once(self, table: Any, create: bool) -> None:
        from .behaviours import of  # they import SQLAlchemy, which `import dataflow_lab` must not load

        await of(table).prepare(self.dataflow)  # the internal tables its behaviours write to (audit)
        key = (table.model.table_name, table.model.signature())
        if key in self._ready:
            return
        if self._ddl_lock is None:
            self._ddl_lock = asyncio.Lock()
        async with self._ddl_lock:
            if key in self._ready:
                return
            dialect = await self.open()
            conn = await dialect.acquire()
            try:
                await self._ensure_in_own_transaction(table, conn, create)
            except DataFlowError:
                raise
            except Exception as exc:
                raise DataFlowError(
                    f"Could not prepare table '{table.model.table_name}' on {self.dataflow!r}: "
                    f"{dialect.scrub(str(exc))}",
                    hint="check that the database is reachable and writable; the run changed nothing.",
                ) from exc
            finally:
                await dialect.release(conn)
            self.mark_ready(key)

    async def _ensure_in_own_transaction(self, table: Any, conn: Connection, create: bool) -> None:
        await conn.begin()
        try:
            await table.ensure(conn, **self._migration_policy(create))
            notifies = False
            if self.cache.enabled:  # PostgreSQL: the trigger that tells other processes' caches
                ddl = self.config.auto_migrate and not self.config.existing_schema
                ddl = ddl and table.model.name not in self.reflected  # (a reflected table gets no DDL)
                notifies = await self.dialect.changes.install(conn, table.model.table_name, install=ddl)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        if notifies:
            self.cache.watch(table.model.table_name)

    # -- transactions ----------------------------------------------------------------------
    async def allows_two_phase(self) -> bool:
        """Whether this database takes part in two-phase commits (asked of the server once)."""
        if self._two_phase is None:
            self._two_phase = False
            if self.dialect.supports_two_phase:
                conn = await self.acquire()
                try:
                    self._two_phase = await self.dialect.two_phase_enabled(conn)
                finally:
                    await self.release(conn)
        return self._two_phase

    # -- registry --------------------------------------------------------------------------
    def install(self, schema: ModelSchema, table: Any, *, reflected: bool = False) -> None:
        """Generate and register the twelve nodes of ``schema`` (replacing an older definition): the
        CRUD nodes now, the bulk and Aggregate ones at their first lookup (``_LATER``)."""
        from .nodes.crud import CRUD_OPERATIONS

        for old in self.nodes.names_of(schema.name):
            del self.nodes[old]
        for op in CRUD_OPERATIONS:
            self.nodes[f"{schema.name}{op.op_name}Node"] = self._node_class(schema, table, op, "")
        for module, operations, bulk, names in _LATER:
            for op_name in names:
                make = functools.partial(
                    self._later_class, schema, table, (module, operations), bulk, op_name
                )
                self.nodes.later(f"{schema.name}{bulk}{op_name}Node", schema.name, make)
        self.models[schema.name] = schema
        self.tables[schema.name] = table
        if reflected:
            self.reflected.add(schema.name)
        else:
            self.reflected.discard(schema.name)

    def _later_class(
        self, schema: ModelSchema, table: Any, where: tuple[str, str], bulk: str, op_name: str
    ) -> type[ModelNode]:
        module, operations = where
        op = next(op for op in getattr(importlib.import_module(module), operations) if op.op_name == op_name)
        return self._node_class(schema, table, op, bulk)

    def _node_class(self, schema: ModelSchema, table: Any, op: type[ModelNode], bulk: str) -> type[ModelNode]:
        name = f"{schema.name}{bulk}{op.op_name}Node"
        node_cls = cast(
            "type[ModelNode]",
            type(
                name,
                (op,),
                {
                    "type_name": name,
                    "dataflow": self.dataflow,
                    "model": schema,
                    "model_name": schema.name,
                    "mt": table,
                    "operation": f"{bulk.lower()}_{op.op_name.lower()}".lstrip("_"),
                    "__module__": "dataflow_lab.dataflow",
                    "__doc__": f"{op.description} Generated for model {schema.name}.",
                },
            ),
        )
        node_cls.parameters = node_cls.make_parameters(schema)
        return node_cls

    # -- start-up recovery -----------------------------------------------------------------
    async def _first_use(self, scope: Any) -> None:
        if not self._recovered:
            self._recovered = True
            if self.dialect.starts_empty():  # a fresh in-memory database: nothing to recover or resume
                self._sagas_resumed = True
                return
            await self._recover_in_doubt()
        if not self._sagas_resumed and (scope is None or not scope.holds(self.dataflow)):
            # (inside an open transaction a second connection could wait forever: at a later use)
            self._sagas_resumed = True
            await self._resume_compensations()

    async def _recover_in_doubt(self) -> None:
        """Resolve the two-phase commits a crash left in doubt (where two-phase commit is on)."""
        from .nodes import registry
        from .two_phase import recover_in_doubt

        if not self.dialect.supports_two_phase or not await self.allows_two_phase():
            return
        others = [
            db
            for db in registry.live_dataflows()
            if db is not self.dataflow and db.database.dialect.supports_two_phase
        ]
        try:
            outcome = await recover_in_doubt([self.dataflow, *others], min_age=self.config.in_doubt_grace)
        except Exception:  # recovery must never stop a database from opening
            log.warning("in-doubt recovery failed", exc_info=True)
            return
        if outcome:
            log.warning("resolved in-doubt transactions: %s", outcome)

    async def _resume_compensations(self) -> None:
        from .saga_log import resume

        try:
            done = await resume(self.dataflow, min_age=self.config.in_doubt_grace)
        except Exception:  # resuming must never stop a database from opening
            log.warning("saga resume failed", exc_info=True)
            return
        if done:
            log.warning("resumed saga compensations: %s", done)
