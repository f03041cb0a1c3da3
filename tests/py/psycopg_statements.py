"""psycopg 3's prepared statements against schema changes and closing, through switchyard.

- In one transaction, a statement using an enum type is prepared, the type and its table are
  dropped and created again (psycopg then sends DEALLOCATE ALL) and the same statement is
  prepared again: it must see the new type (a server statement parsed before the change
  would fail with "cache lookup failed for type").
- With --alone (directly, or through a proxy no other client uses): the server's
  pg_prepared_statements after DEALLOCATE ALL (also in a transaction block), after
  DEALLOCATE of one statement, after psycopg closes the statements beyond its prepared_max, and in a new connection after
  another one prepared statements and left.

Usage: python psycopg_statements.py DSN [--alone]
Exits non-zero with a message on the first failure; prints "ok" last on success.
"""

import sys

import psycopg


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def change_type(dsn):
    insert = "INSERT INTO cl_pst (tags) VALUES (%(v)s::cl_pst_enum[])"
    with psycopg.connect(dsn, prepare_threshold=0, connect_timeout=10) as conn:
        try:
            for round in range(3):
                conn.execute("DROP TABLE IF EXISTS cl_pst")
                conn.execute("DROP TYPE IF EXISTS cl_pst_enum")
                conn.execute("CREATE TYPE cl_pst_enum AS ENUM ('foo', 'bar')")
                conn.execute("CREATE TABLE cl_pst (id serial, tags cl_pst_enum[])")
                try:
                    conn.execute(insert, {"v": ["foo", "bar"]})
                except psycopg.Error as e:
                    raise AssertionError(f"insert after re-creating the type (round {round}): {e}")
            n = conn.execute("SELECT count(*) FROM cl_pst").fetchone()[0]
            check(n == 1, f"rows in the last table: {n}")
        finally:
            conn.rollback()


def server_statements(conn):
    rows = conn.execute(
        "SELECT statement FROM pg_prepared_statements ORDER BY prepare_time, statement",
        prepare=False,
    ).fetchall()
    return [r[0] for r in rows]


def alone(dsn):
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT 1 AS a", prepare=True)
        conn.execute("SELECT 2 AS b", prepare=True)
        got = server_statements(conn)
        check(got == ["SELECT 1 AS a", "SELECT 2 AS b"], f"after preparing two: {got}")

        conn.execute("DEALLOCATE ALL")
        got = server_statements(conn)
        check(got == [], f"after DEALLOCATE ALL: {got}")
        # psycopg forgot them too: the next use prepares again, and it works.
        check(conn.execute("SELECT 1 AS a", prepare=True).fetchone() == (1,), "select 1")

        # A DDL statement makes psycopg drop its statements with DEALLOCATE ALL.
        conn.execute("DROP TABLE IF EXISTS cl_pst_ddl")
        got = server_statements(conn)
        check(got == [], f"after a DDL statement (DEALLOCATE ALL by psycopg): {got}")

        # psycopg closes the least recently used statement beyond prepared_max.
        conn.prepared_max = 3
        conn.prepare_threshold = 0
        texts = [f"SELECT {i} AS n" for i in range(6)]
        for t in texts:
            check(conn.execute(t).fetchone() is not None, t)
        got = server_statements(conn)
        check(got == texts[-3:], f"with prepared_max = 3, the server has {got}")

    # SQL DEALLOCATE of one protocol-level statement, by the name psycopg gave it.
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT 7 AS x", prepare=True)
        conn.execute("SELECT 8 AS y", prepare=True)
        check(len(server_statements(conn)) == 2, "two prepared")
        # psycopg names its statements _pg3_<n>, in order.
        conn.execute("DEALLOCATE _pg3_0", prepare=False)
        got = server_statements(conn)
        check(got == ["SELECT 8 AS y"], f"after DEALLOCATE _pg3_0: {got}")

    # DEALLOCATE ALL by psycopg right after a write (switchyard still reads the commit's
    # position on the connection), then a query at once.
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT 10 AS w", prepare=True)
        conn.execute("DROP TABLE IF EXISTS cl_pst_x; CREATE TABLE cl_pst_x ()")
        got = server_statements(conn)
        conn.execute("DROP TABLE cl_pst_x")
        check(got == [], f"after a write and DEALLOCATE ALL: {got}")

    # In a transaction block (psycopg's default): statements dropped by DEALLOCATE ALL there
    # are gone from the server at once, as directly (psycopg's own test_change_type counts
    # them after it dropped its statements in a block).
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SELECT 21 AS t1", prepare=True)
        conn.execute("SELECT 22 AS t2", prepare=True)
        conn.execute("DEALLOCATE ALL")
        got = server_statements(conn)
        check(got == [], f"in a block, after DEALLOCATE ALL: {got}")
        conn.execute("SELECT 23 AS t3", prepare=True)
        got = server_statements(conn)
        check(got == ["SELECT 23 AS t3"], f"in a block, prepared after DEALLOCATE ALL: {got}")
        conn.commit()
        got = server_statements(conn)
        check(got == ["SELECT 23 AS t3"], f"after the block: {got}")
        conn.rollback()

    # A new connection after that one left: nothing of the other's, and its own.
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        got = server_statements(conn)
        check(got == [], f"a new connection sees {got}")
        conn.execute("SELECT 9 AS z", prepare=True)
        got = server_statements(conn)
        check(got == ["SELECT 9 AS z"], f"a new connection's own: {got}")


def main(dsn, only_client):
    change_type(dsn)
    if only_client:
        alone(dsn)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], "--alone" in sys.argv[2:])
