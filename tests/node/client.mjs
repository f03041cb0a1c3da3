// node-postgres (pg) and postgres.js through switchyard: simple and parameterized queries,
// named prepared statements (the same name meaning different statements on different
// connections), transactions, errors with their SQLSTATE, a pool of concurrent clients, and
// postgres.js's pipelining (many queries in flight on one connection), automatic prepared
// statements, transactions and cursors.
//
// Usage: node client.mjs HOST PORT DATABASE USER PASSWORD
// Exits non-zero with a message on the first failure; prints "ok" last on success.

import pg from 'pg';
import postgres from 'postgres';

const [host, portText, database, user, password] = process.argv.slice(2);
const port = Number(portText);

function step(s) {
  process.stderr.write(`step: ${s}\n`);
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

async function expectCode(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    check(e.code === code, `${what}: SQLSTATE ${e.code}, expected ${code} (${e.message})`);
    return;
  }
  throw new Error(`${what}: no error`);
}

async function nodePostgres() {
  const config = { host, port, database, user, password, connectionTimeoutMillis: 10000 };
  const c = new pg.Client(config);
  await c.connect();
  try {
    step('pg: simple multi-statement query');
    await c.query('drop table if exists cl_node; create table cl_node (id int primary key, v text)');

    step('pg: parameterized queries (unnamed statement)');
    for (let i = 0; i < 20; i++) {
      const r = await c.query('insert into cl_node values ($1, $2) returning id * 2 as d', [i, `v${i}`]);
      check(r.rows[0].d === 2 * i, `insert returning ${i}`);
    }

    step('pg: a named prepared statement reused');
    for (let i = 0; i < 20; i++) {
      const r = await c.query({ name: 'cl-node-get', text: 'select v from cl_node where id = $1', values: [i] });
      check(r.rows[0].v === `v${i}`, `named ${i}`);
    }

    step('pg: transactions');
    await c.query('begin');
    await c.query('insert into cl_node values (100, $1)', ['kept']);
    await c.query('commit');
    await c.query('begin');
    await c.query('insert into cl_node values (101, $1)', ['gone']);
    await c.query('rollback');
    const n = await c.query('select count(*)::int as n from cl_node where id >= 100');
    check(n.rows[0].n === 1, `after commit and rollback: ${n.rows[0].n}`);

    step('pg: errors');
    await expectCode(c.query('select 1 / $1::int', [0]), '22012', 'division by zero');
    await expectCode(c.query('insert into cl_node values (1, $1)', ['dup']), '23505', 'duplicate key');
    await expectCode(c.query('selec 1'), '42601', 'syntax error');
    check((await c.query('select 41 + 1 as x')).rows[0].x === 42, 'usable after errors');
  } finally {
    await c.end();
  }

  step('pg: a pool, each client with its own meaning of one statement name');
  const pool = new pg.Pool({ ...config, max: 4 });
  await Promise.all([0, 1, 2, 3].map(async (k) => {
    const client = await pool.connect();
    try {
      for (let i = 0; i < 50; i++) {
        const r = await client.query({
          name: 'cl-node-same-name',
          text: `select $1::int * ${k + 1} as x, ${k} as who`,
          values: [i],
        });
        check(r.rows[0].x === i * (k + 1) && r.rows[0].who === k,
          `client ${k} got ${JSON.stringify(r.rows[0])}`);
      }
    } finally {
      client.release();
    }
  }));
  await pool.end();
}

async function postgresJs() {
  const sql = postgres({
    host, port, database, username: user, password,
    max: 3, prepare: true, connect_timeout: 10, onnotice: () => {},
  });
  try {
    step('postgres.js: pipelined queries with automatic prepared statements');
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => sql`select ${i}::int * 3 as x, v from cl_node where id = ${i % 20}`));
    results.forEach((r, i) => {
      check(r[0].x === i * 3 && r[0].v === `v${i % 20}`, `pipelined ${i}: ${JSON.stringify(r[0])}`);
    });

    step('postgres.js: transactions');
    await sql.begin(async (tx) => {
      await tx`insert into cl_node values (200, 'tx')`;
      const [row] = await tx`select count(*)::int as n from cl_node where id = 200`;
      check(row.n === 1, 'visible in its transaction');
    });
    await expectCode(sql.begin(async (tx) => {
      await tx`insert into cl_node values (201, 'rolled back')`;
      await tx`insert into cl_node values (1, 'dup')`;
    }), '23505', 'failing transaction');
    const [after] = await sql`select count(*)::int as n from cl_node where id in (200, 201)`;
    check(after.n === 1, `after the transactions: ${after.n}`);

    step('postgres.js: a cursor');
    let seen = 0;
    await sql.begin(async (tx) => {
      await tx`select id from cl_node order by id`.cursor(7, (rows) => {
        seen += rows.length;
      });
    });
    check(seen === 22, `cursor rows ${seen}`);

    step('postgres.js: errors keep the connection usable');
    await expectCode(sql`select 1 / ${0}::int`, '22012', 'division by zero');
    const [ok] = await sql`select ${'still'}::text || ' fine' as s`;
    check(ok.s === 'still fine', 'usable after an error');

    await sql`drop table cl_node`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

try {
  await nodePostgres();
  await postgresJs();
  console.log('ok');
} catch (e) {
  console.error(e);
  process.exit(1);
}
