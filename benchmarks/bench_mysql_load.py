"""MySQL/MariaDB: LOAD DATA LOCAL INFILE from an in-memory buffer against our multi-row INSERT path.

Both sides write the same rows (name, qty, price, created_at, updated_at; bench_bulk's input) into
the same InnoDB table, in one transaction, on one asyncmy connection:

- ``insert``: the statements ``MySQLDialect.bulk_insert`` sends (multi-row INSERTs sized by the
  bind limit and 1 MB of SQL text, ``dialects.mysql_bulk.statements``);
- ``executemany``: asyncmy's ``executemany`` of tuples (it rewrites them into multi-row INSERTs);
- ``load``: the rows as tab-separated text in memory (escaped as LOAD DATA reads it), sent by
  ``LOAD DATA LOCAL INFILE``. asyncmy 0.2 cannot send it: its ``LoadLocalFile`` is declared with a
  ``str`` file name and is handed the server's ``bytes`` one (``TypeError: Argument 'filename' has
  incorrect type``), and it only reads files. This benchmark replaces that class, for its own
  process, with one that sends a buffer: a measurement route, not something dataflow_lab does.

Rounds alternate the paths; each keeps its best wall time, and its process CPU time is shown too
(the server's own work is in the wall time only). The result and the decision are in
docs/performance.md ("LOAD DATA LOCAL INFILE").

Run: DATAFLOW_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/scratch python benchmarks/bench_mysql_load.py
     [--rows 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _harness import table  # noqa: E402

COLUMNS = ("name", "qty", "price", "created_at", "updated_at")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def tsv_field(value: Any) -> str:
    """One value as LOAD DATA's default format reads it (\\N is NULL; tabs, newlines escaped)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return repr(value) if isinstance(value, float) else str(value)


def tsv(records: list[tuple]) -> bytes:
    return "".join("\t".join(map(tsv_field, r)) + "\n" for r in records).encode()


class _BufferSender:
    """In place of asyncmy's LoadLocalFile: sends the buffer registered for the file name asked for."""

    buffers: dict[bytes, bytes] = {}

    def __init__(self, filename: bytes | str, connection: Any):
        self.filename = filename if isinstance(filename, bytes) else filename.encode()
        self.connection = connection

    async def send_data(self) -> None:
        conn, data = self.connection, self.buffers.pop(self.filename)
        try:
            step = min(conn._max_allowed_packet, 2**20)
            for start in range(0, len(data), step):
                conn.write_packet(data[start : start + step])
                await conn._proto.drain()
        finally:
            conn.write_packet(b"")  # the end of the file
            await conn._proto.drain()


async def _connect(url: str) -> Any:
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(url)
    return await asyncmy.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                                 password=parts.password or "", database=parts.database, autocommit=True,
                                 local_infile=True, charset="utf8mb4")  # fmt: skip


async def _sql(con: Any, *statements: str) -> None:
    async with con.cursor() as cur:
        for sql in statements:
            await cur.execute(sql)


CREATE = (
    "CREATE TABLE bench_load (id BIGINT AUTO_INCREMENT PRIMARY KEY, name LONGTEXT NOT NULL UNIQUE, "
    "qty BIGINT NOT NULL, price DOUBLE NOT NULL, created_at DATETIME(6) NOT NULL, "
    "updated_at DATETIME(6) NOT NULL) CHARSET utf8mb4 COLLATE utf8mb4_nopad_bin"
)


async def write(con: Any, path: str, rows: list[dict]) -> int:
    """Make the records from the dicts and write them by ``path``, in one transaction: rows written."""
    from dataflow_lab.dialects.mysql_bulk import STATEMENT_BYTES, statements

    stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    records = [(r["name"], r["qty"], r["price"], stamp, stamp) for r in rows]
    cols = ", ".join(COLUMNS)
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    written = 0
    async with con.cursor() as cur:
        await cur.execute("START TRANSACTION")
        if path == "load":
            _BufferSender.buffers[b"rows"] = tsv(records)
            await cur.execute(f"LOAD DATA LOCAL INFILE 'rows' INTO TABLE bench_load ({cols})")
            written = cur.rowcount
        elif path == "executemany":
            await cur.executemany(f"INSERT INTO bench_load ({cols}) VALUES {one}", records)
            written = cur.rowcount
        else:
            for part in statements(records, len(COLUMNS), 65535, STATEMENT_BYTES):
                sql = f"INSERT INTO bench_load ({cols}) VALUES " + ", ".join([one] * len(part))
                await cur.execute(sql, [v for r in part for v in r])
                written += cur.rowcount
        await cur.execute("COMMIT")
    return written


async def measure(url: str, n: int, rounds: int, paths: list[str]) -> dict[str, tuple[float, float]]:
    import asyncmy.connection

    asyncmy.connection.LoadLocalFile = _BufferSender  # type: ignore[attr-defined]  # see the docstring
    con = await _connect(url)
    rows = [{"name": f"item {i}", "qty": i, "price": i * 0.25} for i in range(n)]
    best: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(rounds):
            for path in paths:
                await _sql(con, "DROP TABLE IF EXISTS bench_load", CREATE)
                wall, cpu = time.perf_counter(), time.process_time()
                written = await write(con, path, rows)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert written == n, (path, written, n)
                if path not in best or wall < best[path][0]:
                    best[path] = (wall, cpu)
        await _sql(con, "DROP TABLE IF EXISTS bench_load")
    finally:
        con.close()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=["insert", "executemany", "load"])
    args = parser.parse_args()
    url = os.environ.get("DATAFLOW_TEST_MYSQL_URL")
    if not url:
        raise SystemExit("set DATAFLOW_TEST_MYSQL_URL (bash .ci/mysql.sh start prints it)")
    best = asyncio.run(measure(url, args.rows, args.rounds, args.paths))
    base = best.get("insert", next(iter(best.values())))
    out = [(p, f"{args.rows:,}", f"{args.rows / w:,.0f}", f"{w:.2f} s", f"{c:.2f} s", f"{base[0] / w:.2f}x")
           for p, (w, c) in best.items()]  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f}, best of {args.rounds} interleaved rounds")
    print(table(out, ("path", "rows", "rows/s", "wall", "client CPU", "speed vs insert")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
