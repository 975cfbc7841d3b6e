"""PostgreSQL URLs as people write them: libpq's query parameters, translated for asyncpg (pg_url.py).

Each is tried against the real server: what the server then reports (pg_stat_activity, SHOW).
"""

from __future__ import annotations

import os

import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder, _loop
from dataflow_lab.errors import ConnectionError, ValidationError


def ask(db: DataFlow, sql: str) -> object:
    """The first value of ``sql``'s first row, on one of ``db``'s pooled connections."""

    async def fetch() -> object:
        conn = await db.database.acquire()
        try:
            return (await conn.fetch(sql))[0][0]
        finally:
            await db.database.release(conn)

    return _loop.run(fetch())


def write_and_read(db: DataFlow) -> list[dict]:
    @db.model
    class Note:
        text: str

    wf = WorkflowBuilder(db)
    wf.add_node("NoteCreateNode", "c", {"text": "hi"})
    wf.add_node("NoteListNode", "l", {})
    wf.add_connection("c", "id", "l", "filter.id")
    return LocalRuntime().execute(wf.build())[0]["l"]["records"]


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def test_application_name_is_what_pg_stat_activity_shows(pg_url):
    with DataFlow(with_query(pg_url, "application_name=nightly-etl")) as db:
        shown = ask(db, "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert shown == "nightly-etl"
        assert [r["text"] for r in write_and_read(db)] == ["hi"]


def test_options_become_server_settings_and_win_over_the_preset(pg_url):
    schema = pg_url.rsplit("schema=", 1)[1]
    base = pg_url.split("?")[0]
    options = f"-c%20search_path%3D{schema}%20-c%20statement_timeout%3D4321%20--work-mem%3D8MB"
    with DataFlow(with_query(base, f"options={options}")) as db:
        assert ask(db, "SHOW search_path") == schema
        assert ask(db, "SHOW statement_timeout") == "4321ms"  # the preset's is 60s
        assert ask(db, "SHOW work_mem") == "8MB"
        write_and_read(db)
        # other test processes' schemas may hold a 'notes' table too: ask about this one
        where = ask(db, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'notes' "
                        "AND table_schema = current_schema()")  # fmt: skip
        assert where == schema


def test_a_setting_the_server_does_not_have_is_named_as_the_urls(pg_url):
    with DataFlow(with_query(pg_url, "options=-c%20no_such_setting%3D1")) as db:
        with pytest.raises(ConnectionError) as caught:
            write_and_read(db)
    assert "no setting named in the URL's options" in str(caught.value)
    assert '"no_such_setting"' in str(caught.value) and "?options=" in str(caught.value)


def test_options_and_schema_must_agree(pg_url):
    with pytest.raises(ValidationError, match="search_path twice"):
        DataFlow(with_query(pg_url, "options=-c%20search_path%3Delsewhere"))
    with pytest.raises(ValidationError, match="options=.*-c name=value"):
        DataFlow(with_query(pg_url, "options=search_path%3Dapp"))


@pytest.mark.parametrize("mode", ["disable", "prefer", "allow"])
def test_sslmode_that_allows_plain_connections_connects_to_a_server_without_ssl(pg_url, mode):
    with DataFlow(with_query(pg_url, f"sslmode={mode}")) as db:
        assert ask(db, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False
        assert [r["text"] for r in write_and_read(db)] == ["hi"]


def test_sslmode_require_against_a_server_without_ssl_says_so(pg_url):
    with DataFlow(with_query(pg_url, "sslmode=require")) as db:
        with pytest.raises(ConnectionError) as caught:
            write_and_read(db)
    message = str(caught.value)
    assert "does not accept SSL" in message and "sslmode=require" in message
    assert "sslmode=prefer" in message  # what to do instead; the server is not blamed for being down
    assert "server is running" not in message


def test_connect_timeout_is_asyncpgs_timeout(pg_url):
    with DataFlow(with_query(pg_url, "connect_timeout=3")) as db:
        assert db.database.dialect.engine_options()["connect_args"]["timeout"] == 3.0
        assert [r["text"] for r in write_and_read(db)] == ["hi"]
    with DataFlow(with_query(pg_url, "connect_timeout=0")) as db:  # libpq: 0 waits forever
        assert db.database.dialect.engine_options()["connect_args"]["timeout"] is None
    with pytest.raises(ValidationError, match="connect_timeout='soon'"):
        DataFlow(with_query(pg_url, "connect_timeout=soon"))


def test_target_session_attrs_is_passed_on(pg_url):
    with DataFlow(with_query(pg_url, "target_session_attrs=read-write")) as db:
        assert [r["text"] for r in write_and_read(db)] == ["hi"]
    with DataFlow(with_query(pg_url, "target_session_attrs=standby")) as db:  # ours is a primary
        with pytest.raises(ConnectionError, match="not what target_session_attrs=standby asks for"):
            write_and_read(db)
    with pytest.raises(ValidationError, match="Did you mean 'read-write'"):
        DataFlow(with_query(pg_url, "target_session_attrs=read_write"))


def test_host_in_the_query_is_the_unix_socket_directory(pg_url):
    with DataFlow(pg_url) as tcp:
        directory = str(ask(tcp, "SHOW unix_socket_directories")).split(",")[0].strip()
        port = ask(tcp, "SHOW port")
    if not os.access(directory, os.X_OK):
        pytest.skip(f"the server's socket directory {directory} is not reachable by this user")
    user_and_db = pg_url.split("@", 1)[0], pg_url.split("/")[-1]  # (scheme://user, db?schema=...)
    url = f"{user_and_db[0]}@/{with_query(user_and_db[1], f'host={directory}&port={port}')}"
    with DataFlow(url) as db:
        assert ask(db, "SELECT inet_server_addr() IS NULL")  # NULL: a unix-socket connection
        assert [r["text"] for r in write_and_read(db)] == ["hi"]


def test_an_unknown_parameter_is_refused_at_dataflow_naming_it(pg_url):
    with pytest.raises(ValidationError) as caught:
        DataFlow(with_query(pg_url, "sslmod=require"))
    assert "'sslmod'" in str(caught.value) and "Did you mean 'sslmode'" in str(caught.value)
    with pytest.raises(ValidationError, match="sslmode='requires'.*Did you mean 'require'"):
        DataFlow(with_query(pg_url, "sslmode=requires"))
