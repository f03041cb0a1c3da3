"""psycopg 3 through switchyard: server-side prepared statements (prepare=True,
prepare_threshold=0), pipeline mode, executemany, transactions, COPY, notices, a server-side
cursor, binary results and prepared-statement cache eviction.

Usage: python psycopg_client.py DSN
Exits non-zero with a message on the first failure; prints "ok" last on success.
"""

import os
import sys
import traceback

import psycopg
from psycopg import errors


def step(name):
    """Progress on stderr, so a hang or failure shows where it happened."""
    print(f"step: {name}", file=sys.stderr, flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class trace:
    """Writes a libpq protocol trace of `conn` to $PSYCOPG_TRACE_FILE, if set, while the
    `with` block runs (flushed also when it fails)."""

    def __init__(self, conn):
        self.conn = conn
        self.path = os.environ.get("PSYCOPG_TRACE_FILE")

    def __enter__(self):
        if self.path:
            self.f = open(self.path, "a")
            self.conn.pgconn.trace(self.f.fileno())
            self.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        return self.conn

    def __exit__(self, *exc):
        if self.path:
            try:
                self.conn.pgconn.untrace()
            finally:
                self.f.close()
        return False


def main(dsn):
    # Autocommit connection: every query prepared on first use.
    with psycopg.connect(
        dsn, prepare_threshold=0, autocommit=True, connect_timeout=10
    ) as conn, trace(conn):
        conn.execute("drop table if exists cl_pg3")
        conn.execute("create table cl_pg3 (id int primary key, v text, n numeric)")
        cur = conn.cursor()

        step('Server-side prepared statements, explicitly and by threshold.')
        # Server-side prepared statements, explicitly and by threshold.
        for i in range(50):
            cur.execute("insert into cl_pg3 values (%s, %s, %s)", (i, f"v{i}", i / 2), prepare=True)
        for i in range(50):
            cur.execute("select v, n from cl_pg3 where id = %s", (i,), prepare=True)
            row = cur.fetchone()
            check(row is not None and row[0] == f"v{i}", f"prepared select {i}: {row!r}")
        for i in range(20):
            cur.execute("select %s::int + %s::int", (i, 1))
            check(cur.fetchone()[0] == i + 1, "threshold-prepared select")
        cur.execute("select count(*) from cl_pg3")
        check(cur.fetchone()[0] == 50, "count after prepared inserts")

        step("prepared cache eviction")
        # More distinct statements than the client's prepared cache holds: psycopg
        # deallocates evicted statements while going on.
        for k in range(130):
            cur.execute(f"select %s::int * {k}", (3,))
            check(cur.fetchone()[0] == 3 * k, f"distinct statement {k}")
        for k in range(130):
            cur.execute(f"select %s::int * {k}", (5,))
            check(cur.fetchone()[0] == 5 * k, f"distinct statement {k}, second round")

        step('Pipeline mode: many executes, results at the end.')
        # Pipeline mode: many executes, results at the end.
        with conn.pipeline():
            for i in range(200):
                cur.execute("insert into cl_pg3 values (%s, %s, %s)", (1000 + i, "p", i))
            cur.execute("select count(*) from cl_pg3 where v = 'p'")
            check(cur.fetchone()[0] == 200, "count inside the pipeline")
            curs = []
            for i in range(50):
                c = conn.cursor()
                c.execute("select %s::int * 2, %s::text", (i, f"t{i}"))
                curs.append((i, c))
        for i, c in curs:
            r = c.fetchone()
            check(r == (2 * i, f"t{i}"), f"pipelined select {i}: {r!r}")

        step("error inside a pipeline")
        # An error inside a pipeline: the rest of that batch is skipped, the connection stays
        # usable.
        try:
            with conn.pipeline() as p:
                conn.execute("insert into cl_pg3 values (1, 'dup', 0)")
                conn.execute("insert into cl_pg3 values (5000, 'skipped', 0)")
                p.sync()
            raise AssertionError("the duplicate insert did not fail")
        except errors.UniqueViolation:
            pass
        cur.execute("select count(*) from cl_pg3 where id = 5000")
        check(cur.fetchone()[0] == 0, "a statement after the pipeline error ran")
        with conn.pipeline():
            cur.execute("select 41 + 1")
            check(cur.fetchone()[0] == 42, "pipeline after an error")

        step('executemany (pipelined by psycopg).')
        # executemany (pipelined by psycopg).
        cur.executemany(
            "insert into cl_pg3 values (%s, %s, %s)",
            [(2000 + i, "many", i) for i in range(300)],
        )
        cur.execute("select count(*), sum(n) from cl_pg3 where v = 'many'")
        cnt, total = cur.fetchone()
        check(cnt == 300 and total == sum(range(300)), f"executemany: {cnt} {total}")

        step('Binary results.')
        # Binary results.
        cur.execute("select %s::bytea, %s::int8", (b"\x00\x01\xff", 2**40), binary=True)
        r = cur.fetchone()
        check(r == (b"\x00\x01\xff", 2**40), f"binary results: {r!r}")

        step('Notices.')
        # Notices.
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$")
        check(notices == ["hello from plpgsql"], f"notices: {notices!r}")

        step('COPY both ways.')
        # COPY both ways.
        with cur.copy("copy cl_pg3 (id, v, n) from stdin") as copy:
            for i in range(1000):
                copy.write_row((10000 + i, f"copy {i}", i))
        cur.execute("select count(*) from cl_pg3 where id >= 10000")
        check(cur.fetchone()[0] == 1000, "copy in count")
        got = []
        with cur.copy("copy (select id, v from cl_pg3 where id >= 10000 order by id) to stdout") as copy:
            for row in copy.rows():
                got.append(row)
        check(len(got) == 1000 and got[5] == ("10005", "copy 5"), f"copy out: {got[:3]!r}")

        step('Errors outside a transaction leave the connection usable.')
        # Errors outside a transaction leave the connection usable.
        try:
            conn.execute("select 1/0")
            raise AssertionError("division by zero did not fail")
        except errors.DivisionByZero:
            pass
        check(conn.execute("select 7").fetchone()[0] == 7, "after an error")

    # Non-autocommit connection: implicit transactions, commit, rollback, server cursors.
    with psycopg.connect(dsn, prepare_threshold=0, connect_timeout=10) as conn, trace(conn):
        conn.execute("insert into cl_pg3 values (20000, 'tx', 0)")
        conn.commit()
        conn.execute("insert into cl_pg3 values (20001, 'tx', 0)")
        conn.rollback()
        with conn.transaction():
            conn.execute("insert into cl_pg3 values (20002, 'tx', 0)")
        try:
            with conn.transaction():
                conn.execute("insert into cl_pg3 values (20003, 'tx', 0)")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        step('An error inside a transaction: aborted until rollback.')
        # An error inside a transaction: aborted until rollback.
        try:
            conn.execute("select 1/0")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("select 1")
            raise AssertionError("statement in an aborted transaction did not fail")
        except errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        rows = conn.execute("select id from cl_pg3 where v = 'tx' order by id").fetchall()
        check(rows == [(20000,), (20002,)], f"transactions: {rows!r}")
        conn.commit()

        step('A server-side (named) cursor, fetched in batches inside a transaction.')
        # A server-side (named) cursor, fetched in batches inside a transaction.
        with conn.cursor(name="cl_cursor") as sc:
            sc.itersize = 700
            sc.execute("select g from generate_series(1, 20000) g")
            total = 0
            count = 0
            for (g,) in sc:
                total += g
                count += 1
        check(count == 20000 and total == 20000 * 20001 // 2, f"server cursor: {count} {total}")
        conn.commit()

        step('Pipeline inside a transaction, prepared.')
        # Pipeline inside a transaction, prepared.
        with conn.pipeline():
            with conn.transaction():
                for i in range(100):
                    conn.execute("insert into cl_pg3 values (%s, 'ptx', 0)", (30000 + i,), prepare=True)
        n = conn.execute("select count(*) from cl_pg3 where v = 'ptx'").fetchone()[0]
        check(n == 100, f"pipelined transaction: {n}")
        conn.commit()

    print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: psycopg_client.py DSN", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except Exception:
        traceback.print_exc()
        print("FAILED", file=sys.stderr)
        sys.exit(1)
