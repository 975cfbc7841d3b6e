"""Existing databases (migrations/reflect.py): tables made with plain SQL become models with nodes."""

from __future__ import annotations

import logging

import pytest

from dataflow_lab import DataFlow, LocalRuntime, MigrationError, ValidationError, WorkflowBuilder, _loop
from dataflow_lab.migrations.live import read_table
from dataflow_lab.migrations.reflect import class_name_for

# Plain SQL, as another tool or a DBA would have written it.
SCHEMA = {
    "sqlite": [
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, "
        "in_stock BOOLEAN NOT NULL DEFAULT 1, sku VARCHAR(20) UNIQUE, shape GEOMETRY)",
        "CREATE INDEX products_name ON products (name)",
        "CREATE TABLE line_items (order_id INTEGER, product_id INTEGER, qty INTEGER, "
        "PRIMARY KEY (order_id, product_id))",
    ],
    "postgresql": [
        "CREATE TABLE products (id SERIAL PRIMARY KEY, name TEXT NOT NULL, price DOUBLE PRECISION, "
        "in_stock BOOLEAN NOT NULL DEFAULT true, sku VARCHAR(20) UNIQUE, shape point)",
        "CREATE INDEX products_name ON products (name)",
        "CREATE TABLE line_items (order_id INTEGER, product_id INTEGER, qty INTEGER, "
        "PRIMARY KEY (order_id, product_id))",
    ],
    "duckdb": [
        "CREATE SEQUENCE products_seq",
        "CREATE TABLE products (id INTEGER PRIMARY KEY DEFAULT nextval('products_seq'), name VARCHAR NOT NULL, "
        "price DOUBLE, in_stock BOOLEAN NOT NULL DEFAULT true, sku VARCHAR(20) UNIQUE, shape INTEGER[])",
        "CREATE INDEX products_name ON products (name)",
        "CREATE TABLE line_items (order_id INTEGER, product_id INTEGER, qty INTEGER, "
        "PRIMARY KEY (order_id, product_id))",
    ],
    "mysql": [
        "CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE, "
        "in_stock BOOLEAN NOT NULL DEFAULT true, sku VARCHAR(20) UNIQUE, shape POINT)",
        "CREATE INDEX products_name ON products (name(100))",
        "CREATE TABLE line_items (order_id INTEGER, product_id INTEGER, qty INTEGER, "
        "PRIMARY KEY (order_id, product_id))",
    ],
}
SEED = "INSERT INTO products (name, price, in_stock, sku) VALUES ('bolt', 0.25, true, 'B-1')"


def run_sql(db: DataFlow, *statements: str) -> None:
    async def go() -> None:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await dialect.release(conn)

    _loop.run(go())


def snapshot(db: DataFlow) -> tuple:
    async def go() -> tuple:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return tuple([await read_table(dialect, conn, t) for t in ("products", "line_items")])
        finally:
            await dialect.release(conn)

    return _loop.run(go())


def create_schema(db: DataFlow) -> None:
    run_sql(db, *SCHEMA[db.dialect], SEED.replace("true", "1") if db.dialect == "sqlite" else SEED)


def execute(db, build) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return LocalRuntime().execute(wf.build())[0]


def exercise_nodes(db: DataFlow) -> None:
    made = execute(
        db,
        lambda wf: wf.add_node(
            "ProductCreateNode", "c", {"name": "nut", "price": 0.1, "in_stock": False, "sku": "N-1"}
        ),
    )["c"]
    assert made["id"] == 2 and made["in_stock"] is False
    assert execute(db, lambda wf: wf.add_node("ProductReadNode", "r", {"id": 1}))["r"]["name"] == "bolt"
    listed = execute(db, lambda wf: wf.add_node("ProductListNode", "l", {"order_by": ["id"]}))["l"]
    assert [(r["name"], r["price"], r["sku"]) for r in listed["records"]] == [
        ("bolt", 0.25, "B-1"),
        ("nut", 0.1, "N-1"),
    ]
    updated = execute(
        db, lambda wf: wf.add_node("ProductUpdateNode", "u", {"id": 1, "fields": {"price": 0.3}})
    )
    assert updated["u"]["price"] == 0.3
    bulk = [{"name": f"p{i}", "in_stock": True} for i in range(3)]
    assert (
        execute(db, lambda wf: wf.add_node("ProductBulkCreateNode", "b", {"data": bulk}))["b"]["inserted"]
        == 3
    )


def test_reflect_turns_plain_sql_tables_into_models_with_working_nodes_and_no_ddl(db, caplog):
    create_schema(db)
    before = snapshot(db)
    with caplog.at_level(logging.INFO, logger="dataflow_lab.sql"):
        with pytest.warns(UserWarning) as warned:
            assert db.reflect() == ["Product"]
        exercise_nodes(db)
    messages = [str(w.message) for w in warned]
    assert any("line_items" in m and "primary key" in m for m in messages)
    assert any("products.shape" in m for m in messages)
    assert "shape" not in db.models["Product"].by_name
    assert {n for n in db.nodes if n.startswith("Product")} >= {"ProductCreateNode", "ProductBulkUpsertNode"}
    assert len([n for n in db.nodes if n.startswith("Product")]) == 12
    statements = [r.getMessage().lstrip().upper() for r in caplog.records if r.name == "dataflow_lab.sql"]
    assert statements  # echo was on: the log shows every statement
    assert not [s for s in statements if s.startswith(("CREATE", "ALTER", "DROP"))]
    assert snapshot(db) == before
    assert db.migrations.plan().steps == ()  # reflected tables are not migrated
    assert db.models["Product"].unique == (("sku",),)
    assert db.models["Product"].indexes == (("name",),)


