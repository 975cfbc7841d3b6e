"""The result cache (result_cache.py, nodes/cached.py): never a result an uncached read would not give.

Every test compares what a cached read returns with what the database says (``cache=False``),
on SQLite (in memory and a file), DuckDB and PostgreSQL.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import threading
import time

import pytest
from conftest import url_for

from dataflow_lab import DataFlow, DataFlowError, Encrypted, LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.access import User as AccessUser
from dataflow_lab.result_cache import ALL_TABLES, CacheSettings, ResultCache

# runs alone under pytest -n: another schema's write to a same-named table is a notification too
pytestmark = pytest.mark.exclusive

BACKENDS = ("sqlite", "sqlite_file", "duckdb", "postgres")


@pytest.fixture(params=BACKENDS)
def cached_backend(request) -> str:
    return request.param


@pytest.fixture
def cdb(cached_backend, tmp_path):
    db = DataFlow(url_for(cached_backend, tmp_path), cache=True)
    yield db
    db.close()


def define(db: DataFlow):
    @db.model
    class Item:
        name: str
        qty: int
        tags: dict | None = None

    return Item


def stats(db: DataFlow) -> dict:
    return db.cache_stats()


_syncs = iter(range(1, 10**9))


def settle(db: DataFlow) -> None:
    """On PostgreSQL, wait for the notifications of writes already committed (this DataFlow's own
    come back too, and invalidate once more): psql sends one more, which arrives after them."""
    if db.database.dialect.name != "postgresql":
        return
    token = f"sync_{next(_syncs)}"
    url = db.config.database_url.split("?")[0]
    sql = f"SELECT pg_notify('dataflow_cache', '{token}')"
    subprocess.run(["psql", url, "-q", "-c", sql], check=True, capture_output=True)
    wait_for(lambda: db.database.cache.generation(token) > 0)


def same_as_database(Item, **query) -> list:
    """The cached List (read twice: a miss, then a hit) equals the uncached one; returns it."""
    first, second = Item.list(**query), Item.list(**query)
    fresh = Item.list(**query, cache=False)
    assert first == second == fresh
    return fresh


# -- switching it on ---------------------------------------------------------------------
def test_the_cache_is_off_unless_asked_for_and_off_in_every_preset(monkeypatch):
    assert DataFlow().database.cache.enabled is False
    for env in ("development", "testing", "staging", "production"):
        monkeypatch.setenv("DATAFLOW_ENV", env)
        assert DataFlow().config.cache is None, env


def test_cache_settings_take_true_or_a_dict_and_refuse_anything_else():
    assert DataFlow(cache=True).config.cache == CacheSettings(10_000, None)
    assert DataFlow(cache={"max_entries": 5, "ttl": 2}).config.cache == CacheSettings(5, 2.0)
    with pytest.raises(ValidationError, match="max_entrys.*max_entries"):
        DataFlow(cache={"max_entrys": 5})
    with pytest.raises(ValidationError, match="max_entries must be a positive int"):
        DataFlow(cache={"max_entries": 0})
    with pytest.raises(ValidationError, match="ttl must be a positive number"):
        DataFlow(cache={"ttl": -1})
    with pytest.raises(ValidationError, match="True, False or a dict"):
        DataFlow(cache="yes")


def test_a_repeated_list_is_served_from_the_cache_and_counted(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    settle(cdb)
    Item.list()
    before = stats(cdb)
    assert Item.list() == Item.list(cache=False)
    after = stats(cdb)
    assert after["on"] is True and after["off_reason"] is None
    assert after["hits"] == before["hits"] + 1
    assert after["bypassed"] == before["bypassed"] + 1  # the cache=False read
    assert after["entries"] >= 1 and 0 < after["cache_hit_rate"] <= 1


def test_read_list_and_count_are_keyed_by_filter_order_and_paging(cdb):
    Item = define(cdb)
    Item.bulk_create([{"name": n, "qty": q} for n, q in [("a", 3), ("b", 1), ("c", 2), ("d", 1)]])
    same_as_database(Item)
    assert [r["name"] for r in same_as_database(Item, filter={"qty": 1})] == ["b", "d"]
    assert [r["name"] for r in same_as_database(Item, order_by=["-qty", "name"])] == ["a", "c", "b", "d"]
    assert [r["name"] for r in same_as_database(Item, order_by="name", limit=2, offset=1)] == ["b", "c"]
    assert [r["name"] for r in same_as_database(Item, order_by="name", offset=3)] == ["d"]
    assert Item.count() == Item.count() == Item.count(cache=False) == 4
    assert Item.count({"qty": {"$gte": 2}}) == Item.count({"qty": {"$gte": 2}}, cache=False) == 2
    row = Item.get(2)
    assert Item.get(2) == row == Item.get(2, cache=False)
    assert Item.get(99, raise_on_not_found=False) is None
    assert Item.get(99, raise_on_not_found=False) is None
    with pytest.raises(DataFlowError, match="not found"):
        Item.get(99)


def test_results_are_copied_so_callers_cannot_change_what_others_read(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1, tags={"k": [1, 2]})
    first = Item.list()
    first[0]["name"] = "changed"
    first[0]["tags"]["k"].append(3)
    first.append({"bogus": True})
    second = Item.list()
    second[0]["tags"]["k"].clear()
    assert Item.list() == Item.list(cache=False)
    assert Item.list()[0]["tags"] == {"k": [1, 2]}
    row = Item.get(1)
    row["qty"] = 100
    assert Item.get(1)["qty"] == 1


# -- writes through this DataFlow ----------------------------------------------------------
def test_every_write_node_invalidates_the_model_when_it_commits(cdb):
    Item = define(cdb)
    a = Item.create(name="a", qty=1)
    writes = [
        lambda: Item.create(name="b", qty=2),
        lambda: Item.update(a["id"], qty=5),
        lambda: Item.update(a["id"], qty={"$inc": 1}),
        lambda: Item.bulk_create([{"name": "c", "qty": 3}, {"name": "d", "qty": 4}]),
        lambda: Item.bulk_update({"qty": {"$gte": 3}}, name="big"),
        lambda: Item.upsert({"id": a["id"]}, create={"name": "a", "qty": 0}, update={"qty": 9}),
        lambda: Item.bulk_upsert([{"id": a["id"], "name": "up", "qty": 7}]),
        lambda: Item.bulk_delete({"name": "big"}),
        lambda: Item.delete(a["id"]),
    ]
    for write in writes:
        same_as_database(Item)
        count = Item.count()
        write()
        same_as_database(Item)
        assert Item.count() == Item.count(cache=False)
        assert count != Item.count() or Item.list() == Item.list(cache=False)


def test_a_write_invalidates_only_its_own_model(cdb, cached_backend):
    Item = define(cdb)

    @cdb.model
    class Note:
        text: str

    Item.create(name="a", qty=1)
    Note.create(text="x")
    settle(cdb)
    Item.list(), Note.list()
    hits = stats(cdb)["hits"]
    Note.create(text="y")
    settle(cdb)
    assert Item.list() == Item.list(cache=False)
    # Item's entry outlived Note's write; a SQLite file's data_version cannot tell whose commit
    # changed the file, so any commit there empties the file's cache
    assert stats(cdb)["hits"] == hits + (0 if cached_backend == "sqlite_file" else 1)
    assert len(same_as_database(Note)) == 2


def test_a_failed_run_invalidates_nothing_and_its_writes_never_show(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    settle(cdb)
    cached = Item.list()
    invalidations = stats(cdb)["invalidations"]
    wf = WorkflowBuilder(dataflow=cdb)
    wf.add_node("ItemCreateNode", "ok", {"name": "b", "qty": 2})
    wf.add_node("ItemReadNode", "missing", {"id": 999})
    with pytest.raises(DataFlowError):
        LocalRuntime().execute(wf.build())
    assert stats(cdb)["invalidations"] == invalidations
    assert Item.list() == cached == Item.list(cache=False)


def test_inside_a_transaction_reads_see_its_own_writes_and_nothing_is_cached(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    settle(cdb)
    assert len(Item.list()) == 1
    entries = stats(cdb)["entries"]
    with pytest.raises(RuntimeError):
        with cdb.transaction():
            Item.create(name="b", qty=2)
            assert [r["name"] for r in Item.list()] == ["a", "b"]  # its own write, not the cached list
            assert Item.count() == 2
            raise RuntimeError("roll back")
    assert stats(cdb)["entries"] == entries  # nothing read inside the failed block was kept
    assert [r["name"] for r in same_as_database(Item)] == ["a"]
    with cdb.transaction():
        Item.create(name="c", qty=3)
        assert [r["name"] for r in Item.list()] == ["a", "c"]
    assert [r["name"] for r in same_as_database(Item)] == ["a", "c"]  # invalidated at the commit


def test_a_run_that_writes_reads_inside_its_transaction(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    Item.list()
    wf = WorkflowBuilder(dataflow=cdb)
    wf.add_node("ItemCreateNode", "add", {"name": "b", "qty": 2})
    wf.add_node("ItemListNode", "all", {})  # runs after the create (the order they were added)
    results, _ = LocalRuntime().execute(wf.build())
    assert [r["name"] for r in results["all"]["records"]] == ["a", "b"]
    assert [r["name"] for r in same_as_database(Item)] == ["a", "b"]


def test_a_rolled_back_savepoint_keeps_the_outer_write_and_its_invalidation(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    Item.list()
    with cdb.transaction():
        Item.create(name="outer", qty=1)
        with pytest.raises(RuntimeError):
            with cdb.transaction():
                Item.create(name="inner", qty=1)
                raise RuntimeError("inner fails")
    assert [r["name"] for r in same_as_database(Item)] == ["a", "outer"]


def test_per_node_cache_false_always_asks_the_database(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    before = stats(cdb)
    Item.list(cache=False), Item.list(cache=False), Item.count(cache=False), Item.get(1, cache=False)
    after = stats(cdb)
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
    assert after["bypassed"] == before["bypassed"] + 4


def test_sql_that_writes_invalidates_every_table_of_its_database(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    Item.list()
    cdb.sql("UPDATE items SET qty = 42", write=True)
    assert same_as_database(Item)[0]["qty"] == 42


def test_the_cache_is_keyed_by_tenant(cached_backend, tmp_path):
    db = DataFlow(url_for(cached_backend, tmp_path), cache=True)

    @db.model
    class Doc:
        title: str
        __dataflow__ = {"multi_tenant": True}

    with db.tenant("acme"):
        Doc.create(title="acme's")
        assert [d["title"] for d in Doc.list()] == ["acme's"]
    with db.tenant("globex"):
        assert Doc.list() == [] == Doc.list(cache=False)
        assert Doc.count() == 0
    with db.tenant("acme"):
        assert [d["title"] for d in Doc.list()] == ["acme's"]
    db.close()


def test_the_cache_is_keyed_by_user_and_access_control_comes_first(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    cdb.grant("viewer", Item, "read")
    settle(cdb)
    viewer, stranger = AccessUser("vic", roles=["viewer"]), AccessUser("sam", roles=["nobody"])
    assert len(Item.using(user=viewer).list()) == 1
    with pytest.raises(DataFlowError):
        Item.using(user=stranger).list()  # refused before any cached result could be served
    keys = list(cdb.database.cache._entries)
    assert any(key[2] == "vic" for key in keys)
    hits = stats(cdb)["hits"]
    with pytest.raises(DataFlowError):  # vic's entry is there, but this vic has no grant: refused
        Item.using(user=AccessUser("vic", roles=["nobody"])).list()
    assert stats(cdb)["hits"] == hits


def test_lru_and_ttl_bound_what_is_kept(cached_backend, tmp_path):
    db = DataFlow(url_for(cached_backend, tmp_path), cache={"max_entries": 2, "ttl": 0.05})
    Item = define(db)
    Item.create(name="a", qty=1)
    settle(db)
    Item.list(), Item.count(), Item.get(1)
    assert stats(db)["entries"] == 2
    time.sleep(0.1)
    hits = stats(db)["hits"]
    Item.get(1)
    assert stats(db)["hits"] == hits  # expired: asked the database again
    db.close()


# -- the ticket: a read that began before a write's commit is never kept ---------------------
def test_a_result_read_before_an_invalidation_is_not_kept():
    cache = ResultCache(CacheSettings())
    cache.watching()
    ticket = cache.ticket("items")
    cache.invalidate(["items"])
    cache.put("key", "items", [1], ticket)
    assert cache.get("key") == (False, None)
    ticket = cache.ticket("items")
    cache.invalidate([ALL_TABLES])
    cache.put("key", "items", [1], ticket)
    assert cache.get("key") == (False, None)
    cache.put("key", "items", [2], cache.ticket("items"))
    assert cache.get("key") == (True, [2])


def test_reads_racing_writes_on_other_threads_end_equal_to_the_database(cdb, cached_backend):
    Item = define(cdb)
    item = Item.create(name="a", qty=0)
    done, errors = threading.Event(), []

    def writer():
        try:
            for n in range(1, 31):
                Item.update(item["id"], qty=n)
                time.sleep(0.001)  # lets the reader in between (a run may hold the database on its thread)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    seen = []
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.append(Item.get(item["id"])["qty"])
        time.sleep(0.0005)
    thread.join()
    assert not errors
    assert seen == sorted(seen)  # never an older value after a newer one
    assert Item.get(item["id"]) == Item.get(item["id"], cache=False)
    assert Item.get(item["id"])["qty"] == 30


# -- writes from other processes -------------------------------------------------------------
def test_sqlite_file_sees_another_processes_write_before_serving(tmp_path):
    path = tmp_path / "shared.db"
    db = DataFlow(f"sqlite:///{path}", cache=True)
    Item = define(db)
    Item.create(name="a", qty=1)
    assert Item.list()[0]["qty"] == 1 and Item.list()[0]["qty"] == 1
    other = subprocess.run(["sqlite3", str(path), "UPDATE items SET qty = 2"], capture_output=True)
    assert other.returncode == 0, other.stderr
    assert Item.list() == Item.list(cache=False)
    assert Item.list()[0]["qty"] == 2
    db.close()


def test_sqlite_file_sees_another_connections_write(tmp_path):
    path = tmp_path / "shared.db"
    db = DataFlow(f"sqlite:///{path}", cache=True)
    Item = define(db)
    Item.create(name="a", qty=1)
    assert Item.count() == 1 == Item.count()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "INSERT INTO items (name, qty, created_at, updated_at) VALUES ('b', 2, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
    )
    raw.close()
    assert Item.count() == 2
    db.close()


@pytest.mark.parametrize("name", ["shared.db", "file:shared.db"])
def test_two_dataflows_of_one_sqlite_file_see_each_others_writes(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # a relative name: 'file:shared.db' is opened as the pool opens it
    first, second = DataFlow(f"sqlite:///{name}", cache=True), DataFlow(f"sqlite:///{name}", cache=True)
    ItemA, ItemB = define(first), define(second)
    ItemA.create(name="a", qty=1)
    assert len(same_as_database(ItemB)) == 1
    ItemA.create(name="b", qty=2)
    assert [r["name"] for r in same_as_database(ItemB)] == ["a", "b"]
    first.close()
    second.close()


def wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the notification never came"
        time.sleep(0.002)


def test_postgres_psql_update_invalidates_through_listen_notify(pg_url):
    db = DataFlow(pg_url, cache=True)
    Item = define(db)
    Item.create(name="a", qty=1)
    settle(db)
    assert Item.list()[0]["qty"] == 1 and stats(db)["entries"] >= 1
    cache = db.database.cache
    base = pg_url.split("?")[0]
    schema = pg_url.split("schema=")[1]
    psql = subprocess.run(
        ["psql", base, "-v", "ON_ERROR_STOP=1", "-c",
         f'UPDATE "{schema}".items SET qty = 2; SELECT pg_notify(\'dataflow_cache\', \'sync_psql\')'],
        capture_output=True, text=True,
    )  # fmt: skip
    assert psql.returncode == 0, psql.stderr
    wait_for(lambda: cache.generation("sync_psql") > 0)  # notifications arrive in commit order
    assert Item.list() == Item.list(cache=False)
    assert Item.list()[0]["qty"] == 2
    db.close()


def test_postgres_tables_carry_the_trigger_only_when_a_cache_asked(pg_url):
    db = DataFlow(pg_url, cache=True)
    Item = define(db)
    Item.count()
    rows = db.sql("SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass")
    assert list(rows["tgname"]) == ["dataflow_cache_notify"]
    db.close()
    plain = DataFlow(pg_url)

    @plain.model
    class Other:
        name: str

    Other.count()
    rows = plain.sql("SELECT tgname FROM pg_trigger WHERE tgrelid = 'others'::regclass")
    assert len(rows) == 0
    plain.close()


def test_postgres_cache_turns_itself_off_when_the_channel_drops(pg_url, caplog):
    db = DataFlow(pg_url, cache=True, monitoring=True)
    Item = define(db)
    Item.create(name="a", qty=1)
    Item.list()
    pid = db.database._watch.raw.get_server_pid()
    other = DataFlow(pg_url)
    with caplog.at_level(logging.WARNING, logger="dataflow_lab.cache"):
        other.sql(f"SELECT pg_terminate_backend({pid})", write=True)
        wait_for(lambda: not db.database.cache.on)
    other.close()
    assert "result cache turned off" in caplog.text
    dashboard = db.metrics()["result_cache"]
    assert dashboard["on"] is False and "LISTEN" in dashboard["off_reason"]
    assert dashboard["entries"] == 0
    db.sql("UPDATE items SET qty = 3", write=True)
    assert Item.list()[0]["qty"] == 3  # read from the database, not a stale entry
    on = [line for line in db.metrics_text().splitlines() if line.startswith("dataflow_cache_on{")]
    assert len(on) == 1 and on[0].endswith(" 0.0")  # Prometheus says it is off
    from dataflow_lab.notebook.monitor import cache_text

    assert cache_text(dashboard).startswith("result cache OFF: the LISTEN connection")
    db.close()


# -- the dashboard ---------------------------------------------------------------------------
def test_the_dashboard_prometheus_and_the_monitor_show_the_cache(tmp_path):
    db = DataFlow(cache=True, monitoring=True)
    Item = define(db)
    Item.create(name="a", qty=1)
    Item.list(), Item.list(), Item.list()
    dash = db.metrics()
    assert dash["database_operations"]["cache_hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
    cache = dash["result_cache"]
    assert {"hits", "misses", "invalidations", "entries", "cache_hit_rate", "on"} <= set(cache)
    assert (cache["hits"], cache["misses"], cache["entries"]) == (2, 1, 1)
    text = db.metrics_text()
    for family in ("dataflow_cache_hits", "dataflow_cache_misses", "dataflow_cache_invalidations",
                   "dataflow_cache_entries", "dataflow_cache_hit_rate"):  # fmt: skip
        assert family in text
    from dataflow_lab.notebook.monitor import MonitorPanel
    from dataflow_lab.notebook.observer import RunObserver

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemListNode", "all", {})
    workflow = wf.build()
    observer = RunObserver(workflow)
    panel = MonitorPanel(observer.snapshot(pool=True))
    assert "result cache: 2 hits, 1 misses (67% hits)" in panel.text()
    assert "result cache" in panel.html()
    db.close()


def test_a_plain_dataflow_shows_no_cache(tmp_path):
    db = DataFlow(monitoring=True)
    Item = define(db)
    Item.list()
    assert db.metrics()["database_operations"]["cache_hit_rate"] is None
    assert db.metrics()["result_cache"]["enabled"] is False
    assert "dataflow_cache_hits" not in db.metrics_text()
    db.close()


# -- encrypted models ------------------------------------------------------------------------
def test_encrypted_results_are_cached_and_no_plaintext_reaches_logs_or_metrics(
    cached_backend, tmp_path, caplog
):
    from dataflow_lab.encryption import keygen

    db = DataFlow(url_for(cached_backend, tmp_path), cache=True, monitoring=True, echo=True,
                  encryption_keys=keygen())  # fmt: skip

    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037 - a flag, not a forward reference

    with caplog.at_level(logging.DEBUG):
        Patient.create(name="p", ssn="123-45-6789")
        settle(db)
        found = Patient.list(filter={"ssn": "123-45-6789"})
        assert (
            found
            == Patient.list(filter={"ssn": "123-45-6789"})
            == Patient.list(filter={"ssn": "123-45-6789"}, cache=False)
        )
        assert found[0]["ssn"] == "123-45-6789"
        assert Patient.get(found[0]["id"])["ssn"] == "123-45-6789"
        assert stats(db)["hits"] >= 1
    shown = caplog.text + db.metrics_json() + db.metrics_text() + repr(db.metrics())
    assert "123-45-6789" not in shown
    assert all("123-45-6789" not in repr(key) for key in db.database.cache._entries)
    db.close()


def test_rotate_key_and_a_migration_empty_the_cache(tmp_path):
    from dataflow_lab.encryption import keygen

    db = DataFlow(cache=True, encryption_keys=f"{keygen('k1')},{keygen('k2')}")

    @db.model
    class Secret:
        note: Encrypted[str]

    Secret.create(note="x")
    Secret.list()
    invalidations = stats(db)["invalidations"]
    db.rotate_key("k2")
    assert stats(db)["invalidations"] > invalidations
    assert Secret.list() == Secret.list(cache=False)
    db.database.forget_ready()
    assert stats(db)["entries"] == 0
    db.close()


def test_two_dataflows_of_one_duckdb_file_invalidate_each_other(tmp_path):
    url = f"duckdb:///{tmp_path / 'one.duckdb'}"
    first, second = DataFlow(url, cache=True), DataFlow(url, cache=True)
    ItemA, ItemB = define(first), define(second)
    ItemA.create(name="a", qty=1)
    assert len(ItemB.list()) == 1 and len(ItemB.list()) == 1
    ItemA.create(name="b", qty=2)
    assert ItemB.list() == ItemB.list(cache=False)
    assert len(ItemB.list()) == 2
    plain = DataFlow(url)  # no cache of its own: its writes reach the others' all the same
    define(plain).create(name="c", qty=3)
    assert [r["name"] for r in same_as_database(ItemB)] == ["a", "b", "c"]
    for db in (first, second, plain):
        db.close()


def test_postgres_without_auto_migrate_installs_no_trigger_and_reads_uncached(pg_url):
    plain = DataFlow(pg_url)
    define(plain).create(name="a", qty=1)  # the table, made without a cache: no trigger
    plain.close()
    db = DataFlow(pg_url, cache=True, auto_migrate=False)
    Item = define(db)
    assert Item.list() == Item.list() == Item.list(cache=False)
    figures = stats(db)
    assert figures["hits"] == 0 and figures["bypassed"] == 3 and figures["on"]
    db.close()


def test_a_read_on_another_thread_never_caches_an_open_transactions_rows(cdb):
    Item = define(cdb)
    Item.create(name="a", qty=1)
    Item.list()
    began, results = threading.Event(), []

    def reader():
        began.wait()
        results.append(
            Item.list()
        )  # SQLite and DuckDB: waits for the block; PostgreSQL: reads committed rows

    thread = threading.Thread(target=reader)
    thread.start()
    with pytest.raises(RuntimeError):
        with cdb.transaction():
            Item.create(name="uncommitted", qty=2)
            began.set()
            time.sleep(0.05)  # the reader runs meanwhile (or waits for this block to end)
            raise RuntimeError("roll back")
    thread.join()
    assert [r["name"] for r in results[0]] == ["a"]
    assert [r["name"] for r in same_as_database(Item)] == ["a"]


def test_two_phase_commit_works_on_tables_with_triggers_and_tells_other_caches(pg_url, pg_url2):
    first, second = DataFlow(pg_url, cache=True), DataFlow(pg_url2, cache=True)
    watcher = DataFlow(pg_url, cache=True)  # another DataFlow, as another process, caching the first
    Item, Watched = define(first), define(watcher)

    @second.model
    class Ledger:
        note: str

    Item.count(), Ledger.count()  # both tables now carry the trigger, which NOTIFY would make unpreparable
    settle(watcher)
    assert Watched.count() == 0 == Watched.count()
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["ItemCreateNode"], "a", {"name": "x", "qty": 1})
    wf.add_node(second.nodes["LedgerCreateNode"], "b", {"note": "y"})
    events = []

    class Spy:
        def transaction(self, *, event, **future):
            events.append(event)

    runtime = LocalRuntime(transaction="2pc")
    runtime.hooks.subscribe(Spy())
    runtime.execute(wf.build())
    assert events.count("prepare") == 2
    assert Item.count() == 1 and Ledger.count() == 1
    settle(watcher)  # the announcement after COMMIT PREPARED has reached it
    assert Watched.count() == 1 == Watched.count(cache=False)
    for db in (first, second, watcher):
        db.close()
