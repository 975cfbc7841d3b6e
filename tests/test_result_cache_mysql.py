"""The result cache on MySQL and MariaDB (dialects/change_feed.py): off, unless this process is the sole writer.

MySQL cannot tell a client of another session's commit (no LISTEN/NOTIFY, no data_version), so
``cache=True`` turns itself off there, says why and how to keep it on; every read asks the
database, and the ``mariadb`` command-line client's writes are always seen. With
``cache={"sole_writer": True}`` the user says no other process writes to the database: the
cache is on, and this process's own writes invalidate it when they commit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest
import sqlalchemy as sa

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, WorkflowBuilder

# runs alone under pytest -n: another process's write, from the mariadb client, is part of the test
pytestmark = pytest.mark.exclusive


def define(db: DataFlow):
    @db.model
    class Item:
        name: str
        qty: int

    return Item


def mariadb_cli(url: str, sql: str) -> None:
    """Run ``sql`` in another process: the mariadb (or mysql) command-line client."""
    parts = sa.engine.make_url(url)
    client = shutil.which("mariadb") or "mysql"
    env = dict(os.environ, MYSQL_PWD=parts.password or "")
    done = subprocess.run(
        [client, "-h", parts.host or "127.0.0.1", "-P", str(parts.port or 3306), "-u", parts.username or "root",
         parts.database or "", "-e", sql],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def same_as_database(Item, **query) -> list:
    first, second = Item.list(**query), Item.list(**query)
    fresh = Item.list(**query, cache=False)
    assert first == second == fresh
    return fresh


def test_mysql_turns_the_cache_off_says_why_and_sees_every_outside_write(my_url, caplog):
    db = DataFlow(my_url, cache=True, monitoring=True)
    Item = define(db)
    with caplog.at_level(logging.WARNING, logger="dataflow_lab.cache"):
        Item.create(name="a", qty=1)
    assert "result cache turned off" in caplog.text
    assert [r["qty"] for r in same_as_database(Item)] == [1]
    mariadb_cli(my_url, "UPDATE items SET qty = 2")
    assert [r["qty"] for r in same_as_database(Item)] == [2]  # never the result from before it
    figures = db.cache_stats()
    assert figures["enabled"] and not figures["on"] and figures["hits"] == 0 and figures["entries"] == 0
    reason = figures["off_reason"]
    assert "other processes' writes" in reason and '"sole_writer": True' in reason
    assert db.metrics()["result_cache"]["off_reason"] == reason
    on = [line for line in db.metrics_text().splitlines() if line.startswith("dataflow_cache_on{")]
    assert len(on) == 1 and on[0].endswith(" 0.0")
    db.close()


def test_mysql_sole_writer_caches_and_its_own_writes_invalidate_when_they_commit(my_url):
    db = DataFlow(my_url, cache={"sole_writer": True})
    Item = define(db)
    a = Item.create(name="a", qty=1)
    same_as_database(Item)
    hits = db.cache_stats()["hits"]
    assert Item.list() and db.cache_stats()["hits"] == hits + 1 and db.cache_stats()["on"]
    writes = [
        lambda: Item.update(a["id"], qty={"$inc": 1}),
        lambda: Item.bulk_create([{"name": "c", "qty": 3}, {"name": "d", "qty": 4}]),
        lambda: Item.bulk_update({"qty": {"$gte": 3}}, name="big"),
        lambda: Item.upsert({"id": a["id"]}, create={"name": "a", "qty": 0}, update={"qty": 9}),
        lambda: Item.bulk_upsert([{"id": a["id"], "name": "up", "qty": 7}]),
        lambda: Item.bulk_delete({"name": "big"}),
        lambda: db.sql("UPDATE items SET qty = qty + 10", write=True),
    ]
    for write in writes:
        before = same_as_database(Item)
        write()
        assert same_as_database(Item) != before
        assert Item.count() == Item.count(cache=False)
    db.close()


def test_mysql_sole_writer_keeps_nothing_of_a_failed_transaction_and_reads_its_own_writes(my_url):
    db = DataFlow(my_url, cache={"sole_writer": True})
    Item = define(db)
    Item.create(name="a", qty=1)
    assert len(same_as_database(Item)) == 1
    figures = db.cache_stats()
    with pytest.raises(RuntimeError):
        with db.transaction():
            Item.create(name="b", qty=2)
            assert [r["name"] for r in Item.list()] == ["a", "b"]  # its own write, not the cached list
            raise RuntimeError("roll back")
    after = db.cache_stats()
    assert (after["entries"], after["invalidations"]) == (figures["entries"], figures["invalidations"])
    assert [r["name"] for r in same_as_database(Item)] == ["a"]
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "ok", {"name": "c", "qty": 3})
    wf.add_node("ItemReadNode", "missing", {"id": 999})
    with pytest.raises(DataFlowError):
        LocalRuntime().execute(wf.build())
    assert [r["name"] for r in same_as_database(Item)] == ["a"]
    db.close()


def test_mysql_sole_writer_dataflows_of_one_process_invalidate_each_other(my_url):
    sole = {"sole_writer": True}
    first, second = DataFlow(my_url, cache=sole), DataFlow(my_url, cache=sole)
    ItemA, ItemB = define(first), define(second)
    ItemA.create(name="a", qty=1)
    assert len(same_as_database(ItemB)) == 1
    ItemA.create(name="b", qty=2)
    assert [r["name"] for r in same_as_database(ItemB)] == ["a", "b"]
    plain = DataFlow(my_url)  # no cache of its own: its writes reach the others all the same
    define(plain).create(name="c", qty=3)
    assert [r["name"] for r in same_as_database(ItemB)] == ["a", "b", "c"]
    for db in (first, second, plain):
        db.close()


def test_sole_writer_must_be_a_bool():
    with pytest.raises(DataFlowError, match="sole_writer must be True or False"):
        DataFlow(cache={"sole_writer": "yes"})
    with pytest.raises(DataFlowError, match="Did you mean 'sole_writer'"):
        DataFlow(cache={"sole_writers": True})
