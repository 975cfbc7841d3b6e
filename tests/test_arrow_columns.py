"""Typed Arrow columns for DuckDB's bulk path (dialects/arrow_columns.py), on a real DuckDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pyarrow as pa
import pytest
import sqlalchemy as sa

from dataflow_lab import DataFlow, DecryptionError, Encrypted, LocalRuntime, WorkflowBuilder
from dataflow_lab.cipher import Cipher
from dataflow_lab.dialects.arrow_columns import Same, arrow_source, by_column_of, column_builder
from dataflow_lab.encryption import PREFIX, keygen, load_keys


def test_by_column_of_merges_only_the_very_same_object_on_every_row():
    stamp = object()
    rows = [(1, stamp, 1), (2, stamp, True), (3, stamp, 1)]
    assert by_column_of(rows) == [[1, 2, 3], Same(stamp), [1, True, 1]]  # 1 and True stay apart
    assert by_column_of(rows, keep=[1])[1] == [stamp] * 3  # a key is always a column
    assert by_column_of([(1, stamp)]) == [[1], [stamp]]  # one row: nothing to merge


def test_arrow_source_types_columns_and_binds_one_value_columns_as_parameters():
    types = [sa.Text(), sa.BigInteger(), sa.Float(), sa.Boolean(), sa.Uuid(), sa.Text()]
    names = ["t", "i", "f", "b", "u", "same"]
    key = uuid.uuid4()
    values = [
        ["a", None, "é"],
        [1, None, 3],
        [0.5, None, 2.0],
        [True, None, False],
        [key, None, key],
        Same("x"),
    ]
    table, select, params = arrow_source(types, names, values)
    assert table.schema.types == [pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.string()]
    assert table.to_pylist() == [
        {"t": "a", "i": 1, "f": 0.5, "b": True, "u": str(key)},
        {"t": None, "i": None, "f": None, "b": None, "u": None},
        {"t": "é", "i": 3, "f": 2.0, "b": False, "u": str(key)},
    ]
    assert select == ['"t"', '"i"', '"f"', '"b"', '"u"', "?"] and params == ["x"]


def test_a_column_of_other_values_is_left_to_pyarrow():
    table, select, params = arrow_source([sa.JSON()], ["j"], [[{"a": 1}, {"a": 2}]])
    assert table.column("j").to_pylist() == [{"a": 1}, {"a": 2}] and params == []


def test_the_first_duckdb_bulk_create_of_a_process_does_not_import_pandas(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
        db = DataFlow("duckdb:///{tmp_path / "first.duckdb"}")

        @db.model
        class Item:
            name: str
            qty: int
            price: float
            ok: bool = True

        wf = WorkflowBuilder(dataflow=db)
        data = [{{"name": f"n{{i}}", "qty": i, "price": i / 2}} for i in range(1000)]
        wf.add_node("ItemBulkCreateNode", "load", {{"data": data, "progress": False}})
        assert LocalRuntime().execute(wf.build())[0]["load"] == {{"inserted": 1000}}
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemCountNode", "count", {{}})
        assert LocalRuntime().execute(wf.build())[0]["count"]["count"] == 1000
        print("pandas" in sys.modules)
        db.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


TEXTS = ["", "a", "ab", "é", "日本語", "x" * 100, "same", "same"]  # each length mod 3 (base64's padding)


def test_duckdb_writes_a_packed_column_byte_for_byte_as_the_python_path_seals_it():
    import duckdb

    cipher = Cipher(load_keys(keygen("k1")), "Note", "notes")
    ids = list(range(10**18, 10**18 + len(TEXTS)))
    packed = cipher.seal_packed("body", "text", ids, TEXTS)
    table, select, params = arrow_source([sa.BigInteger(), sa.Text()], ["id", "body"], [ids, packed])
    assert table.schema.types == [pa.int64(), pa.large_binary()]  # the sealed bytes, base64 left to DuckDB
    assert select == ['"id"', '? || to_base64("_dataflow_sealed_body")'] and params == [PREFIX]
    arrow_rows = table  # noqa: F841 - read by DuckDB by its name
    stored = [
        s for (s,) in duckdb.connect().execute(f"SELECT {select[1]} FROM arrow_rows", params).fetchall()
    ]
    assert stored == packed.values()  # PREFIX, then base64 of head, nonce, ciphertext and tag
    listed = cipher.seal_many("body", "text", ids, TEXTS)  # the form SQLite, PostgreSQL, MariaDB store
    assert [(s[:9], len(s)) for s in stored] == [(s[:9], len(s)) for s in listed]  # (other nonces)
    assert [cipher.open("body", "text", i, s) for i, s in zip(ids, stored, strict=True)] == TEXTS


def test_an_encrypted_duckdb_bulk_create_stores_the_form_every_reader_knows(tmp_path):
    import base64

    import duckdb

    key, path = keygen("k1"), tmp_path / "notes.duckdb"
    db = DataFlow(f"duckdb:///{path}", encryption_keys=key)

    @db.model
    class Note:
        __tablename__ = "notes"
        body: Encrypted[str]
        extra: Encrypted[dict] | None = None

    def run(node, params):
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node, "n", params)
        return LocalRuntime().execute(wf.build())[0]["n"]

    data = [{"body": t, "extra": {"i": i}} for i, t in enumerate(TEXTS)]
    ids = run("NoteBulkCreateNode", {"data": data, "return_ids": True})["ids"]
    db.close()
    con = duckdb.connect(str(path))
    rows = con.execute("SELECT id, body, extra FROM notes ORDER BY id").fetchall()
    cipher = Cipher(load_keys(key), "Note", "notes")
    for (row_id, body, extra), text, i in zip(rows, TEXTS, range(len(TEXTS)), strict=True):
        raw = base64.b64decode(body.removeprefix(PREFIX), validate=True)
        assert body == PREFIX + base64.b64encode(raw).decode()  # standard base64, padded
        assert raw[:4] == b"\x01\x02k1" and len(raw) == 4 + 12 + len(text.encode()) + 16
        assert cipher.open("body", "text", row_id, body) == text
        assert cipher.open("extra", "json", row_id, extra) == {"i": i}
    con.execute(f"UPDATE notes SET body = (SELECT body FROM notes WHERE id = {ids[1]}) WHERE id = {ids[0]}")
    con.close()
    db = DataFlow(f"duckdb:///{path}", encryption_keys=key)
    db.model(Note)
    assert run("NoteReadNode", {"id": ids[2]})["body"] == TEXTS[2]
    with pytest.raises(DecryptionError, match="copied from another row"):
        run("NoteReadNode", {"id": ids[0]})
    db.close()


def test_a_column_builder_makes_each_kind_typed_and_refuses_what_does_not_fit():
    text, integer, real = column_builder("text"), column_builder("integer"), column_builder("float")
    assert column_builder("datetime") is None  # built later, by arrow_source
    assert text(["a", "", "bc"], False).to_pylist() == ["a", "", "bc"]  # ASCII: offsets from the lengths
    assert text(["é", "x"], False).to_pylist() == ["é", "x"]  # other text: Arrow's builder
    assert text(["a", None], True).to_pylist() == ["a", None]
    assert integer([1, None, -(2**63)], True).to_pylist() == [1, None, -(2**63)]
    assert real([0.5, 2.0], False).type == pa.float64()
    with pytest.raises(TypeError):
        text(["a", 1], False)  # a text column holding no None checks its own types
    with pytest.raises(OverflowError):
        integer([1, 2**63], False)  # beyond 64 bits
