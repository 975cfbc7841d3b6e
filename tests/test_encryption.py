"""Encryption at rest (encryption.py): fields sealed on SQLite, DuckDB, PostgreSQL and MariaDB files and
servers, read back with the raw drivers to see that no plaintext is stored, and every path that
does not encrypt yet refused."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from conftest import MYSQL_URL, PG_URL, SCHEMA, url_for

from dataflow_lab import (
    DataFlow,
    DecryptionError,
    DestructiveMigrationError,
    Encrypted,
    EncryptionError,
    LocalRuntime,
    MigrationError,
    MigrationRequiredError,
    NodeExecutionError,
    NotFoundError,
    ValidationError,
    WorkflowBuilder,
    WorkflowValidationError,
)
from dataflow_lab.cipher import Cipher
from dataflow_lab.encryption import ENV_KEY, keygen

ENCRYPTED_BACKENDS = ("sqlite_file", "duckdb_file", "postgres", "mysql")
HEAVY_BACKENDS = ("sqlite_file", "duckdb_file", "postgres")  # the 100k-row and killed-process tests: not
# on MariaDB too (CI time), whose write paths are the same nodes' and are covered by the others
KEY = keygen("k1")
SECRET = "123-45-6789"


def one(db, node_type, params=None):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params or {})
    results, _ = LocalRuntime().execute(workflow.build())
    return results["node"]


def patients(db):
    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037 - a flag, not a forward reference
        nickname: Encrypted[str] | None = None
        notes: Encrypted[dict] | None = None
        scan: Encrypted[bytes] | None = None

    return Patient


def raw(backend, tmp_path, sql, *, write=False):
    """Run ``sql`` with the raw driver (sqlite3, duckdb, asyncpg, asyncmy), bypassing dataflow_lab."""
    if backend == "mysql":
        return asyncio.run(mysql_rows(sql))
    if backend == "sqlite_file":
        conn = sqlite3.connect(tmp_path / "test.db")
        try:
            rows = conn.execute(sql).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    if backend == "duckdb_file":
        import duckdb

        conn = duckdb.connect(str(tmp_path / "test.duckdb"))
        try:
            return conn.execute(sql).fetchall() if not write else conn.execute(sql)
        finally:
            conn.close()
    import asyncpg

    async def go():
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'SET search_path TO "{SCHEMA}"')
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


async def mysql_rows(sql, *statements):
    """Rows of ``sql`` on this test process's MariaDB database (asyncmy), after ``statements``."""
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(MYSQL_URL)
    conn = await asyncmy.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                                 password=parts.password or "", database=SCHEMA, autocommit=True)  # fmt: skip
    try:
        async with conn.cursor() as cursor:
            for statement in (*statements, sql):
                await cursor.execute(statement)
            return [tuple(r) for r in await cursor.fetchall()]
    finally:
        conn.close()


def quoted(backend, name):
    return f"`{name}`" if backend == "mysql" else f'"{name}"'  # BEFORE is reserved on MariaDB


@pytest.fixture(params=ENCRYPTED_BACKENDS)
def where(request, tmp_path):
    return request.param, url_for(request.param, tmp_path), tmp_path


@pytest.fixture(params=HEAVY_BACKENDS)
def heavy(request, tmp_path):
    return request.param, url_for(request.param, tmp_path), tmp_path


def test_raw_rows_hold_no_plaintext_after_create_and_bulk_create(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    made = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET, "notes": {"diagnosis": "influenza-B"},
                                         "scan": b"XRAY-IMAGE"})  # fmt: skip
    one(db, "PatientBulkCreateNode", {"data": [{"name": f"p{i}", "ssn": f"SSN-{i:05d}"} for i in range(50)]})
    assert one(db, "PatientReadNode", {"id": made["id"]})["notes"] == {"diagnosis": "influenza-B"}
    db.close()
    stored = repr(raw(backend, tmp_path, "SELECT * FROM patients"))
    for plaintext in (SECRET, "diagnosis", "influenza-B", "XRAY-IMAGE", "SSN-00007"):  # "-": no base64 has it
        assert plaintext not in stored
    assert "Ann" in stored  # the unencrypted field is stored as it is
    if backend == "sqlite_file":
        assert SECRET.encode() not in (tmp_path / "test.db").read_bytes()


def test_every_result_is_decrypted_on_each_path(where):
    _backend, url, _ = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    made = one(
        db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET, "notes": {"a": [1, 2]}, "scan": b"\x00\xff"}
    )
    assert (made["ssn"], made["notes"], made["scan"]) == (SECRET, {"a": [1, 2]}, b"\x00\xff")
    assert "ssn_blind" not in made
    updated = one(
        db, "PatientUpdateNode", {"id": made["id"], "fields": {"ssn": "999-99-9999", "nickname": "A"}}
    )
    assert (updated["ssn"], updated["nickname"]) == ("999-99-9999", "A")
    assert one(db, "PatientReadNode", {"id": made["id"]})["ssn"] == "999-99-9999"
    listed = one(db, "PatientListNode", {"filter": {"name": "Ann"}})["records"]
    assert [r["ssn"] for r in listed] == ["999-99-9999"]
    assert one(db, "PatientDeleteNode", {"id": made["id"]})["deleted"] is True
    assert one(db, "PatientCountNode")["count"] == 0
    db.close()


def test_bulk_create_of_many_encrypted_rows_round_trips(where):
    _backend, url, _ = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    data = [{"name": f"p{i}", "ssn": f"{i:09d}", "notes": {"i": i}} for i in range(3000)]
    out = one(db, "PatientBulkCreateNode", {"data": data, "return_ids": True})
    assert out["inserted"] == 3000 and len(set(out["ids"])) == 3000
    back = one(db, "PatientListNode", {"order_by": "name"})["records"]
    assert {(r["name"], r["ssn"], r["notes"]["i"]) for r in back} == {
        (d["name"], d["ssn"], d["notes"]["i"]) for d in data
    }
    assert one(db, "PatientReadNode", {"id": out["ids"][1234]})["ssn"] == "000001234"
    db.close()


