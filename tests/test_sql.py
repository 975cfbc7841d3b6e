"""db.sql / db.asql: your own SQL, values bound, read-only unless asked, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from dataflow_lab import (
    AccessDeniedError,
    DataFlow,
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    User,
    ValidationError,
    WorkflowBuilder,
    _loop,
)
from dataflow_lab.sqltext import bind, braces_to_names, parameter_names, statements, writes


@pytest.fixture
def items(db: DataFlow) -> DataFlow:
    @db.model
    class Item:
        name: str
        qty: int = 0

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemBulkCreateNode", "load", {"data": [{"name": n, "qty": q} for n, q in
                                                          [("apple", 3), ("pear", 5), ("fig", 0)]]})  # fmt: skip
    LocalRuntime().execute(wf.build())
    return db


def names(frame) -> list[str]:
    return list(frame["name"])


def test_a_select_returns_a_dataframe_with_bound_parameters(items):
    frame = items.sql("SELECT name, qty FROM items WHERE qty >= :low ORDER BY name", low=3)
    assert list(frame.columns) == ["name", "qty"]
    assert names(frame) == ["apple", "pear"]
    assert list(frame["qty"]) == [3, 5]
    assert frame.attrs["rows_affected"] is None
    assert frame.attrs["elapsed_s"] > 0


def test_a_value_is_bound_never_pasted_into_the_text(items):
    hostile = "x' OR '1'='1"
    assert len(items.sql("SELECT * FROM items WHERE name = :n", n=hostile)) == 0
    assert names(items.sql("SELECT name FROM items WHERE name = :n", {"n": "fig"})) == ["fig"]


def test_a_list_binds_one_parameter_per_item(items):
    frame = items.sql("SELECT name FROM items WHERE name IN (:wanted) ORDER BY name", wanted=["fig", "pear"])
    assert names(frame) == ["fig", "pear"]


def test_a_model_table_is_there_before_any_node_ran(db):
    @db.model
    class Note:
        text: str

    assert len(db.sql("SELECT * FROM notes")) == 0


def test_a_write_is_refused_by_default_with_the_way_to_allow_it(items):
    with pytest.raises(ValidationError, match="writes, and SQL runs read-only") as caught:
        items.sql("DELETE FROM items")
    assert "write=True" in caught.value.hint
    assert len(items.sql("SELECT * FROM items")) == 3


@pytest.mark.parametrize(
    "query", ["UPDATE items SET qty = 0", "WITH gone AS (DELETE FROM items RETURNING id) SELECT * FROM gone"]
)
def test_a_write_hidden_in_a_read_is_refused(items, query, backend):
    with pytest.raises(ValidationError):
        items.sql(query)
    assert list(items.sql("SELECT qty FROM items ORDER BY id")["qty"]) == [3, 5, 0]


def test_the_database_itself_refuses_a_write_on_the_read_only_path(items):
    """Past the keyword check (called directly): the database, not the guess, refuses the write."""

    async def sneak():
        dialect = await items.database.open()
        conn = await dialect.acquire()
        try:
            await conn.query_read_only("INSERT INTO items (name, qty) VALUES ('sneaky', 1)")
        finally:
            await dialect.release(conn)

    with pytest.raises(Exception, match="(?i)read.?only|writes"):
        _loop.run(sneak())
    assert "sneaky" not in names(items.sql("SELECT name FROM items"))
    # the connection went back read-write: a later write through a node works
    wf = WorkflowBuilder(dataflow=items)
    wf.add_node("ItemCreateNode", "c", {"name": "later"})
    LocalRuntime().execute(wf.build())
    assert "later" in names(items.sql("SELECT name FROM items"))


def test_write_true_reports_rows_affected(items):
    updated = items.sql("UPDATE items SET qty = qty + 1 WHERE qty > :q", q=0, write=True)
    assert list(updated.columns) == ["rows_affected"]
    assert updated.attrs["rows_affected"] == 2
    assert list(updated["rows_affected"]) == [2]
    now = "CURRENT_TIMESTAMP"
    inserted = items.sql(
        f"INSERT INTO items (name, qty, created_at, updated_at) VALUES (:a, 1, {now}, {now}), (:b, 2, {now}, {now})",
        a="kiwi", b="lime", write=True,
    )  # fmt: skip
    assert inserted.attrs["rows_affected"] == 2
    deleted = items.sql("DELETE FROM items WHERE qty = 0", write=True)
    assert deleted.attrs["rows_affected"] == 1
    assert sorted(names(items.sql("SELECT name FROM items"))) == ["apple", "kiwi", "lime", "pear"]


def test_write_true_with_returning_gives_the_rows(items):
    if items.dialect == "mysql":  # MariaDB has INSERT and DELETE ... RETURNING, no UPDATE ... RETURNING
        frame = items.sql("DELETE FROM items WHERE name = :n RETURNING name, qty", n="fig", write=True)
        assert frame.to_dict("records") == [{"name": "fig", "qty": 0}]
        return
    frame = items.sql("UPDATE items SET qty = 9 WHERE name = :n RETURNING name, qty", n="fig", write=True)
    assert frame.to_dict("records") == [{"name": "fig", "qty": 9}]


def test_sql_joins_a_transaction_block_and_rolls_back_with_it(items):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), items.transaction():
        wf = WorkflowBuilder(dataflow=items)
        wf.add_node("ItemCreateNode", "c", {"name": "inside", "qty": 1})
        LocalRuntime().execute(wf.build())
        assert "inside" in names(items.sql("SELECT name FROM items"))  # sees the block's own write
        items.sql("UPDATE items SET qty = 100", write=True)
        assert set(items.sql("SELECT qty FROM items")["qty"]) == {100}
        raise Boom
    assert list(items.sql("SELECT qty FROM items ORDER BY id")["qty"]) == [3, 5, 0]


def test_a_read_inside_a_block_leaves_the_block_able_to_write(items):
    with items.transaction():
        items.sql("SELECT count(*) AS n FROM items")
        items.sql("UPDATE items SET qty = 1 WHERE name = 'fig'", write=True)
    assert list(items.sql("SELECT qty FROM items WHERE name = 'fig'")["qty"]) == [1]


def test_a_failed_write_changes_nothing(items):
    with pytest.raises(NodeExecutionError, match="(?i)null"):  # fig's row fails after the others changed
        bang = "CONCAT(name, '!')" if items.dialect == "mysql" else "name || '!'"  # MySQL's || is OR
        items.sql(f"UPDATE items SET name = CASE WHEN qty = 0 THEN NULL ELSE {bang} END", write=True)
    assert names(items.sql("SELECT name FROM items ORDER BY id")) == ["apple", "pear", "fig"]


def test_missing_and_unused_parameters_are_named(items):
    with pytest.raises(ValidationError, match=r":low has no value"):
        items.sql("SELECT * FROM items WHERE qty > :low")
    with pytest.raises(ValidationError, match=r"'lo' is given but the query has no :lo.*low"):
        items.sql("SELECT * FROM items WHERE qty > :low", lo=1, low=2)


def test_two_statements_are_refused(items):
    with pytest.raises(ValidationError, match="2 statements"):
        items.sql("SELECT 1; SELECT 2")


def test_asql_is_the_async_form(items):
    async def main():
        return await items.asql("SELECT count(*) AS n FROM items WHERE qty > :q", q=0)

    assert int(asyncio.run(main())["n"][0]) == 2


def test_access_control_needs_an_sql_grant_on_every_model(items):
    items.grant("clerk", "Item", "all")
    clerk = User("ann", roles=["clerk"])
    with pytest.raises(AccessDeniedError, match="may not run its own SQL"):
        items.sql("SELECT * FROM items", user=clerk)
    with pytest.raises(ValidationError, match='granted on "\\*"'):
        items.grant("analyst", "Item", "sql")
    items.grant("analyst", "*", "sql")
    analyst = User("bo", roles=["analyst"])
    assert len(items.sql("SELECT * FROM items", user=analyst)) == 3
    with pytest.raises(AccessDeniedError, match="sql_write"):
        items.sql("DELETE FROM items", user=analyst, write=True)


def test_postgres_refuses_a_side_effect_the_keywords_cannot_see(backend, items):
    if backend != "postgres":
        pytest.skip("a sequence is PostgreSQL's")
    items.sql("CREATE SEQUENCE counter", write=True)
    with pytest.raises(Exception, match="read-only transaction"):
        items.sql("SELECT nextval('counter') AS n")
    assert int(items.sql("SELECT nextval('counter') AS n", write=True)["n"][0]) == 1


# -- the text scanner ---------------------------------------------------------------------------


def test_parameters_are_found_outside_strings_comments_and_casts():
    query = "SELECT ':no', \"a:b\", x::int, $$ :dollar $$ FROM t -- :comment\n WHERE a = :a AND b = :b /* :c */ AND c = :a"
    assert parameter_names(query) == ["a", "b"]


def test_bind_gives_each_dialect_its_placeholders():
    assert bind("a = :x AND b IN (:ys)", {"x": 1, "ys": (2, 3)}, lambda i: "?") == (
        "a = ? AND b IN (?, ?)",
        [1, 2, 3],
    )
    assert bind("a = :x OR b = :x", {"x": 1}, lambda i: f"${i + 1}").sql == "a = $1 OR b = $2"
    with pytest.raises(ValidationError, match="empty list"):
        bind("a IN (:ys)", {"ys": []}, lambda i: "?")


def test_braces_become_bound_names_and_never_text():
    sql, values = braces_to_names(
        "SELECT * FROM t WHERE name = {who} AND note = '{not_me}'", {"who": "x'--"}.__getitem__
    )
    assert sql == "SELECT * FROM t WHERE name = :who AND note = '{not_me}'"
    assert values == {"who": "x'--"}


@pytest.mark.parametrize(
    "query, expected",
    [
        ("SELECT * FROM t", False),
        ("  -- a comment\n select 1", False),
        ("SELECT * FROM t FOR UPDATE", False),
        ("SELECT replace(name, 'a', 'b') FROM t", False),
        ("PRAGMA table_info(t)", False),
        ("EXPLAIN SELECT 1", False),
        ("SHOW TABLES", False),
        ("INSERT INTO t VALUES (1)", True),
        ("EXPLAIN ANALYZE DELETE FROM t", True),
        ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", True),
        ("SELECT * INTO t2 FROM t", True),
        ("PRAGMA journal_mode = wal", True),
        ("CREATE TABLE t (a int)", True),
        ("SET search_path = x", True),
        ("VACUUM", True),
    ],
)
def test_writes_reads_the_keywords(query, expected):
    assert writes(query) is expected


def test_statements_split_at_semicolons_outside_strings():
    assert statements("SELECT ';'; SELECT 2;;  ") == ["SELECT ';'", "SELECT 2"]


# -- engine="duckdb": DuckDB over the database's tables ---------------------------------------------

GROUPED = "SELECT name, sum(qty) AS qty FROM items WHERE qty >= :low GROUP BY name ORDER BY name"


def _scanners_load() -> str | None:
    """Why DuckDB's sqlite and postgres scanners cannot load here (None: they can)."""
    import duckdb

    from dataflow_lab.dialects.scanners import load_scanner

    try:
        for name in ("sqlite", "postgres"):
            load_scanner(duckdb.connect(), name)
    except DataFlowError as exc:
        return exc.message
    return None


