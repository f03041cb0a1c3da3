"""asyncpg through switchyard: prepared statements, the statement cache, executemany,
transactions, cursors, copy_records_to_table, type introspection and a connection pool.

Usage: python asyncpg_client.py DSN
Exits non-zero with a message on the first failure; prints "ok" last on success.
"""

import asyncio
import io
import sys
import traceback

import asyncpg


def step(name):
    """Progress on stderr, so a hang or failure shows where it happened."""
    print(f"step: {name}", file=sys.stderr, flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


async def main(dsn):
    conn = await asyncpg.connect(dsn, statement_cache_size=100, timeout=10, command_timeout=15)
    try:
        step('A simple-protocol script (no arguments).')
        # A simple-protocol script (no arguments).
        await conn.execute(
            "drop table if exists cl_apg; "
            "create table cl_apg (id int primary key, v text, n numeric)"
        )

        step('Explicitly prepared statements.')
        # Explicitly prepared statements.
        stmt = await conn.prepare("select $1::int * 2 as d")
        for i in range(50):
            check(await stmt.fetchval(i) == 2 * i, f"prepared fetchval {i}")
        check([a.name for a in stmt.get_attributes()] == ["d"], "prepared attributes")
        ins = await conn.prepare("insert into cl_apg values ($1, $2, $3)")
        for i in range(20):
            await ins.fetch(i, f"v{i}", i)

        step('The statement cache: the same query text reused many times.')
        # The statement cache: the same query text reused many times.
        for i in range(100):
            check(await conn.fetchval("select $1::text || 'x'", str(i)) == f"{i}x", "cached query")
        step('More distinct statements than the cache holds (evictions close statements).')
        # More distinct statements than the cache holds (evictions close statements).
        for k in range(130):
            check(await conn.fetchval(f"select $1::int + {k}", 1) == 1 + k, f"distinct {k}")
        for k in range(130):
            check(await conn.fetchval(f"select $1::int + {k}", 2) == 2 + k, f"distinct {k} again")

        step('executemany (one pipelined batch).')
        # executemany (one pipelined batch).
        await conn.executemany(
            "insert into cl_apg values ($1, $2, $3)",
            [(100 + i, f"many{i}", i) for i in range(500)],
        )
        check(await conn.fetchval("select count(*) from cl_apg") == 520, "count after executemany")
        step('executemany that fails half way: atomic.')
        # executemany that fails half way: atomic.
        try:
            await conn.executemany(
                "insert into cl_apg values ($1, $2, $3)",
                [(900, "x", 0), (901, "x", 0), (100, "dup", 0), (902, "x", 0)],
            )
            raise AssertionError("executemany with a duplicate did not fail")
        except asyncpg.UniqueViolationError:
            pass
        check(
            await conn.fetchval("select count(*) from cl_apg where id between 900 and 902") == 0,
            "failed executemany left rows behind",
        )

        step('Transactions.')
        # Transactions.
        async with conn.transaction():
            await conn.execute("insert into cl_apg values (1000, 'tx', 1)")
            check(await conn.fetchval("select count(*) from cl_apg where id = 1000") == 1, "in tx")
        try:
            async with conn.transaction():
                await conn.execute("insert into cl_apg values (1001, 'tx', 1)")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        try:
            async with conn.transaction():
                await conn.execute("insert into cl_apg values (1002, 'tx', 1)")
                await conn.execute("select 1/0")
        except asyncpg.DivisionByZeroError:
            pass
        ids = [r["id"] for r in await conn.fetch("select id from cl_apg where v = 'tx' order by id")]
        check(ids == [1000], f"transactions: {ids!r}")
        step('Nested transaction (savepoint).')
        # Nested transaction (savepoint).
        async with conn.transaction():
            await conn.execute("insert into cl_apg values (1003, 'tx', 1)")
            try:
                async with conn.transaction():
                    await conn.execute("insert into cl_apg values (1003, 'dup', 1)")
            except asyncpg.UniqueViolationError:
                pass
            await conn.execute("insert into cl_apg values (1004, 'tx', 1)")
        ids = [r["id"] for r in await conn.fetch("select id from cl_apg where v = 'tx' order by id")]
        check(ids == [1000, 1003, 1004], f"savepoints: {ids!r}")

        step('A cursor (portal fetched in batches) inside a transaction.')
        # A cursor (portal fetched in batches) inside a transaction.
        async with conn.transaction():
            total = 0
            count = 0
            async for r in conn.cursor("select g from generate_series(1, 5000) g", prefetch=300):
                total += r["g"]
                count += 1
            check(count == 5000 and total == 5000 * 5001 // 2, f"cursor: {count} {total}")
            cur = await conn.cursor("select g from generate_series(1, 100) g")
            first = await cur.fetch(10)
            await cur.forward(80)
            rest = await cur.fetch(50)
            check([r["g"] for r in first] == list(range(1, 11)), "cursor fetch")
            check([r["g"] for r in rest] == list(range(91, 101)), "cursor forward")

        step('COPY.')
        # COPY.
        res = await conn.copy_records_to_table(
            "cl_apg",
            records=[(5000 + i, f"c{i}", i) for i in range(1000)],
            columns=["id", "v", "n"],
        )
        check(res == "COPY 1000", f"copy_records_to_table: {res!r}")
        check(
            await conn.fetchval("select count(*) from cl_apg where id >= 5000") == 1000,
            "copied rows",
        )
        buf = io.BytesIO()
        res = await conn.copy_from_query(
            "select id, v from cl_apg where id >= 5000 order by id", output=buf
        )
        check(res == "COPY 1000", f"copy_from_query: {res!r}")
        lines = buf.getvalue().decode().splitlines()
        check(len(lines) == 1000 and lines[3] == "5003\tc3", f"copy out: {lines[:3]!r}")

        step('Type introspection (a custom enum and a composite).')
        # Type introspection (a custom enum and a composite).
        await conn.execute(
            "drop type if exists cl_mood cascade; create type cl_mood as enum ('sad', 'happy'); "
            "drop type if exists cl_pair cascade; create type cl_pair as (a int, b text)"
        )
        check(await conn.fetchval("select 'happy'::cl_mood") == "happy", "enum")
        check(await conn.fetchval("select $1::cl_mood", "sad") == "sad", "enum parameter")
        pair = await conn.fetchval("select row(1, 'x')::cl_pair")
        check(tuple(pair) == (1, "x"), f"composite: {pair!r}")

        step('A large-ish result.')
        # A large-ish result.
        rows = await conn.fetch("select g, md5(g::text) from generate_series(1, 100000) g")
        check(len(rows) == 100000 and rows[-1]["g"] == 100000, "large result")

    finally:
        await conn.close()

    # A pool: many concurrent queries on several connections.
    step("pool")
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=6, timeout=10, command_timeout=15)
    try:
        async def one(i):
            async with pool.acquire() as c:
                async with c.transaction():
                    await c.execute("insert into cl_apg values ($1, 'pool', $2)", 50000 + i, i)
                return await c.fetchval("select $1::int * 3", i)

        got = await asyncio.gather(*[one(i) for i in range(200)])
        check(got == [3 * i for i in range(200)], "pool results")
        check(
            await pool.fetchval("select count(*) from cl_apg where v = 'pool'") == 200,
            "pool inserts",
        )
    finally:
        await pool.close()

    # Errors leave the connection usable: a statement that fails to prepare (asyncpg sends
    # Parse/Describe/Flush, and Sync only after the error), then more statements.
    step("errors leave the connection usable")
    conn = await asyncpg.connect(dsn, statement_cache_size=100, timeout=10, command_timeout=15)
    try:
        for _ in range(3):
            try:
                await conn.fetchval("select * from cl_no_such_table")
                raise AssertionError("missing table did not fail")
            except asyncpg.UndefinedTableError:
                pass
            check(await conn.fetchval("select 1") == 1, "after an error")
            check(await conn.fetchval("select $1::int + 1", 41) == 42, "after an error")
    finally:
        await conn.close()
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: asyncpg_client.py DSN", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=75))
    except BaseException:
        traceback.print_exc()
        print("FAILED", file=sys.stderr)
        sys.exit(1)