def test_seal_many_gives_each_value_its_own_nonce_and_row_in_blocks_lists_and_packed_columns():
    from dataflow_lab.cipher import BLOCK
    from dataflow_lab.encryption import load_keys

    cipher = Cipher(load_keys(KEY), "Patient", "patients")
    n = BLOCK + 7  # two blocks
    ids, values = list(range(10**12, 10**12 + n)), [f"v{i}" if i % 3 else "same" for i in range(n)]
    listed = cipher.seal_many("ssn", "text", ids, values)
    packed = cipher.seal_packed("ssn", "text", ids, values)
    assert len(packed) == n and list(packed) == packed.values() and packed[n - 1] == list(packed)[-1]
    for sealed in (listed, list(packed)):
        assert len(set(sealed)) == n  # equal values, distinct ciphertexts: a nonce each
        assert [cipher.open("ssn", "text", i, s) for i, s in zip(ids, sealed, strict=True)] == values
    with pytest.raises(DecryptionError, match="copied from another row"):
        cipher.open("ssn", "text", ids[1], packed[0])
    for other in ([9, 10, 11], [2**63 - 2, 2**63 - 1], [2**64, 2**64 + 1], ["a-1", "b-2"]):  # lengths, str
        part = values[: len(other)]
        sealed = cipher.seal_packed("ssn", "text", other, part)
        assert [cipher.open("ssn", "text", i, s) for i, s in zip(other, sealed, strict=True)] == part
    gaps = cipher.seal_packed("notes", "json", [1, 2, 3], [{"a": 1}, None, {"b": 2}])
    assert gaps[1] is None and cipher.open("notes", "json", 3, gaps[2]) == {"b": 2}  # a None: a list
    assert (
        cipher.seal_many("ssn", "text", [], []) == [] and len(cipher.seal_packed("ssn", "text", [], [])) == 0
    )


def test_a_ciphertext_copied_to_another_row_or_column_fails_to_decrypt(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    ann = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET, "nickname": "annie"})
    bob = one(db, "PatientCreateNode", {"name": "Bob", "ssn": "000-00-0000"})
    db.close()
    raw(backend, tmp_path, f"UPDATE patients SET ssn = (SELECT ssn FROM patients WHERE id = {ann['id']}) "
                           f"WHERE id = {bob['id']}", write=True)  # fmt: skip
    raw(backend, tmp_path, f"UPDATE patients SET nickname = ssn WHERE id = {ann['id']}", write=True)
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    with pytest.raises(DecryptionError) as info:
        one(db, "PatientReadNode", {"id": bob["id"]})
    assert (info.value.model, info.value.field, info.value.id) == ("Patient", "ssn", bob["id"])
    assert "copied from another row or column" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(DecryptionError) as info:
        one(db, "PatientReadNode", {"id": ann["id"]})
    assert info.value.field == "nickname"
    db.close()


def test_a_wrong_key_gives_a_clear_error(where):
    _backend, url, _ = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    ann = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    db.close()
    db = DataFlow(url, encryption_keys=keygen("k1"))  # same id, other key
    patients(db)
    with pytest.raises(DecryptionError, match="did not decrypt with key 'k1': the key is wrong"):
        one(db, "PatientReadNode", {"id": ann["id"]})
    db.close()
    db = DataFlow(url, encryption_keys=keygen("k2"))  # the row's key is not in the keyring at all
    patients(db)
    with pytest.raises(DecryptionError, match="key 'k1'.*does not hold"):
        one(db, "PatientReadNode", {"id": ann["id"]})
    db.close()


