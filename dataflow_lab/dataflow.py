"""DataFlow: one database, its models, their tables and their generated nodes.

``DataFlow()`` with no URL is an in-memory SQLite database private to this
instance. The database is opened lazily on the runtime's background loop,
and each table is created the first time a workflow uses it. The first
``DataFlow()`` of a process imports SQLAlchemy and prepares its engine on a
background thread (``_warmup.py``), so it returns at once.

``DataFlow`` is the public facade. What it holds (connections, tables, the
transaction ledger, the models and nodes) is its ``database`` (database.py),
whose documented interface the package's other modules use.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import _loop, model_methods
from .access import grant
from .clock import clock_for
from .config import DataFlowConfig, redact_url
from .database import Database
from .dialects import refuse_pool_options
from .encryption import HOW_TO_MAKE_A_KEY, load_keys
from .errors import EncryptionError, ValidationError
from .hooks import Hooks
from .leaks import open_at_exit
from .logs import show as show_logs
from .model import ModelSchema, parse_model
from .nodes import registry
from .observability import Observability
from .tracking import RunTracker, check_history
from .transaction_block import TransactionBlock
from .transactions import ACTIVE_SCOPE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .cipher import Cipher
    from .records import HealthReport
    from .schema import ModelTable
    from .transit import Transit

__all__ = ["DataFlow"]

log = logging.getLogger("dataflow_lab.dataflow")


class DataFlow(Observability):
    """A database and the models defined on it.

    >>> db = DataFlow()                      # in-memory SQLite, private to db
    >>> db = DataFlow("postgresql://u@host/app")
    """

    def __init__(self, database_url: str | None = None, **options: Any):
        # the keys never enter the config (its repr, its pickle for Dask workers): encryption.py
        self._encryption_keys = options.pop("encryption_keys", None)
        self.config = DataFlowConfig.from_env(database_url, **options)
        show_logs(self.config)  # echo's SQL and log_level on stderr in a script (logs.py)
        refuse_pool_options(self.config.database_url, options)  # DuckDB has no pool to size
        self.hooks = Hooks()  # subscribers to every run that touches its models (hooks.py)
        self.tracker = self.hooks.subscribe(RunTracker(check_history(self.config.run_history)))
        self.clock = clock_for(self.config.deterministic)
        # its connections, tables, ledger and registry: the package's other modules use this
        self.database = Database(self, self.config)
        registry.register(self)
        _track(self)
        self._monitor = None
        if self.config.monitoring:
            from .monitoring import attach  # the collector's modules load only where monitoring is on

            self._monitor = attach(self)
        if self.config.existing_schema:
            try:
                self.reflect()
            except BaseException:
                self.close()  # a DataFlow that could not start is not left registered
                raise
        log.info("Initialized DataFlow in %s mode: %s", self.config.environment, self.url)

    # -- identity ----------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with any password replaced by ***."""
        return redact_url(self.config.database_url)

    @property
    def dialect(self) -> str:
        return self.database.dialect.name

    def __repr__(self) -> str:
        models = ", ".join(self.database.models) or "no models"
        state = ", closed" if self.database.closed else ""
        return f"DataFlow({self.url!r}, {models}{state})"

    # -- models and nodes --------------------------------------------------
    def model(self, cls: type) -> type:
        """Register a typed class as a model; generates its twelve nodes and puts the convenience
        methods on the class (``User.create(...)``, ``User.list(...)``: model_methods.py). Returns the class.

        The table is created (or migrated, see ``db.migrations``) when a workflow first uses it.
        """
        self.database.check_open()
        schema = parse_model(cls, defaults=self.config.model_defaults,  # DataFlow(multi_tenant=True)...
                             encryption_at_rest=self.config.encryption_at_rest)  # fmt: skip
        self._check_redefinition(schema)
        model_methods.check_names(cls, schema)
        cipher = self._cipher(schema)
        dialect = self.database.dialect  # waits for the warm-up before importing what it imports
        from .behaviours import compose
        from .schema import ModelTable

        compose(schema)  # a model whose options cannot go together is refused before it replaces one
        spare = functools.partial(self._spare_cipher, schema)  # a migration that decrypts needs one
        self.database.install(schema, ModelTable(schema, dialect, cipher, spare_cipher=spare))
        setattr(cls, "__dataflow_model__", schema)  # noqa: B010 - any class may be decorated
        model_methods.install(cls, self, schema)  # User.create(...), User.list(...)... (model_methods.py)
        log.info("Registered model %s (table %s) on %s", schema.name, schema.table_name, self.url)
        return cls

    def rotate_key(self, key_id: str, *, batch_size: int = 1000) -> dict[str, int]:
        """Re-encrypt every encrypted field of every model under key ``key_id`` (of the keyring).

        In batches of ``batch_size`` rows, each in its own transaction: a rotation that stops
        part-way (a kill, a lost connection) resumes when run again, skipping the values already
        under ``key_id``, and every key of the ring decrypts meanwhile. Searchable fields get
        their blind index under ``key_id`` too, and an audited model's audit images are
        re-encrypted after its rows. Returns model -> rows re-encrypted (and
        ``"<model> (audit log)"`` -> entries, for an audited model).
        """
        self.database.check_open()
        return _loop.run(self._rotate(key_id, batch_size))

    async def _rotate(self, key_id: str, batch_size: int) -> dict[str, int]:
        database = self.database
        tables = [t for t in database.tables.values() if t.cipher is not None]
        for table in tables:
            if key_id not in table.cipher.key_ids:
                raise EncryptionError(
                    f"rotate_key('{key_id}'): the keyring of model '{table.model.name}' has no key "
                    f"'{key_id}' (it has {', '.join(table.cipher.key_ids)}).",
                    hint="add it to DATAFLOW_ENCRYPTION_KEY or encryption_keys (last: current), and "
                    "define the models again.",
                )
        await database.open()
        done = {}
        for table in tables:
            await database.ensure_table(table)
            after, total, read = None, 0, batch_size
            while read == batch_size:
                conn = await database.acquire()
                try:
                    await conn.begin()
                    try:
                        after, read, rewritten = await table.rotate(conn, key_id, after, batch_size)
                        await conn.commit()
                        database.cache.invalidate([table.model.table_name])
                    except BaseException:
                        await conn.rollback()
                        raise
                finally:
                    await database.release(conn)
                total += rewritten
            done[table.model.name] = total
            if table.model.audit_log:  # its history must still read once the old key is gone
                from .audit import rotate_images

                done[f"{table.model.name} (audit log)"] = await rotate_images(self, table, key_id, batch_size)
        return done

    def _cipher(self, schema: ModelSchema) -> Cipher | None:
        """The cipher of a model with encrypted fields (None: it has none); no key: refused."""
        if not schema.encrypted:
            return None
        keys = load_keys(self._encryption_keys)
        if keys is None:
            raise EncryptionError(
                f"Model '{schema.name}' has encrypted fields ({', '.join(sorted(schema.encrypted))}) but "
                f"there is no encryption key: {HOW_TO_MAKE_A_KEY}."
            )
        from .cipher import Cipher  # loaded with the first encrypted model

        try:
            return Cipher(keys, schema.name, schema.table_name)
        except ImportError:
            raise EncryptionError(
                f"Model '{schema.name}' has encrypted fields, which need the cryptography package.",
                hint="pip install 'dataflow-lab[encryption]'",
            ) from None

    def cipher_for(self, schema: ModelSchema) -> Cipher | None:
        """The cipher of ``schema``'s encrypted fields (None: it has none); no key: refused.

        A Dask worker's copy of this DataFlow builds its tables with it (its key from the environment).
        """
        return self._cipher(schema)

    def transit(self, run_id: str) -> Transit | None:
        """What seals DaskRuntime's task payloads for run ``run_id`` (None: no key, nothing to seal)."""
        from .transit import Transit  # only DaskRuntime seals payloads

        keys = load_keys(self._encryption_keys)
        return None if keys is None else Transit(keys, run_id)

    def _spare_cipher(self, schema: ModelSchema) -> Cipher | None:
        """A cipher for ``schema``'s table even where it declares nothing encrypted (a migration turning
        encryption off, or rolled back); None: this DataFlow has no key."""
        keys = load_keys(self._encryption_keys)
        if keys is None:
            return None
        from .cipher import Cipher

        try:
            return Cipher(keys, schema.name, schema.table_name)
        except ImportError:
            return None

    def reflect(self, tables: list[str] | None = None) -> list[str]:
        """Model existing tables as they are (all, or ``tables``); returns the new model names.

        Each table gets its twelve nodes (``users`` -> ``UserCreateNode`` ...). Reflected
        tables are never created, altered or migrated. See migrations/reflect.py for the rules.
        """
        from .migrations.reflect import reflect

        self.database.check_open()
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
        database = self.database
        schemas = tuple(database.models.values())
        description = (database.token, url, options, schemas, frozenset(database.reflected))
        return dataflow_from_description, (type(self), *description)

    def _check_redefinition(self, schema: ModelSchema) -> None:
        for other in self.database.models.values():
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
        return registry.NodeNamespace(self, self.database.nodes)

    @property
    def models(self) -> Mapping[str, ModelSchema]:
        return MappingProxyType(self.database.models)

    def table(self, model: type | str) -> ModelTable:
        name = model if isinstance(model, str) else model.__name__
        try:
            return self.database.tables[name]
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

        grant(self, role, model, ops)

    def import_csv(self, model: type | str, path: Any, **options: Any) -> dict[str, Any]:
        """Stream a CSV file (header = field names) into ``model``'s table, in one transaction.

        Options: delimiter, encoding, batch_size, on_error ("raise" | "skip"), progress.
        Returns BulkCreate's output, e.g. ``{"inserted": 1000}``.
        """
        from .csv_import import import_csv

        return import_csv(self, model, path, **options)

    @property
    def migrations(self) -> Any:
        """Plan, apply, roll back and generate schema migrations (migrations/__init__.py)."""
        from .migrations.facade import Migrations

        return Migrations(self)

    # -- your own SQL ----------------------------------------------------------
    def sql(
        self, query: str, params: Mapping[str, Any] | None = None, *, write: bool = False,
        user: Any = None, engine: str | None = None, **named: Any,
    ) -> pd.DataFrame:  # fmt: skip
        """One SQL statement on this database, as a DataFrame: ``db.sql("SELECT ... WHERE a > :a", a=1)``.

        Values are bound (``:name``, never pasted into the text); a list value binds one
        parameter per item, for ``IN (:ids)``. Read-only unless ``write=True``, which runs it in
        a transaction and reports the rows it changed (``frame.attrs["rows_affected"]``, or the
        rows of RETURNING). Inside ``with db.transaction():`` it joins the block. It sees every
        row, whatever tenant, soft delete or grant the models declare: with access control on,
        it needs a grant of its own, ``db.grant(role, "*", "sql")``.

        ``engine="duckdb"`` runs a read-only query in DuckDB, with this SQLite or PostgreSQL
        database attached through DuckDB's scanner: columnar speed for a GROUP BY over a
        row-store table, on committed data.
        """
        from .queries import run_sql, run_sql_duckdb  # db.sql's modules load at its first call

        values = {**(params or {}), **named}
        if engine is None or engine == "database":
            return run_sql(self, query, values, write=write, user=user)
        if engine != "duckdb":
            raise ValidationError(f"db.sql: no engine {engine!r}.", hint='engine="duckdb", or leave it out.')
        if write:
            raise ValidationError(
                "db.sql: engine='duckdb' reads only.", hint="drop write=True or engine='duckdb'."
            )
        return run_sql_duckdb(self, query, values, user=user)

    async def asql(
        self, query: str, params: Mapping[str, Any] | None = None, *, write: bool = False,
        user: Any = None, **named: Any,
    ) -> pd.DataFrame:  # fmt: skip
        """The async form of ``sql``."""
        from .queries import run_sql_async

        return await run_sql_async(self, query, {**(params or {}), **named}, write=write, user=user)

    # -- transactions ----------------------------------------------------------
    def transaction(self, isolation: str | None = None) -> Any:
        """One transaction for a block: ``with db.transaction():`` or ``async with db.transaction():``.

        Workflows run inside it join it; a nested block is a savepoint; an exception
        rolls the block back and propagates unchanged.
        """

        self.database.check_open()
        return TransactionBlock(self, isolation)

    def recover_in_doubt(self, *others: DataFlow, force: bool = False) -> dict[str, str]:
        """Resolve prepared (two-phase) transactions a crash left behind, on this and ``others``
        (PostgreSQL's prepared transactions, MySQL's XA branches as XA RECOVER lists them).

        Commits those whose decision the coordinator recorded; rolls back the rest. Like
        start-up recovery it leaves transactions younger than ``in_doubt_grace`` alone unless
        ``force=True``; never one whose coordinating process is still alive.
        """
        from ._in_doubt import recover_in_doubt

        grace = 0.0 if force else self.config.in_doubt_grace
        return _loop.run(recover_in_doubt([self, *others], min_age=grace))

    def resume_compensations(self, *, force: bool = False) -> list[Any]:
        """Run the saga compensations still owed on this database (the server was down when they
        ran, or the process died); returns a ``ResumedCompensation`` per compensation tried.

        Like start-up, which does this at first use, it leaves entries younger than
        ``in_doubt_grace`` seconds alone (a run in another process may still own them) unless
        ``force=True``.
        """
        from .saga_log import resume

        self.database.check_open()
        grace = 0.0 if force else self.config.in_doubt_grace
        return _loop.run(resume(self, min_age=grace))

    def pending_compensations(self) -> int:
        """How many saga compensations are still owed on this database (see resume_compensations)."""
        from .saga_log import pending

        self.database.check_open()
        count = self.database.pending_count = len(_loop.run(pending(self)))
        return count

    # -- health and lifecycle ----------------------------------------------------
    def create_tables(self) -> list[str]:
        """Open the database and create (or migrate) every model's table now, not at first use.

        It is the command that creates a missing table where ``auto_migrate`` is off (production
        and staging refuse to at first use, with ``MigrationRequiredError``). Changes to existing
        tables get the same checks as at first use (``auto_migrate``, destructive changes).
        Returns the models whose tables are ready, in definition order.
        """
        self.database.check_open()
        return _loop.run(self._create_tables())

    async def initialize(self) -> list[str]:
        """``create_tables()`` for async code (kailash-dataflow's spelling: ``await db.initialize()``)."""
        self.database.check_open()
        return await _loop.run_async(self._create_tables())

    async def _create_tables(self) -> list[str]:
        database = self.database
        await database.open()
        for table in list(database.tables.values()):
            await database.ensure_table(table, create=True)
        return list(database.tables)

    async def close_async(self) -> None:
        """``close()`` for async code (also ``async with DataFlow(...)``)."""
        await _loop.run_async(self.aclose())

    def pool_status(self) -> dict[str, Any]:
        """Connection pool figures (size, checked out, overflow...)."""
        database = self.database
        return {**database.dialect.pool_status(), "health_status": database.health.status_word()}

    def health(self) -> HealthReport:
        """Probe the database now: ping idle pooled connections, discard dead ones (see health.py)."""
        self.database.check_open()
        return _loop.run(self.database.health.check())

    async def aclose(self) -> None:
        if self.database.closed:
            return
        registry.unregister(self)
        self._stop_monitoring()
        await self.database.close()

    def close(self) -> None:
        """Release every connection and thread this instance holds. Idempotent."""
        if self.database.closed:
            return
        if not self.database.opened:
            registry.unregister(self)
            self._stop_monitoring()
            self.database.shut()
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
        await open_at_exit(dataflow)  # a transaction still open is warned about and rolled back
        await dataflow.aclose()
