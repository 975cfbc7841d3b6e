"""Migrations of encrypted columns (migrations/sealing.py) whose type changes: JSON and bytes
fields with rows, turned encrypted and turned plain, and each rolled back, on SQLite, DuckDB,
PostgreSQL and MariaDB files and servers; read back with the raw drivers to see what is stored."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import url_for
from test_encryption import ENCRYPTED_BACKENDS, one, raw

from dataflow_lab import DataFlow, DestructiveMigrationError, Encrypted
from dataflow_lab.encryption import keygen

KEY = keygen("k1")
ROWS = [{"name": f"c{i}", "notes": {"dx": f"FLU-{i}", "seen": [i, "ICU"]}, "scan": bytes([0, 255, i]) + b"XRAY"}
        for i in range(4)] + [{"name": "blank"}]  # fmt: skip
# Each long enough, or holding a character base64 lacks ("-"), never to turn up in a ciphertext by
# chance ("ICU", three letters, did about once in 500 runs); 58524159: XRAY as hex, as the retype carries it
PLAINTEXTS = ("FLU-", "XRAY", "58524159")


@pytest.fixture(params=ENCRYPTED_BACKENDS)
def where(request, tmp_path):
    return request.param, url_for(request.param, tmp_path), tmp_path


def plain_charts(db):
    @db.model
    class Chart:
        name: str
        notes: dict | None = None
        scan: bytes | None = None

    return Chart


def sealed_charts(db):
    @db.model
    class Chart:
        name: str
        notes: Encrypted[dict] | None = None
        scan: Encrypted[bytes] | None = None

    return Chart


def stored(backend, tmp_path):
    return raw(backend, tmp_path, "SELECT name, notes, scan FROM charts ORDER BY name")


def assert_sealed(backend, tmp_path):
    rows = stored(backend, tmp_path)
    text = repr(rows)
    assert not any(p in text for p in PLAINTEXTS), text[:300]
    values = [v for _, notes, scan in rows for v in (notes, scan) if v is not None]
    assert len(values) == 8 and all(isinstance(v, str) and v.startswith("dfe1:") for v in values)


def assert_plain(backend, tmp_path):
    rows = stored(backend, tmp_path)  # "blank" sorts first
    assert [None if s is None else bytes(s) for _, _, s in rows] == [None, *(r["scan"] for r in ROWS[:4])]
    assert all(n is None or "FLU-" in str(n) for _, n, _ in rows) and "dfe1:" not in repr(rows)


def read_back(db):
    rows = {r["name"]: r for r in one(db, "ChartListNode")["records"]}
    assert rows["blank"]["notes"] is None and rows["blank"]["scan"] is None
    return {n: (r["notes"], r["scan"]) for n, r in rows.items() if n != "blank"}


EXPECTED = {r["name"]: (r["notes"], r["scan"]) for r in ROWS if "notes" in r}


def test_a_migration_encrypts_json_and_bytes_rows_turned_encrypted_and_rolls_back(where):
    backend, url, tmp_path = where
    db = DataFlow(url)
    plain_charts(db)
    one(db, "ChartBulkCreateNode", {"data": ROWS})
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    sealed_charts(db)
    plan = db.migrations.plan()
    assert "charts: encrypt the existing values of 'notes'" in plan.describe()
    assert "charts: encrypt the existing values of 'scan'" in plan.describe()
    assert not plan.destructive  # bytes go through hex: nothing lost, no backup of the plaintext kept
    assert read_back(db) == EXPECTED  # migrated at first use
    db.close()
    assert_sealed(backend, tmp_path)
    db = DataFlow(url, encryption_keys=KEY)
    sealed_charts(db)
    db.migrations.rollback(confirm_destructive=True)  # decrypted, retyped back
    db.close()
    assert_plain(backend, tmp_path)
    db = DataFlow(url)
    plain_charts(db)
    assert read_back(db) == EXPECTED
    assert not db.migrations.plan()  # the rollback left the table as the plain model has it
    db.close()


def test_a_migration_decrypts_json_and_bytes_rows_turned_plain_and_rolls_back(where):
    backend, url, tmp_path = where
    db = DataFlow(url, encryption_keys=KEY)
    sealed_charts(db)
    one(db, "ChartBulkCreateNode", {"data": ROWS})
    db.close()
    db = DataFlow(url, encryption_keys=KEY)
    plain_charts(db)
    with pytest.raises(DestructiveMigrationError, match="decrypt"):  # it writes plaintext: confirmed
        one(db, "ChartListNode")
    db.migrations.apply(confirm_destructive=True)
    assert read_back(db) == EXPECTED
    db.close()
    assert_plain(backend, tmp_path)
    db = DataFlow(url, encryption_keys=KEY)
    plain_charts(db)
    db.migrations.rollback(confirm_destructive=True)  # retyped to text, then encrypted again
    db.close()
    assert_sealed(backend, tmp_path)
    db = DataFlow(url, encryption_keys=KEY)
    sealed_charts(db)
    assert read_back(db) == EXPECTED
    assert not db.migrations.plan()
    db.close()


def test_plaintext_another_tool_writes_after_the_sampled_rows_is_encrypted_by_a_migration(
    tmp_path, monkeypatch
):
    from dataflow_lab.migrations import sealing

    monkeypatch.setattr(sealing, "PROBE_ROWS", 5)  # (1,000: a plain text column's first rows are sampled)
    url = f"sqlite:///{tmp_path / 'late.db'}"
    db = DataFlow(url, encryption_keys=KEY)

    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str]

    one(db, "PatientBulkCreateNode", {"data": [{"name": f"p{i}", "ssn": f"S{i}"} for i in range(6)]})
    db.close()
    conn = sqlite3.connect(tmp_path / "late.db")
    conn.execute("INSERT INTO patients (id, name, ssn) SELECT max(id) + 1, 'late', 'LATE-SSN' FROM patients")
    conn.commit()
    conn.close()
    db = DataFlow(url, encryption_keys=KEY)
    db.model(Patient)
    assert db.migrations.plan().describe() == ["patients: encrypt the existing values of 'ssn'"]
    assert one(db, "PatientListNode", {"filter": {"name": "late"}})["records"][0]["ssn"] == "LATE-SSN"
    db.close()
    conn = sqlite3.connect(tmp_path / "late.db")
    assert conn.execute("SELECT count(*) FROM patients WHERE ssn NOT LIKE 'dfe1:%'").fetchone() == (0,)
    conn.close()
