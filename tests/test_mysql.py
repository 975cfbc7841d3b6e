"""MySQL and MariaDB (dialects/mysql.py): fidelity, strictness, transient errors, the pool, the
migration lock. Run on the server of DATAFLOW_TEST_MYSQL_URL (.ci/mysql.sh starts one)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any

import pytest
import sqlalchemy as sa

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder, _loop
from dataflow_lab.dialects.mysql import MySQLDialect, mysql_type
from dataflow_lab.errors import DataFlowError, NodeExecutionError
from dataflow_lab.retry import RetryPolicy


def run(db: DataFlow, node: str, params: dict[str, Any]) -> Any:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return LocalRuntime().execute(wf.build())[0]["n"]


def raw(db: DataFlow, sql: str) -> list[tuple]:
    async def go() -> list[tuple]:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await dialect.release(conn)

    return _loop.run(go())


@pytest.fixture
def db(my_url):
    dataflow = DataFlow(my_url)
    yield dataflow
    dataflow.close()


def test_values_round_trip_exactly_emoji_microseconds_in_utc_decimals_booleans_and_json(db):
    @db.model
    class Note:
        text: str
        at: dt.datetime
        amount: Annotated[Decimal, 30, 10]
        done: bool
        meta: dict
        key: uuid.UUID

    at = dt.datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    made = run(db, "NoteCreateNode", {"text": "🙂 naïve ß", "at": at, "amount": Decimal("12345678901234567890.0000000001"),
               "done": False, "meta": {"a": [1, 2.5, None], "ü": "😀"}, "key": uuid.UUID(int=7)})  # fmt: skip
    row = run(db, "NoteReadNode", {"id": made["id"]})
    assert row["text"] == "🙂 naïve ß"
    assert row["at"] == at and row["at"].tzinfo == dt.UTC and row["at"].hour == 7  # stored as UTC
    assert row["amount"] == Decimal("12345678901234567890.0000000001")
    assert row["done"] is False and type(row["done"]) is bool
    assert row["meta"] == {"a": [1, 2.5, None], "ü": "😀"}
    assert row["key"] == uuid.UUID(int=7)
    assert raw(db, "SELECT at FROM notes") == [(dt.datetime(2024, 3, 1, 7, 30, 45, 123456),)]


def test_strict_mode_refuses_a_bad_value_instead_of_truncating_it(db):
    @db.model
    class Item:
        qty: int

    run(db, "ItemCreateNode", {"qty": 1})
    with pytest.raises(NodeExecutionError, match="(?i)incorrect|truncated"):
        db.sql("UPDATE items SET qty = 'many'", write=True)
    assert [r["qty"] for r in run(db, "ItemListNode", {})["records"]] == [1]


def test_an_infinite_float_is_refused_naming_mysql(db):
    @db.model
    class Reading:
        value: float

    with pytest.raises(NodeExecutionError, match="MySQL's DOUBLE holds no infinity"):
        run(db, "ReadingCreateNode", {"value": float("inf")})
    assert run(db, "ReadingCountNode", {})["count"] == 0


def test_like_and_regex_are_case_sensitive_and_ilike_folds_case(db):
    @db.model
    class Word:
        text: str

    run(db, "WordBulkCreateNode", {"data": [{"text": t} for t in ("Apple", "apple", "APPLE pie", "Äpfel")]})

    def texts(where: dict) -> list[str]:
        return [r["text"] for r in run(db, "WordListNode", {"filter": where})["records"]]

    assert texts({"text": {"$like": "app%"}}) == ["apple"]
    assert texts({"text": {"$ilike": "app%"}}) == ["Apple", "apple", "APPLE pie"]
    assert texts({"text": {"$ilike": "äPF%"}}) == ["Äpfel"]
    assert texts({"text": {"$regex": "^A"}}) == ["Apple", "APPLE pie"]
    assert texts({"text": "apple "}) == []  # no padding: 'apple' is not 'apple '


def test_mysql_and_mariadb_urls_pick_this_dialect(my_url):
    for scheme in ("mariadb", "mysql+asyncmy"):
        other = DataFlow(scheme + my_url[len("mysql") :])
        try:
            assert isinstance(other.database.dialect, MySQLDialect)
        finally:
            other.close()


def test_reflected_and_declared_types_are_spelled_alike():
    assert mysql_type("tinyint(1)") == mysql_type("BOOL") == "BOOLEAN"
    assert mysql_type("bigint(20)") == mysql_type("BIGINT") == "BIGINT"
    assert mysql_type("longtext") == mysql_type("LONGTEXT") == mysql_type("TEXT")
    assert mysql_type("datetime(6)") == "DATETIME(6)"
    assert mysql_type("decimal(38,18)") == mysql_type("NUMERIC(38, 18)") == "DECIMAL(38,18)"
    assert mysql_type("varchar(255)") == "VARCHAR(255)"


def test_a_migration_after_a_restart_sees_no_difference(my_url):
    """Reflection normalizes MariaDB's spellings (tinyint(1), current_timestamp(6), JSON as LONGTEXT)."""

    def define(db: DataFlow) -> None:
        @db.model
        class Thing:
            name: str
            flag: bool = True
            tags: list = []  # noqa: RUF012 - a field's default, copied per row
            amount: Decimal = Decimal("1.5")
            at: dt.datetime | None = None
            __dataflow__ = {"unique": ["name"], "indexes": [["flag", "name"]]}

    first = DataFlow(my_url)
    define(first)
    run(first, "ThingCreateNode", {"name": "a"})
    first.close()
    again = DataFlow(my_url)
    define(again)
    try:
        assert str(again.migrations.plan()) == "MigrationPlan(nothing to do)"
    finally:
        again.close()