def test_a_searchable_field_filters_on_equality_through_its_blind_index(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    rows = [{"name": n, "ssn": s} for n, s in (("Ann", "1-1"), ("Bob", "2-2"), ("Cy", "1-1"), ("Di", "3-3"))]
    one(db, "PatientBulkCreateNode", {"data": rows})
    names = lambda f: sorted(r["name"] for r in one(db, "PatientListNode", {"filter": f})["records"])  # noqa: E731
    assert names({"ssn": "1-1"}) == ["Ann", "Cy"]
    assert names({"ssn": {"$eq": "2-2"}}) == ["Bob"]
    assert names({"ssn": {"$in": ["2-2", "3-3"]}}) == ["Bob", "Di"]
    assert names({"nickname": None}) == ["Ann", "Bob", "Cy", "Di"]
    assert one(db, "PatientCountNode", {"filter": {"ssn": "1-1"}})["count"] == 2
    ann = one(db, "PatientListNode", {"filter": {"name": "Ann"}})["records"][0]
    one(db, "PatientUpdateNode", {"id": ann["id"], "fields": {"ssn": "4-4"}})  # its blind index follows
    assert names({"ssn": "4-4"}) == ["Ann"] and names({"ssn": "1-1"}) == ["Cy"]
    db.close()
    stored = repr(raw(backend, tmp_path, "SELECT ssn, ssn_blind FROM patients"))
    assert not any(v in stored for v in ("1-1", "2-2", "3-3", "4-4"))  # neither base64 nor hex has "-"


@pytest.mark.parametrize(
    "node, params, why",
    [
        ("PatientListNode", {"filter": {"ssn": {"$like": "1%"}}}, r"\$like on 'ssn' is refused"),
        ("PatientListNode", {"filter": {"ssn": {"$gt": "1"}}}, r"\$gt on 'ssn' is refused"),
        ("PatientListNode", {"filter": {"nickname": "annie"}}, "declare it Encrypted"),
        ("PatientListNode", {"order_by": "-ssn"}, "order_by 'ssn' is refused"),
        ("PatientCountNode", {"filter": {"notes": {"$ne": {}}}}, r"\$ne on 'notes' is refused"),
    ],
)
def test_ranges_patterns_and_order_on_an_encrypted_field_are_refused_at_build(node, params, why):
    db = DataFlow(encryption_keys=KEY)
    patients(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node(node, "node", params)
    with pytest.raises(WorkflowValidationError, match=why):
        workflow.build()


def stored_bytes(backend, tmp_path, table):
    """The bytes the database keeps on disk for ``table``: the SQLite or DuckDB file (and its WAL),
    or the PostgreSQL heap pages (read by the server after a CHECKPOINT, as superuser); MariaDB's
    rows as its driver reads them."""
    if backend in ("sqlite_file", "duckdb_file"):
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("test."))
    if backend == "mysql":  # the rows as the server hands them out (its test server keeps one shared file)
        return repr(raw(backend, tmp_path, f"SELECT * FROM {table}")).encode()
    import asyncpg

    async def go():
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute("CHECKPOINT")
            path = await conn.fetchval(f"SELECT pg_relation_filepath('\"{SCHEMA}\".{table}')")
            return await conn.fetchval("SELECT pg_read_binary_file($1)", path)
        finally:
            await conn.close()

    return asyncio.run(go())


def compacted_bytes(backend, tmp_path, table):
    """``stored_bytes`` after the database is rewritten, as the README says to do after a migration
    encrypts a column: the old plaintext stays in freed pages until then. SQLite: VACUUM;
    DuckDB: COPY FROM DATABASE into a new file; PostgreSQL: VACUUM FULL."""
    if backend == "sqlite_file":
        conn = sqlite3.connect(tmp_path / "test.db")
        conn.execute("VACUUM")
        conn.close()
        return stored_bytes(backend, tmp_path, table)
    if backend == "duckdb_file":
        import duckdb

        conn = duckdb.connect(str(tmp_path / "test.duckdb"))
        conn.execute(f"ATTACH '{tmp_path / 'copy.duckdb'}' AS copy")
        conn.execute("COPY FROM DATABASE test TO copy")
        conn.close()
        return (tmp_path / "copy.duckdb").read_bytes()
    raw(backend, tmp_path, f"OPTIMIZE TABLE {table}" if backend == "mysql" else f"VACUUM FULL {table}")
    return stored_bytes(backend, tmp_path, table)


def members(db):
    @db.model
    class Member:
        email: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037
        notes: Encrypted[dict] | None = None
        __dataflow__ = {"unique": ["email"]}

    return Member


def test_bulk_upsert_binds_every_ciphertext_to_the_row_it_writes(where):
    """Keys that exist keep their rows' ids (the new ciphertexts bind them), new keys get one id
    each (a key twice in the input: its last row), across chunks; the counts are exact."""
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    members(db)
    one(db, "MemberBulkCreateNode", {"data": [{"email": f"m{i}", "ssn": f"OLD-{i}"} for i in range(6)]})
    before = {r["email"]: r["id"] for r in one(db, "MemberListNode")["records"]}
    data = [{"email": f"m{i}", "ssn": f"NEW-{i}", "notes": {"n": i}} for i in (1, 3, 5, 7, 8)]
    data += [{"email": "m8", "ssn": "NEW-8b", "notes": None}, {"email": "m3", "ssn": "NEW-3b"}]
    out = one(db, "MemberBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 2})
    assert out == {"inserted": 2, "updated": 3}
    rows = {r["email"]: r for r in one(db, "MemberListNode")["records"]}  # every ciphertext opens
    assert {e: r["id"] for e, r in rows.items() if e in before} == before
    assert {e: r["ssn"] for e, r in rows.items()} == {
        "m0": "OLD-0", "m1": "NEW-1", "m2": "OLD-2", "m3": "NEW-3b", "m4": "OLD-4", "m5": "NEW-5",
        "m7": "NEW-7", "m8": "NEW-8b",
    }  # fmt: skip
    assert rows["m7"]["notes"] == {"n": 7} and rows["m8"]["notes"] is None
    assert one(db, "MemberCountNode", {"filter": {"ssn": "NEW-3b"}})["count"] == 1  # blind index follows
    assert one(db, "MemberCountNode", {"filter": {"ssn": "OLD-3"}})["count"] == 0
    by_id = [{"id": before["m0"], "email": "m0", "ssn": "BY-ID"}, {"id": 77, "email": "m9", "ssn": "NEW-9"}]
    assert one(db, "MemberBulkUpsertNode", {"data": by_id}) == {"inserted": 1, "updated": 1}
    assert one(db, "MemberReadNode", {"id": 77})["ssn"] == "NEW-9"
    assert one(db, "MemberReadNode", {"id": before["m0"]})["ssn"] == "BY-ID"
    bad = [{"email": "m1", "ssn": "LOST"}, {"email": "m20", "ssn": "LOST"}, {"email": "m21", "ssn": 5}]
    with pytest.raises(ValidationError):
        one(db, "MemberBulkUpsertNode", {"data": bad, "conflict_on": ["email"]})
    assert one(db, "MemberCountNode")["count"] == 9  # all or nothing
    db.close()
    stored = stored_bytes(backend, tmp_path, "members")
    for plaintext in (b"NEW-3b", b"OLD-2", b"BY-ID", b"NEW-9"):
        assert plaintext not in stored


def test_a_searchable_field_is_a_unique_key_and_an_upsert_key_through_its_blind_index(where):
    backend, url, tmp_path = where
    old, new = keygen("old"), keygen("new")
    db = DataFlow(url, encryption_keys=old)

    @db.model
    class Citizen:
        name: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037
        __dataflow__ = {"unique": ["ssn"]}

    one(db, "CitizenBulkCreateNode", {"data": [{"name": "Ann", "ssn": "111"}, {"name": "Bob", "ssn": "222"}]})
    with pytest.raises(Exception, match="(?i)unique|duplicate|constraint"):  # the blind index holds it
        one(db, "CitizenCreateNode", {"name": "Ann again", "ssn": "111"})
    db.close()
    db = DataFlow(url, encryption_keys=f"{old},{new}")  # rows under "old", new values under "new"
    db.model(Citizen)
    data = [{"name": "Ann B.", "ssn": "111"}, {"name": "Cy", "ssn": "333"}, {"name": "Cy C.", "ssn": "333"}]
    out = one(db, "CitizenBulkUpsertNode", {"data": data, "conflict_on": ["ssn"]})
    assert out == {"inserted": 1, "updated": 1}
    back = sorted((r["name"], r["ssn"]) for r in one(db, "CitizenListNode")["records"])
    assert back == [("Ann B.", "111"), ("Bob", "222"), ("Cy C.", "333")]
    upserted = one(db, "CitizenUpsertNode", {"where": {"ssn": "222"}, "update": {"name": "Bob B."}})
    assert upserted["created"] is False and upserted["record"]["name"] == "Bob B."
    db.close()
    keys = sorted(Cipher.key_of(v) for (v,) in raw(backend, tmp_path, "SELECT ssn FROM citizens"))
    assert keys == ["new", "new", "old"]  # Ann's and Cy's rows were rewritten; Bob's ssn was not


def test_upsert_finds_its_row_by_key_or_blind_index_and_seals_to_it(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    members(db)
    first = one(db, "MemberUpsertNode", {"where": {"email": "a"}, "create": {"ssn": "111-11"}})
    assert first["created"] is True
    again = one(
        db, "MemberUpsertNode", {"where": {"email": "a"}, "update": {"ssn": "222-22", "notes": {"k": 1}}}
    )
    assert (again["created"], again["record"]["id"]) == (False, first["record"]["id"])
    by_blind = one(db, "MemberUpsertNode", {"where": {"ssn": "222-22"}, "update": {"notes": {"k": 2}}})
    assert (by_blind["created"], by_blind["record"]["id"]) == (False, first["record"]["id"])
    made = one(db, "MemberUpsertNode", {"where": {"ssn": "333-33"}, "create": {"email": "b"}})
    assert made["created"] is True and made["record"]["ssn"] == "333-33"
    back = {r["email"]: (r["ssn"], r["notes"]) for r in one(db, "MemberListNode")["records"]}
    assert back == {"a": ("222-22", {"k": 2}), "b": ("333-33", None)}
    assert "222-22" not in db.nodes["MemberUpsertNode"].sql(
        {"where": {"email": "a"}, "update": {"ssn": "222-22"}, "create": {"ssn": "222-22"}}
    )
    db.close()
    stored = stored_bytes(backend, tmp_path, "members")
    assert not any(p in stored for p in (b"111-11", b"222-22", b"333-33"))


def test_bulk_update_of_an_encrypted_field_seals_each_row_to_its_id(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    one(
        db,
        "PatientBulkCreateNode",
        {"data": [{"name": "a" if i % 3 else "b", "ssn": f"{i:04d}"} for i in range(300)]},
    )
    assert SECRET not in db.nodes["PatientBulkUpdateNode"].sql(
        {"filter": {"name": "b"}, "fields": {"ssn": SECRET}}
    )
    out = one(
        db, "PatientBulkUpdateNode", {"filter": {"name": "b"}, "fields": {"ssn": SECRET, "notes": {"s": 1}}}
    )
    assert out == {"updated": 100}
    assert one(db, "PatientCountNode", {"filter": {"ssn": SECRET}})["count"] == 100
    rows = one(db, "PatientListNode")["records"]  # each row's ciphertexts open with its own id
    assert sorted((r["name"], r["ssn"] == SECRET, r["notes"]) for r in rows)[0] == ("a", False, None)
    assert {(r["ssn"], str(r["notes"])) for r in rows if r["name"] == "b"} == {(SECRET, "{'s': 1}")}
    assert one(db, "PatientBulkUpdateNode", {"filter": {"name": "b"}, "fields": {"notes": None}}) == {
        "updated": 100
    }
    db.close()
    stored = stored_bytes(backend, tmp_path, "patients")
    assert SECRET.encode() not in stored
    ciphertexts = [v for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients WHERE name = 'b'")]
    assert len(set(ciphertexts)) == 100  # a nonce and a row of its own each


def test_a_model_with_encrypted_fields_and_no_key_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    db = DataFlow()
    with pytest.raises(EncryptionError) as info:
        patients(db)
    assert "python -m dataflow_lab keygen" in str(info.value) and "\n" not in str(info.value)
    assert "PatientCreateNode" not in db.nodes


def test_the_key_comes_from_the_environment_and_the_last_keyring_entry_is_current(monkeypatch):
    old, new = keygen("old"), keygen("new")
    monkeypatch.setenv(ENV_KEY, old)
    db = DataFlow()
    patients(db)
    first = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    monkeypatch.setenv(ENV_KEY, f"{old},{new}")
    patients(db)  # redefined: the keyring is read again
    assert one(db, "PatientReadNode", {"id": first["id"]})["ssn"] == SECRET  # the old key still decrypts
    second = one(db, "PatientCreateNode", {"name": "Bob", "ssn": "222"})
    stored = db.sql("SELECT ssn FROM patients WHERE id = :id", {"id": second["id"]})
    head = base64.b64decode(stored["ssn"][0].removeprefix("dfe1:"))
    assert head[0] == 1 and head[2 : 2 + head[1]] == b"new"
    db.close()


def test_a_callable_key_provider_and_a_bare_base64_key_are_accepted():
    raw_key = base64.b64encode(b"k" * 32).decode()
    asked = []
    db = DataFlow(encryption_keys=lambda: asked.append(1) or raw_key)
    patients(db)
    assert one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})["ssn"] == SECRET
    assert asked == [1]
    with pytest.raises(EncryptionError, match="not 32 bytes"):
        patients(DataFlow(encryption_keys="k1:c2hvcnQ="))


def test_fields_are_marked_by_annotation_by_option_or_by_encryption_at_rest():
    db = DataFlow(encryption_keys=KEY)

    @db.model
    class Note:
        title: str
        body: str
        __dataflow__ = {"encrypted": ["body"]}

    assert db.models["Note"].encrypted == {"body"}
    every = DataFlow(encryption_keys=KEY, encryption_at_rest=True)

    @every.model
    class Doc:
        id: str
        title: str
        meta: dict
        blob: bytes | None = None
        pages: int = 0

    assert every.models["Doc"].encrypted == {"title", "meta", "blob"}  # not id, pages or the timestamps
    with pytest.raises(ValidationError, match="only str, dict/list"):

        @db.model
        class Bad:
            age: Encrypted[int]

    with pytest.raises(ValidationError, match="unknown field 'bodyy'"):

        @db.model
        class Typo:
            body: str
            __dataflow__ = {"encrypted": ["bodyy"]}


def test_unique_keys_on_encrypted_fields_without_a_blind_index_are_refused_at_model():
    db = DataFlow(encryption_keys=KEY)
    with pytest.raises(ValidationError, match="names encrypted field 'ssn'"):

        @db.model
        class Keyed:
            ssn: Encrypted[str]
            __dataflow__ = {"unique": ["ssn"]}


def test_the_audit_log_stores_encrypted_images_and_reads_them_back_decrypted(where):
    """Each image's encrypted value binds the source row and '<column>@audit': it opens only there."""
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)

    @db.model
    class Chart:
        name: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037
        scan: Encrypted[bytes] | None = None
        __dataflow__ = {"audit_log": True}

    made = one(db, "ChartCreateNode", {"name": "Ann", "ssn": SECRET, "scan": b"XRAY-1"})
    one(db, "ChartUpdateNode", {"id": made["id"], "fields": {"ssn": "SECOND-SSN"}})
    one(db, "ChartBulkUpdateNode", {"filter": {"name": "Ann"}, "fields": {"ssn": "THIRD-SSN"}})
    one(db, "ChartBulkUpsertNode", {"data": [{"id": made["id"], "name": "Ann", "ssn": "FOURTH-SSN"}]})
    one(db, "ChartBulkCreateNode", {"data": [{"name": "Bob", "ssn": "BOBS-SSN"}]})
    history = db.audit(Chart, made["id"])
    assert [e.operation for e in history] == ["create", "update", "bulk_update", "bulk_upsert"]
    assert history[0].after["ssn"] == SECRET and history[0].after["scan"] == b"XRAY-1"
    assert history[1].changes["ssn"] == (SECRET, "SECOND-SSN")
    assert history[2].changes["ssn"] == ("SECOND-SSN", "THIRD-SSN")
    assert history[3].changes["ssn"] == ("THIRD-SSN", "FOURTH-SSN")
    assert "ssn_blind" not in history[0].after
    db.close()
    stored = stored_bytes(backend, tmp_path, "dataflow_audit_log")
    for plaintext in (SECRET, "SECOND-SSN", "THIRD-SSN", "FOURTH-SSN", "BOBS-SSN", "XRAY-1"):
        assert plaintext.encode() not in stored
    images = raw(backend, tmp_path, "SELECT after FROM dataflow_audit_log ORDER BY id")
    assert all("dfe1:" in str(a) for (a,) in images)
    image = raw(backend, tmp_path, "SELECT after FROM dataflow_audit_log ORDER BY id")[0][0]
    audited = (json.loads(image) if isinstance(image, str) else image)["ssn"]
    raw(backend, tmp_path, f"UPDATE charts SET ssn = '{audited}' WHERE id = {made['id']}", write=True)
    db = DataFlow(url, encryption_keys=KEY)  # an old value copied back from the log does not open
    db.model(Chart)
    with pytest.raises(DecryptionError, match="copied from another row or column"):
        one(db, "ChartReadNode", {"id": made["id"]})
    db.close()


def test_rotate_key_re_encrypts_the_audit_images_so_history_reads_without_the_old_key(where):
    backend, url, tmp_path = where
    old, new = keygen("old"), keygen("new")

    def charts(db):
        @db.model
        class Chart:
            name: str
            ssn: Encrypted[str]
            __dataflow__ = {"audit_log": True}

        return Chart

    db = DataFlow(url, encryption_keys=old)
    charts(db)
    made = one(db, "ChartCreateNode", {"name": "Ann", "ssn": SECRET})
    one(db, "ChartUpdateNode", {"id": made["id"], "fields": {"ssn": "SECOND-SSN"}})
    db.close()
    db = DataFlow(url, encryption_keys=f"{old},{new}")
    charts(db)
    assert db.rotate_key("new", batch_size=1) == {"Chart": 1, "Chart (audit log)": 2}
    assert db.rotate_key("new") == {"Chart": 0, "Chart (audit log)": 0}  # resumable: nothing left
    db.close()
    db = DataFlow(url, encryption_keys=new)
    Chart = charts(db)
    history = db.audit(Chart, made["id"])
    assert [e.after["ssn"] for e in history] == [SECRET, "SECOND-SSN"]
    db.close()


def plain_patients(db):
    @db.model
    class Patient:
        name: str
        ssn: str

    return Patient


def searchable_patients(db):
    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037

    return Patient


def test_a_migration_encrypts_a_column_turned_encrypted_and_decrypts_one_turned_plain(where):
    backend, url, tmp_path = where
    db = DataFlow(url)
    plain_patients(db)
    one(db, "PatientBulkCreateNode", {"data": [{"name": f"p{i}", "ssn": f"SSN-{i:04d}"} for i in range(30)]})
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    plan = db.migrations.plan()
    assert "add column 'ssn_blind'" in plan.describe()[0]  # (DuckDB: a rebuild)
    assert plan.describe()[1:] == ["patients: encrypt the existing values of 'ssn'"]
    assert "DATAFLOW_LAB ENCRYPT COLUMN patients.ssn" in plan.sql  # any other tool refuses it
    assert one(db, "PatientCountNode", {"filter": {"ssn": "SSN-0007"}})["count"] == 1  # migrated at first use
    assert one(db, "PatientListNode", {"filter": {"name": "p3"}})["records"][0]["ssn"] == "SSN-0003"
    db.close()
    assert b"SSN-00" not in compacted_bytes(backend, tmp_path, "patients")
    assert all(v.startswith("dfe1:") for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients"))
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    rolled = db.migrations.rollback(confirm_destructive=True)  # decrypts, then drops the blind index
    assert len(rolled) == 1 and "encrypt" in rolled[0].name
    db.close()
    assert sorted(v for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients"))[:2] == [
        "SSN-0000",
        "SSN-0001",
    ]
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    assert one(db, "PatientCountNode", {"filter": {"ssn": "SSN-0029"}})["count"] == 1  # encrypted again
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    plain_patients(db)  # encryption turned off: decrypting writes plaintext, so it needs confirming
    with pytest.raises(DestructiveMigrationError, match="decrypt"):
        one(db, "PatientCountNode")
    applied = db.migrations.apply(confirm_destructive=True)
    assert [s for m in applied for s in m.up if "DATAFLOW_LAB" in s] == [
        "DATAFLOW_LAB DECRYPT COLUMN patients.ssn"
    ]
    assert one(db, "PatientListNode", {"filter": {"ssn": "SSN-0011"}})["records"][0]["name"] == "p11"
    db.migrations.rollback(confirm_destructive=True)  # encrypted again, blind index back
    db.close()
    assert all(v.startswith("dfe1:") for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients"))
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    assert one(db, "PatientCountNode", {"filter": {"ssn": "SSN-0011"}})["count"] == 1
    db.close()


def test_turning_searchable_on_builds_the_blind_index_in_a_migration(where):
    _backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)

    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str]

    one(db, "PatientBulkCreateNode", {"data": [{"name": "Ann", "ssn": SECRET}, {"name": "Bob", "ssn": "2"}]})
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    assert db.migrations.plan().describe()[1:] == ["patients: build the blind index of 'ssn'"]
    assert [r["name"] for r in one(db, "PatientListNode", {"filter": {"ssn": SECRET}})["records"]] == ["Ann"]
    db.close()


def test_a_migration_without_the_key_or_in_production_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    db = DataFlow(url)
    plain_patients(db)
    one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    db.close()
    db = DataFlow(url, encryption_keys=KEY, auto_migrate=False)
    searchable_patients(db)
    with pytest.raises(MigrationRequiredError, match="encrypt the existing values of 'ssn'"):
        one(db, "PatientListNode")
    path = db.migrations.generate(tmp_path / "migrations")
    assert "DATAFLOW_LAB ENCRYPT COLUMN patients.ssn;" in path.read_text()
    db.close()
    db = DataFlow(url)  # no key: the file cannot be applied, and nothing is
    plain_patients(db)
    with pytest.raises(EncryptionError, match="needs the encryption key"):
        db.migrations.apply(directory=tmp_path / "migrations")
    db.close()
    conn = sqlite3.connect(tmp_path / "plain.db")
    assert conn.execute("SELECT ssn FROM patients").fetchall() == [(SECRET,)]
    conn.close()
    db = DataFlow(url, encryption_keys=KEY, auto_migrate=False)
    searchable_patients(db)
    db.migrations.apply(directory=tmp_path / "migrations")
    assert one(db, "PatientListNode", {"filter": {"ssn": SECRET}})["records"][0]["name"] == "Ann"
    db.close()
    assert SECRET.encode() not in (tmp_path / "plain.db").read_bytes()


def test_plaintext_left_in_an_encrypted_column_is_refused_never_read_as_ciphertext(tmp_path):
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    db = DataFlow(url)
    plain_patients(db)
    one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    db.close()
    db = DataFlow(url, encryption_keys=KEY, existing_schema=True)  # never migrates: refused, not misread

    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str]

    with pytest.raises(MigrationError, match="still holds unencrypted values"):
        one(db, "PatientListNode")
    db.close()


def test_sql_previews_echo_and_errors_never_show_plaintext(caplog):
    db = DataFlow(encryption_keys=KEY, echo=True)
    patients(db)
    shown = db.nodes["PatientCreateNode"].sql({"name": "Ann", "ssn": SECRET})
    assert SECRET not in shown and "<encrypted>" in shown
    assert SECRET not in db.nodes["PatientUpdateNode"].sql({"id": 1, "fields": {"ssn": SECRET}})
    with caplog.at_level(logging.INFO, logger="dataflow_lab.sql"):
        one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    assert SECRET not in caplog.text and "<encrypted>" in caplog.text
    with pytest.raises(ValidationError) as info:
        one(db, "PatientBulkCreateNode", {"data": [{"name": "Bob", "ssn": 123456789}]})
    assert "123456789" not in str(info.value)


def test_keygen_prints_a_key_the_environment_takes():
    out = subprocess.run([sys.executable, "-m", "dataflow_lab", "keygen", "--id", "prod"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    name, _, value = out.strip().partition("=")
    assert name == ENV_KEY and value.startswith("prod:")
    db = DataFlow(encryption_keys=value)
    patients(db)
    assert one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})["ssn"] == SECRET


def test_rotate_key_works_in_batches_and_resumes_after_an_interruption(where, monkeypatch):
    from dataflow_lab.schema import ModelTable

    backend, url, tmp_path = where
    old, new = keygen("old"), keygen("new")
    db = DataFlow(url, encryption_keys=old)
    patients(db)
    data = [{"name": f"p{i}", "ssn": f"{i:03d}", "notes": {"i": i}} for i in range(25)]
    one(db, "PatientBulkCreateNode", {"data": data})
    db.close()
    db = DataFlow(url, encryption_keys=f"{old},{new}")
    patients(db)
    assert one(db, "PatientCountNode", {"filter": {"ssn": "007"}})["count"] == 1  # indexed under "old"
    real, batches = ModelTable.rotate, []

    async def dies_in_the_third_batch(self, *args):
        batches.append(1)
        if len(batches) == 3:
            raise ConnectionResetError("the connection died mid-rotation")
        return await real(self, *args)

    monkeypatch.setattr(ModelTable, "rotate", dies_in_the_third_batch)
    with pytest.raises(ConnectionResetError):
        db.rotate_key("new", batch_size=10)
    monkeypatch.setattr(ModelTable, "rotate", real)
    db.close()
    keys = lambda: [Cipher.key_of(v) for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients")]  # noqa: E731
    assert sorted(keys()).count("new") == 20 and keys().count("old") == 5  # two batches committed
    db = DataFlow(url, encryption_keys=f"{old},{new}")
    patients(db)
    assert db.rotate_key("new", batch_size=10) == {"Patient": 5}  # resumed: only the rest
    db.close()
    assert set(keys()) == {"new"}
    db = DataFlow(url, encryption_keys=new)  # the old key is gone: nothing needs it any more
    patients(db)
    back = one(db, "PatientListNode", {"filter": {"ssn": "007"}})["records"]
    assert [(r["name"], r["notes"]) for r in back] == [("p7", {"i": 7})]
    assert len(one(db, "PatientListNode")["records"]) == 25
    with pytest.raises(EncryptionError, match="has no key 'gone'"):
        db.rotate_key("gone")
    db.close()


ROTATOR = """
import sys, time
from dataflow_lab import DataFlow, Encrypted
from dataflow_lab.schema import ModelTable

real = ModelTable.rotate


async def announced(self, *args):
    out = await real(self, *args)
    print("batch", flush=True)  # rewritten, not yet committed (each batch is its own transaction)
    time.sleep(0.2)  # the parent kills this process here: this batch's transaction dies with it
    return out


ModelTable.rotate = announced
db = DataFlow(sys.argv[1], echo=False)


@db.model
class Patient:
    name: str
    ssn: Encrypted[str, "searchable"]
    nickname: Encrypted[str] | None = None
    notes: Encrypted[dict] | None = None
    scan: Encrypted[bytes] | None = None


db.rotate_key("new", batch_size=50)
print("finished", flush=True)
"""


def test_a_rotation_killed_mid_way_resumes_and_leaves_every_row_readable(heavy, monkeypatch):
    """A process rotating keys is killed (SIGKILL) after some batches; the next rotation resumes."""
    backend, url, tmp_path = heavy
    old, new = keygen("old"), keygen("new")
    db = DataFlow(url, encryption_keys=old)
    patients(db)
    one(db, "PatientBulkCreateNode", {"data": [{"name": f"p{i}", "ssn": f"{i:04d}"} for i in range(400)]})
    db.close()
    env = {**os.environ, ENV_KEY: f"{old},{new}", "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", ROTATOR, url], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            assert child.stdout.readline().strip() == "batch"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
    keys = [Cipher.key_of(v) for (v,) in raw(backend, tmp_path, "SELECT ssn FROM patients")]
    assert 100 <= keys.count("new") < 400 and keys.count("new") + keys.count("old") == 400  # 2 batches, or 3
    monkeypatch.setenv(ENV_KEY, f"{old},{new}")
    db = DataFlow(url)
    patients(db)
    assert db.rotate_key("new", batch_size=50) == {"Patient": keys.count("old")}
    db.close()
    db = DataFlow(url, encryption_keys=new)  # only the new key: every row reads
    patients(db)
    assert sorted(r["ssn"] for r in one(db, "PatientListNode")["records"]) == [f"{i:04d}" for i in range(400)]
    assert one(db, "PatientCountNode", {"filter": {"ssn": "0123"}})["count"] == 1
    db.close()


def test_bulk_create_of_100k_encrypted_rows_stores_no_plaintext(heavy):
    backend, url, tmp_path = heavy
    db = DataFlow(url, encryption_keys=KEY, echo=False)
    patients(db)
    data = [
        {"name": f"p{i}", "ssn": f"SSN-{i:06d}", "notes": {"visit": f"VISIT-{i:06d}"}} for i in range(100_000)
    ]
    assert one(db, "PatientBulkCreateNode", {"data": data, "progress": False})["inserted"] == 100_000
    assert one(db, "PatientCountNode", {"filter": {"ssn": "SSN-054321"}})["count"] == 1
    found = one(db, "PatientListNode", {"filter": {"ssn": {"$in": ["SSN-000000", "SSN-099999"]}}})["records"]
    assert sorted(r["notes"]["visit"] for r in found) == ["VISIT-000000", "VISIT-099999"]
    assert len(one(db, "PatientListNode", {"limit": 100_000})["records"]) == 100_000  # every row opens
    db.close()
    stored = stored_bytes(backend, tmp_path, "patients")
    assert b"SSN-0" not in stored and b"VISIT-0" not in stored
    assert stored.count(b"dfe1:") >= 100_000 or backend == "duckdb_file"  # (DuckDB compresses the prefix)


def test_logs_metrics_displays_and_errors_never_show_plaintext(caplog):
    from dataflow_lab.notebook.run import start_run

    db = DataFlow(encryption_keys=KEY, echo=True, monitoring=True)
    members(db)
    with caplog.at_level(logging.DEBUG, logger="dataflow_lab"):
        one(db, "MemberCreateNode", {"email": "a", "ssn": SECRET})
        one(db, "MemberUpsertNode", {"where": {"email": "a"}, "update": {"ssn": SECRET}})
        one(db, "MemberBulkUpsertNode", {"data": [{"email": "a", "ssn": SECRET}], "conflict_on": ["email"]})
        one(
            db,
            "MemberBulkUpdateNode",
            {"filter": {"email": "a"}, "fields": {"ssn": SECRET, "notes": {"x": SECRET}}},
        )
        with pytest.raises(Exception) as info:
            one(db, "MemberCreateNode", {"email": "a", "ssn": SECRET})  # a unique violation on email
        workflow = WorkflowBuilder(db)
        workflow.add_node(
            "MemberBulkUpdateNode", "change", {"filter": {"email": "a"}, "fields": {"ssn": SECRET}}
        )
        run = start_run(workflow.build(), show_sql=True).wait(30)
    assert run.status == "done"
    shown = [
        caplog.text,
        str(info.value),
        repr(db.metrics()),
        db.metrics_json(),
        run.summary(),
        run.summary_html(),
    ]
    shown += [db.nodes[f"Member{n}Node"].sql(p) for n, p in (
        ("Upsert", {"where": {"email": "a"}, "update": {"ssn": SECRET}, "create": {"ssn": SECRET}}),
        ("BulkUpdate", {"filter": {"email": "a"}, "fields": {"ssn": SECRET}}),
        ("BulkUpsert", {"data": [{"email": "a", "ssn": SECRET}], "conflict_on": ["email"]}),
    )]  # fmt: skip
    assert "<encrypted>" in caplog.text and "SQL:" in run.summary()
    for text in shown:
        assert SECRET not in text
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", "duckdb", "postgres"])
def test_a_failed_workflow_in_a_block_writes_encrypted_rows_back_sealed(backend, tmp_path):
    """On DuckDB the undo is emulated from before-images: they are sealed again to their rows."""
    db = DataFlow(url_for(backend, tmp_path), encryption_keys=KEY)
    patients(db)
    ann = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    with db.transaction():
        workflow = WorkflowBuilder(db)
        workflow.add_node("PatientUpdateNode", "change", {"id": ann["id"], "fields": {"ssn": "000"}})
        workflow.add_node("PatientReadNode", "missing", {"id": 12345})
        with pytest.raises(NotFoundError):
            LocalRuntime().execute(workflow.build())
    assert one(db, "PatientReadNode", {"id": ann["id"]})["ssn"] == SECRET
    assert one(db, "PatientCountNode", {"filter": {"ssn": SECRET}})["count"] == 1
    db.close()


def refuse(first: int, second: int) -> dict:
    raise ValueError("refused after the upserts")


@pytest.mark.parametrize("backend", ["sqlite", "duckdb", "postgres"])
def test_a_failed_block_undoes_an_encrypted_bulk_upsert(backend, tmp_path):
    """DuckDB's undo is emulated: rows the upsert inserted go, rows it updated come back sealed."""
    db = DataFlow(url_for(backend, tmp_path), encryption_keys=KEY)
    members(db)
    ann = one(db, "MemberCreateNode", {"email": "a", "ssn": SECRET})
    with db.transaction():
        workflow = WorkflowBuilder(db)
        data = [{"email": "a", "ssn": "000"}, {"email": "b", "ssn": "111"}]
        workflow.add_node("MemberBulkUpsertNode", "keyed", {"data": data, "conflict_on": ["email"]})
        workflow.add_node("MemberBulkUpsertNode", "by_id", {"data": [{"email": "c", "ssn": "222"}]})
        workflow.add_node(refuse, "refuse")
        workflow.add_connection("keyed", "inserted", "refuse", "first")
        workflow.add_connection("by_id", "inserted", "refuse", "second")
        with pytest.raises(NodeExecutionError, match="refused after the upserts"):
            LocalRuntime().execute(workflow.build())
    rows = one(db, "MemberListNode")["records"]
    assert [(r["id"], r["email"], r["ssn"]) for r in rows] == [(ann["id"], "a", SECRET)]
    db.close()


def test_a_saga_logs_encrypted_before_images_and_compensates_from_them(where):
    """Steps commit and the process 'dies': the saga log holds ciphertexts, and resuming the
    compensation writes the rows back sealed to their ids."""
    from dataflow_lab import _loop
    from dataflow_lab.transactions import Scope

    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    patients(db)
    ann = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET, "notes": {"dx": "influenza-B"}})
    runtime, steps, workflow = LocalRuntime(transaction="saga"), [], WorkflowBuilder(db)
    workflow.add_node("PatientUpdateNode", "change", {"id": ann["id"], "fields": {"ssn": "000-00-0000"}})
    workflow.add_node("PatientBulkUpdateNode", "all", {"filter": {"name": "Ann"}, "fields": {"notes": None}})
    built = workflow.build()

    async def commit_steps_then_die():
        run = runtime.open_run(built, run_id="died")
        for node_id in built.order:
            scope = Scope("died", None)
            await run.run_node(scope, node_id, saga_steps=steps)
            await scope.commit()

    _loop.run(commit_steps_then_die())
    assert one(db, "PatientReadNode", {"id": ann["id"]})["notes"] is None
    assert db.pending_compensations() == 2
    logged = repr(raw(backend, tmp_path, f"SELECT {quoted(backend, 'before')} FROM dataflow_lab_saga_log"))
    assert SECRET not in logged and "influenza-B" not in logged and "dfe1:" in logged
    done = db.resume_compensations(force=True)
    assert [d.status for d in done] == ["compensated", "compensated"]
    back = one(db, "PatientReadNode", {"id": ann["id"]})
    assert (back["ssn"], back["notes"]) == (SECRET, {"dx": "influenza-B"})
    assert one(db, "PatientCountNode", {"filter": {"ssn": SECRET}})["count"] == 1
    failing = WorkflowBuilder(db)  # compensated in the run: from the before-images it holds
    failing.add_node("PatientUpdateNode", "change", {"id": ann["id"], "fields": {"ssn": "111-11-1111"}})
    failing.add_node("PatientReadNode", "missing", {"id": 12345})
    with pytest.raises(NotFoundError):
        LocalRuntime(transaction="saga").execute(failing.build())
    assert one(db, "PatientReadNode", {"id": ann["id"]})["ssn"] == SECRET
    db.close()
    stored = stored_bytes(backend, tmp_path, "dataflow_lab_saga_log")
    assert SECRET.encode() not in stored and b"influenza-B" not in stored


def test_the_keys_never_enter_the_config_and_json_keeps_its_key_order():
    db = DataFlow(encryption_keys=KEY)
    patients(db)
    assert KEY.split(":")[1] not in repr(db.config) and KEY.split(":")[1] not in repr(db.__reduce__())
    made = one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET, "notes": {"b": 1, "a": 2}})
    assert list(one(db, "PatientReadNode", {"id": made["id"]})["notes"]) == ["b", "a"]


def test_reflection_leaves_encrypted_columns_and_their_blind_index_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    db = DataFlow(url, encryption_keys=KEY)
    searchable_patients(db)
    one(db, "PatientCreateNode", {"name": "Ann", "ssn": SECRET})
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    with pytest.warns(UserWarning, match="patients.ssn' holds encrypted values"):
        assert db.reflect(["patients"]) == ["Patient"]
    assert {f.name for f in db.models["Patient"].fields} == {"id", "name", "created_at", "updated_at"}
    assert one(db, "PatientListNode")["records"][0]["name"] == "Ann"  # no ciphertext shown, none writable
    db.close()
    db = DataFlow(url, encryption_keys=KEY, safety_level="testing")
    with pytest.raises(ValidationError, match="declare the model"):
        db.reflect(["patients"])
    db.close()