SCANNERS_MISSING = _scanners_load()


@pytest.fixture
def scanned(items, backend):
    """``items``, where engine="duckdb" can read it: DuckDB itself, or a scanner that loads."""
    if backend != "duckdb" and SCANNERS_MISSING:
        pytest.skip(f"DuckDB's scanners cannot load on this machine: {SCANNERS_MISSING}")
    return items


def test_duckdb_engine_gives_the_databases_own_answer(scanned):
    plain = scanned.sql(GROUPED, low=0).to_dict("records")
    assert scanned.sql(GROUPED, low=0, engine="duckdb").to_dict("records") == plain
    assert names(scanned.sql(GROUPED, low=4, engine="duckdb")) == ["pear"]


def test_duckdb_engine_sees_each_committed_change(scanned):
    before = len(scanned.sql("SELECT * FROM items", engine="duckdb"))
    scanned.sql("DELETE FROM items WHERE name = 'fig'", write=True)
    assert len(scanned.sql("SELECT * FROM items", engine="duckdb")) == before - 1


def test_duckdb_engine_reads_only_and_never_inside_a_block(items, backend):
    if backend == "duckdb":
        pytest.skip("on DuckDB itself engine='duckdb' is the plain path, transactions included")
    with pytest.raises(ValidationError, match="reads only"):
        items.sql("DELETE FROM items", engine="duckdb")
    with pytest.raises(ValidationError, match="reads only"):
        items.sql("SELECT 1", engine="duckdb", write=True)
    with pytest.raises(ValidationError, match="would not see the block's writes"), items.transaction():
        items.sql("SELECT 1", engine="duckdb")
    with pytest.raises(ValidationError, match="no engine 'duck'"):
        items.sql("SELECT 1", engine="duck")