# -- transient errors -------------------------------------------------------------------------
async def _connect(url: str) -> Any:
    import asyncmy

    parts = sa.engine.make_url(url)
    return await asyncmy.connect(host=parts.host, port=parts.port, user=parts.username,
                                 password=parts.password or "", database=parts.database, autocommit=True)  # fmt: skip


async def _sql(conn: Any, sql: str) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)


def test_only_asyncmy_errors_are_read_as_transient():
    assert (
        MySQLDialect.transient_reason(ValueError(1213, "Deadlock found")) is None
    )  # the end-to-end tests below


class _Retries:
    """A hook that records why the runtime retried."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.retried = threading.Event()

    def retry(self, *, reason: str, **_: Any) -> None:
        self.reasons.append(reason)
        self.retried.set()


def _accounts(db: DataFlow) -> None:
    @db.model
    class Account:
        owner: str
        balance: int

    run(db, "AccountBulkCreateNode", {"data": [{"owner": "a", "balance": 0}, {"owner": "b", "balance": 0}]})


def _balances(db: DataFlow) -> list[int]:
    return [r["balance"] for r in run(db, "AccountListNode", {})["records"]]


def test_a_deadlock_between_two_workflows_is_retried_as_a_whole_and_both_succeed(db):
    _accounts(db)
    spy = _Retries()
    runtime = LocalRuntime(hooks=[spy], retry=RetryPolicy(attempts=5, base_delay=0.01))
    barrier, calls = threading.Barrier(2), itertools.count()

    def hold(x: int) -> int:
        if next(calls) < 2:  # the first attempts: each holds one row, then asks for the other's
            try:
                barrier.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass
        return x

    errors: list[BaseException] = []

    def crossing(first: int, second: int, value: int) -> None:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountUpdateNode", "first", {"id": first, "fields": {"balance": value}})
        wf.add_node(hold, "hold", {})
        wf.add_connection("first", "balance", "hold", "x")
        wf.add_node("AccountUpdateNode", "second", {"id": second, "fields": {"balance": value}})
        try:
            runtime.execute(wf.build())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=crossing, args=(1, 2, 1)),
        threading.Thread(target=crossing, args=(2, 1, 2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and "deadlock" in spy.reasons
    assert _balances(db) in ([1, 1], [2, 2])  # one whole transfer won: nothing was half-applied


def test_a_lock_wait_timeout_is_retried_until_the_row_is_free(my_url):
    db = DataFlow(my_url, pool_size=1, max_overflow=0, min_connections=0)
    try:
        _accounts(db)
        raw(db, "SET SESSION innodb_lock_wait_timeout = 1")  # on the pool's one connection
        locked, spy = threading.Event(), _Retries()

        async def holder() -> None:  # another client holds row 1 until the runtime has retried
            conn = await _connect(my_url)
            try:
                await _sql(conn, "START TRANSACTION")
                await _sql(conn, "UPDATE accounts SET balance = -1 WHERE id = 1")
                locked.set()
                await asyncio.to_thread(spy.retried.wait, 30)
                await _sql(conn, "ROLLBACK")
            finally:
                conn.close()

        thread = threading.Thread(target=asyncio.run, args=(holder(),))
        thread.start()
        assert locked.wait(10)
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountUpdateNode", "pay", {"id": 1, "fields": {"balance": 5}})
        LocalRuntime(hooks=[spy], retry=RetryPolicy(attempts=5, base_delay=0.01)).execute(wf.build())
        thread.join(10)
        assert "lock wait timeout" in spy.reasons and _balances(db) == [5, 0]
    finally:
        db.close()


# -- the pool ---------------------------------------------------------------------------------
def _connection_id(db: DataFlow) -> int:
    return raw(db, "SELECT CONNECTION_ID()")[0][0]


def test_pool_pre_ping_replaces_a_connection_the_server_dropped_at_wait_timeout(my_url):
    db = DataFlow(my_url, pool_size=1, max_overflow=0, pool_pre_ping=True, min_connections=0)
    try:

        @db.model
        class Item:
            name: str

        run(db, "ItemCreateNode", {"name": "before"})
        first = _connection_id(db)
        db.sql("SET SESSION wait_timeout = 1", write=True)  # the server drops this one when idle 1 s
        time.sleep(2.5)
        assert run(db, "ItemCreateNode", {"name": "after"})["name"] == "after"  # no error: pinged first
        assert _connection_id(db) != first
    finally:
        db.close()


def test_pool_recycle_opens_a_new_connection_for_an_old_one(my_url):
    db = DataFlow(my_url, pool_size=1, max_overflow=0, pool_recycle=1, min_connections=0)
    try:
        first = _connection_id(db)
        assert _connection_id(db) == first  # the same one, while young
        time.sleep(1.5)
        assert _connection_id(db) != first
    finally:
        db.close()


# -- migrations: DDL is not transactional -------------------------------------------------------
def test_the_migration_lock_is_a_named_lock_released_with_its_transaction(db):
    async def go() -> list[Any]:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        other = await dialect.acquire()
        try:
            await conn.begin()
            await conn.fetch(dialect.ddl_lock_sql("dataflow_migrations"))
            held = (await other.fetch("SELECT IS_FREE_LOCK('dataflow_lab:dataflow_migrations')"))[0][0]
            await conn.commit()
            free = (await other.fetch("SELECT IS_FREE_LOCK('dataflow_lab:dataflow_migrations')"))[0][0]
            return [held, free]
        finally:
            await dialect.release(conn)
            await dialect.release(other)

    assert _loop.run(go()) == [0, 1]


def test_a_table_first_used_inside_a_transaction_block_does_not_commit_the_block(db):
    @db.model
    class Early:
        name: str

    @db.model
    class Late:
        name: str

    run(db, "EarlyCreateNode", {"name": "kept"})
    with pytest.raises(DataFlowError, match="boom"), db.transaction():
        run(db, "EarlyCreateNode", {"name": "undone"})
        run(db, "LateCreateNode", {"name": "undone too"})  # CREATE TABLE here would commit the block
        raise DataFlowError("boom")
    assert [r["name"] for r in run(db, "EarlyListNode", {})["records"]] == ["kept"]
    assert run(db, "LateCountNode", {})["count"] == 0


def test_a_decimal_wider_than_mysql_holds_is_refused_naming_the_field(db):
    with pytest.raises(ValidationError, match="Wide.*'amount'.*65 digits"):

        @db.model
        class Wide:
            amount: Annotated[Decimal, 70, 10]

        db.create_tables()


# -- bulk -------------------------------------------------------------------------------------
def test_bulk_create_sends_multi_row_inserts_within_the_statement_budget_all_or_nothing(my_url, monkeypatch):
    from dataflow_lab.dialects.mysql_connection import MySQLConnection

    sizes: list[int] = []
    real = MySQLConnection.execute

    async def spy(self, sql, params=()):
        if sql.startswith("INSERT INTO docs"):
            sizes.append(len(params) // 4)  # rows in this statement (name, body, created_at, updated_at)
        return await real(self, sql, params)

    monkeypatch.setattr(MySQLConnection, "execute", spy)
    db = DataFlow(my_url, bulk_memory_mb=1)  # statements of at most 256 KB of SQL
    try:

        @db.model
        class Doc:
            name: str
            body: str
            __dataflow__ = {"unique": ["name"]}

        rows = [{"name": f"d{i}", "body": "x" * 1000} for i in range(2000)]  # about 2 MB
        assert run(db, "DocBulkCreateNode", {"data": rows, "progress": False})["inserted"] == 2000
        assert sum(sizes) == 2000 and len(sizes) >= 8 and max(sizes) <= 256 * 1024 // 2000
        sizes.clear()
        more = [{"name": f"e{i}", "body": "y" * 1000} for i in range(1999)] + [{"name": "d0", "body": "dup"}]
        with pytest.raises(NodeExecutionError, match="(?i)duplicate"):
            run(db, "DocBulkCreateNode", {"data": more, "progress": False})
        assert len(sizes) >= 8  # the duplicate was in the last statement: the earlier ones are undone
        assert run(db, "DocCountNode", {})["count"] == 2000
    finally:
        db.close()


def test_bulk_upsert_counts_inserts_and_updates_exactly(db):
    @db.model
    class Stock:
        sku: str
        qty: int
        __dataflow__ = {"unique": ["sku"]}

    run(db, "StockBulkCreateNode", {"data": [{"sku": f"s{i}", "qty": 1} for i in range(10)]})
    data = [{"sku": f"s{i}", "qty": 1 if i < 3 else 2} for i in range(15)]  # 3 unchanged, 7 changed, 5 new
    assert run(db, "StockBulkUpsertNode", {"data": data, "conflict_on": ["sku"]}) == {
        "inserted": 5,
        "updated": 10,
    }
    assert sorted(r["qty"] for r in run(db, "StockListNode", {})["records"]) == [1] * 3 + [2] * 12


# -- MySQL 8: no INSERT ... RETURNING, no DELETE ... RETURNING ----------------------------------
@pytest.mark.parametrize("consecutive_ids", [True, False], ids=["multi-row", "row-by-row"])
def test_without_returning_as_on_mysql_8_every_write_reads_back_what_it_wrote(my_url, monkeypatch,
                                                                              consecutive_ids):  # fmt: skip
    """MariaDB made to take MySQL 8's path: no statement sent carries RETURNING, and the rows, ids
    and audit images are the same as with it (ids from LAST_INSERT_ID(); row by row where InnoDB
    may interleave ids, innodb_autoinc_lock_mode 2)."""
    from dataflow_lab.dialects.mysql_connection import MySQLConnection

    sent: list[str] = []
    real = MySQLConnection._run

    async def spy(self, sql, params):
        sent.append(sql)
        return await real(self, sql, params)

    monkeypatch.setattr(MySQLConnection, "_run", spy)
    db = DataFlow(my_url, min_connections=0)
    db.database.dialect.returns = False
    if not consecutive_ids:
        db.database.dialect._id_step = None
    try:

        @db.model
        class User:
            name: str
            age: int = 0
            __dataflow__ = {"audit_log": True, "unique": [["name"]]}

        made = run(db, "UserCreateNode", {"name": "ann", "age": 1})
        assert run(db, "UserReadNode", {"id": made["id"]}) == made
        found = run(
            db, "UserUpsertNode", {"where": {"name": "ann"}, "create": {"age": 5}, "update": {"age": 2}}
        )
        assert (found["record"]["id"], found["record"]["age"], found["created"]) == (made["id"], 2, False)
        new = run(
            db, "UserUpsertNode", {"where": {"name": "bob"}, "create": {"age": 3}, "update": {"age": 9}}
        )
        assert new["created"] is True and new["record"]["age"] == 3
        bulk = run(db, "UserBulkCreateNode", {"data": [{"name": f"u{i}", "age": i} for i in range(5)],
                                              "return_ids": True})  # fmt: skip
        assert bulk["inserted"] == 5 and len(set(bulk["ids"])) == 5
        by_id = {r["id"]: r["name"] for r in run(db, "UserListNode", {})["records"]}
        assert [by_id[i] for i in bulk["ids"]] == [f"u{i}" for i in range(5)]
        assert run(db, "UserBulkDeleteNode", {"filter": {"age": {"$gte": 3}}}) == {"deleted": 3}
        assert run(db, "UserDeleteNode", {"id": made["id"]})["deleted"] is True
        assert sorted(by_id) == sorted([made["id"], new["record"]["id"], *bulk["ids"]])
        entries = db.audit("User")
        created = [e for e in entries if e.operation == "bulk_create"]
        assert [(e.record_id, e.after["name"]) for e in created] == [(str(i), by_id[i]) for i in bulk["ids"]]
        deleted = sorted(e.before["name"] for e in entries if e.operation == "bulk_delete")
        assert deleted == ["bob", "u3", "u4"] and all(
            e.after is None for e in entries if "delete" in e.operation
        )
        assert [r["name"] for r in run(db, "UserListNode", {})["records"]] == ["u0", "u1", "u2"]

        @db.model
        class Tag:
            id: str  # an id the caller gives: the row is read back by it
            label: str

        assert run(db, "TagCreateNode", {"id": "t1", "label": "x"})["label"] == "x"
        assert run(db, "TagDeleteNode", {"id": "t1"})["deleted"] is True
        assert run(db, "TagCountNode", {})["count"] == 0
        assert sent and not [s for s in sent if " RETURNING " in s]
    finally:
        db.close()


def test_the_server_is_told_apart_by_its_version_string():
    from dataflow_lab.dialects.mysql import server_returns

    assert server_returns("5.5.5-10.11.6-MariaDB-0+deb12u1") is True
    assert server_returns("10.5.2-MariaDB") is True
    assert server_returns("10.4.30-MariaDB") is False  # INSERT ... RETURNING came in 10.5
    assert server_returns("8.0.36") is False and server_returns("8.4.0-commercial") is False


def test_statements_keep_within_the_bind_limit_and_the_bytes_allowed():
    from dataflow_lab.dialects.mysql_bulk import statements

    rows = [("x" * 10, i) for i in range(1000)]  # about 2 * 10 + 4 + 28 = 52 bytes of SQL a row
    assert [len(p) for p in statements(rows, 2, 100, 10**9)] == [50] * 20  # 100 binds: 50 rows of 2
    by_bytes = [len(p) for p in statements(rows, 2, 10**6, 52 * 9)]
    assert max(by_bytes) == 9 and sum(by_bytes) == 1000
    assert [len(p) for p in statements([("y" * 10**6,)], 1, 100, 1000)] == [1]  # a row too big goes alone


def test_a_small_max_allowed_packet_makes_smaller_statements(my_url, monkeypatch):
    from dataflow_lab.dialects.mysql_connection import MySQLConnection

    sizes: list[int] = []
    real = MySQLConnection.execute

    async def spy(self, sql, params=()):
        if sql.startswith("INSERT INTO notes"):
            sizes.append(len(sql) + sum(len(str(p)) for p in params))
        return await real(self, sql, params)

    monkeypatch.setattr(MySQLConnection, "execute", spy)
    db = DataFlow(my_url, min_connections=0)
    db.database.dialect._packet = 2**16  # as a server whose max_allowed_packet is 64 KB says
    try:

        @db.model
        class Note:
            text: str

        assert (
            run(db, "NoteBulkCreateNode", {"data": [{"text": "z" * 200} for _ in range(600)]})["inserted"]
            == 600
        )
        assert len(sizes) >= 4 and max(sizes) <= 2**15  # half the packet: 120 KB in 32 KB statements
        assert run(db, "NoteCountNode", {})["count"] == 600
    finally:
        db.close()