@pytest.mark.parametrize("kind", ["sqlite_file", "duckdb_file", "postgres"])
def test_existing_schema_true_reflects_at_start_and_never_alters(kind, tmp_path, request):
    url = {
        "sqlite_file": f"sqlite:///{tmp_path / 'legacy.db'}",
        "duckdb_file": f"duckdb:///{tmp_path / 'legacy.duckdb'}",
    }.get(kind) or request.getfixturevalue("pg_url")
    setup = DataFlow(url)
    create_schema(setup)
    setup.close()

    with pytest.warns(UserWarning):
        db = DataFlow(url, existing_schema=True)
    assert set(db.models) == {"Product"}
    before = snapshot(db)
    exercise_nodes(db)

    @db.model
    class Product:  # a declared model that the table does not match
        name: str
        colour: str

    with pytest.raises(MigrationError, match="colour"):
        execute(db, lambda wf: wf.add_node("ProductListNode", "l", {}))
    assert snapshot(db) == before
    db.close()


def test_reflecting_a_named_table_without_an_id_key_is_refused(db):
    create_schema(db)
    with pytest.raises(ValidationError, match="line_items"):
        db.reflect(["line_items"])
    with pytest.raises(ValidationError, match="does not exist"):
        db.reflect(["nope"])


def test_existing_schema_never_creates_a_missing_table(tmp_path):
    db = DataFlow(f"sqlite:///{tmp_path / 'empty.db'}", existing_schema=True)

    @db.model
    class Thing:
        name: str

    with pytest.raises(MigrationError, match="existing_schema=True"):
        execute(db, lambda wf: wf.add_node("ThingListNode", "l", {}))
    assert db.reflect() == []
    db.close()


@pytest.mark.parametrize(
    ("table", "model"),
    [("users", "User"), ("order_items", "OrderItem"), ("people", "Person"), ("categories", "Category"),
     ("boxes", "Box"), ("status", "Status"), ("glass", "Glass")],
)  # fmt: skip
def test_class_names_are_the_table_name_in_the_singular(table, model):
    assert class_name_for(table) == model


def test_existing_schema_on_an_unreachable_database_fails_at_once_and_leaves_nothing_behind():
    from dataflow_lab.errors import DataFlowError
    from dataflow_lab.nodes import registry

    before = len(registry.live_dataflows())
    with pytest.raises(DataFlowError, match="Could not connect"):
        DataFlow("postgresql://nobody@127.0.0.1:1/none", existing_schema=True, statement_timeout=2)
    assert len(registry.live_dataflows()) == before


@pytest.mark.parametrize("kind", ["sqlite_file", "duckdb_file", "postgres"])
def test_a_table_whose_name_makes_no_model_name_is_skipped_with_a_warning(kind, tmp_path, request):
    """Issue 13, item 15: one table named 2024_orders made existing_schema=True fail for the whole database."""
    url = {
        "sqlite_file": f"sqlite:///{tmp_path / 'legacy.db'}",
        "duckdb_file": f"duckdb:///{tmp_path / 'legacy.duckdb'}",
    }.get(kind) or request.getfixturevalue("pg_url")
    setup = DataFlow(url)
    create_schema(setup)
    run_sql(setup, 'CREATE TABLE "2024_orders" (id INTEGER PRIMARY KEY, total INTEGER)')
    setup.close()

    with pytest.warns(UserWarning) as warned:
        db = DataFlow(url, existing_schema=True)
    try:
        assert set(db.models) == {"Product"}
        assert any("'2024_orders' skipped" in str(w.message) for w in warned)
        exercise_nodes(db)
        with pytest.raises(ValidationError, match="2024_orders"):
            db.reflect(["2024_orders"])  # named explicitly: refused, not skipped
    finally:
        db.close()


def test_a_reflected_numeric_column_keeps_its_digits(db):
    """A NUMERIC(10,2) column becomes Annotated[Decimal, 10, 2]: a value it would round is refused."""
    from decimal import Decimal

    ddl = {
        "sqlite": "INTEGER PRIMARY KEY",
        "postgresql": "SERIAL PRIMARY KEY",
        "mysql": "INT AUTO_INCREMENT PRIMARY KEY",
    }.get(db.dialect)
    if db.dialect == "duckdb":
        run_sql(db, "CREATE SEQUENCE prices_seq")
        ddl = "INTEGER PRIMARY KEY DEFAULT nextval('prices_seq')"
    run_sql(db, f"CREATE TABLE prices (id {ddl}, amount NUMERIC(10, 2) NOT NULL)")
    assert db.reflect() == ["Price"]
    made = execute(db, lambda wf: wf.add_node("PriceCreateNode", "c", {"amount": Decimal("0.1")}))["c"]
    assert made["amount"] == Decimal("0.1")  # (SQLite's NUMERIC affinity stores REAL 0.1: read as 0.1)
    made = execute(db, lambda wf: wf.add_node("PriceCreateNode", "c", {"amount": Decimal("1.5")}))["c"]
    assert made["amount"] == Decimal("1.5")
    with pytest.raises(ValidationError, match="Price.*'amount'.*rounded"):
        execute(db, lambda wf: wf.add_node("PriceCreateNode", "c", {"amount": Decimal("1.234")}))
    found = execute(db, lambda wf: wf.add_node("PriceListNode", "l", {"filter": {"amount": {"$gt": 1}}}))
    assert [r["amount"] for r in found["l"]["records"]] == [Decimal("1.5")]