def test_duckdb_engine_on_a_sqlite_file(tmp_path):
    if SCANNERS_MISSING:
        pytest.skip(f"DuckDB's scanners cannot load on this machine: {SCANNERS_MISSING}")
    db = DataFlow(f"sqlite:///{tmp_path}/file.db")

    @db.model
    class Item:
        name: str
        qty: int = 0

    db.sql("SELECT 1 AS one")  # makes the table
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemBulkCreateNode", "load", {"data": [{"name": "a", "qty": 1}, {"name": "a", "qty": 2}]})
    LocalRuntime().execute(wf.build())
    assert db.sql(GROUPED, low=0, engine="duckdb").to_dict("records") == [{"name": "a", "qty": 3}]
    db.close()


def test_duckdb_engine_on_a_sqlite_file_that_has_no_table_yet(tmp_path):
    if SCANNERS_MISSING:
        pytest.skip(f"DuckDB's scanners cannot load on this machine: {SCANNERS_MISSING}")
    db = DataFlow(f"sqlite:///{tmp_path}/new.db")
    assert db.sql("SELECT 42 AS answer", engine="duckdb").to_dict("records") == [{"answer": 42}]
    db.close()


def test_a_dataflow_that_ran_sql_is_freed_after_close():
    import gc
    import weakref

    db = DataFlow()
    db.sql("SELECT 1 AS one")
    db.close()
    gone = weakref.ref(db)
    del db
    gc.collect()
    assert gone() is None
