-- Schema for tests/sql_corpus/statements.sql: run this once on a fresh database (as a
-- superuser, e.g. split with switchyard::sql::split_statements and run statement by statement,
-- or as one simple-query string) before running the corpus statements.
-- Every corpus statement is meant to be run alone inside `BEGIN READ ONLY; ...; ROLLBACK;`.

-- pgbench
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO pgbench_branches SELECT b, 0 FROM generate_series(1, 2) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, 20) t;
INSERT INTO pgbench_accounts SELECT a, (a - 1) / 500 + 1, 0, '' FROM generate_series(1, 1000) a;

-- an application schema
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE DOMAIN email_address AS text CHECK (VALUE LIKE '%@%');
CREATE TABLE users (
    id serial PRIMARY KEY,
    email email_address UNIQUE NOT NULL,
    name text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    settings jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    manager_id int REFERENCES users (id)
);
CREATE TABLE products (
    id serial PRIMARY KEY,
    sku text UNIQUE NOT NULL,
    name text NOT NULL,
    category text NOT NULL,
    price numeric(10, 2) NOT NULL,
    stock int NOT NULL DEFAULT 0,
    attrs jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users (id),
    status order_status NOT NULL DEFAULT 'new',
    total numeric(12, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    shipped_at timestamptz,
    note text
);
CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders (id),
    product_id int NOT NULL REFERENCES products (id),
    qty int NOT NULL,
    price numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE kv (k text PRIMARY KEY, v text, updated_at timestamptz DEFAULT now());
CREATE TABLE "Weird Table" ("Select" int, "from" text, "FOR UPDATE" boolean);
CREATE TABLE audit (id bigserial PRIMARY KEY, tbl text, op text, at timestamptz DEFAULT now());
CREATE SEQUENCE invoice_seq;
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily (day date PRIMARY KEY, orders int, revenue numeric);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE INDEX orders_created_idx ON orders (created_at);
CREATE INDEX products_category_idx ON products (category);

INSERT INTO users (email, name, active, settings, tags)
SELECT 'user' || i || '@example.com', 'User ' || i, i % 7 <> 0,
       jsonb_build_object('theme', CASE WHEN i % 2 = 0 THEN 'dark' ELSE 'light' END, 'lang', 'en'),
       ARRAY['t' || (i % 5)]
FROM generate_series(1, 200) i;
UPDATE users SET manager_id = 1 WHERE id BETWEEN 2 AND 20;
INSERT INTO products (sku, name, category, price, stock, attrs)
SELECT 'SKU-' || i, 'Product ' || i, (ARRAY['books', 'games', 'tools', 'food'])[1 + i % 4],
       (i * 3.7)::numeric(10, 2), i % 50, jsonb_build_object('color', (ARRAY['red', 'blue'])[1 + i % 2])
FROM generate_series(1, 100) i;
INSERT INTO orders (user_id, status, total, created_at, shipped_at, note)
SELECT 1 + i % 200, (ARRAY['new', 'paid', 'shipped', 'cancelled']::order_status[])[1 + i % 4],
       (i % 97) * 2.5, now() - (i || ' hours')::interval,
       CASE WHEN i % 4 = 2 THEN now() - (i || ' minutes')::interval END, NULL
FROM generate_series(1, 1000) i;
INSERT INTO order_items (order_id, product_id, qty, price)
SELECT o, 1 + (o * 7 + k) % 100, 1 + k, 9.99 FROM generate_series(1, 1000) o, generate_series(0, 2) k;
INSERT INTO events (kind, payload) SELECT (ARRAY['login', 'logout', 'click'])[1 + i % 3], jsonb_build_object('n', i) FROM generate_series(1, 300) i;
INSERT INTO kv (k, v) SELECT 'key' || i, 'value' || i FROM generate_series(1, 50) i;
INSERT INTO "Weird Table" VALUES (1, 'a', true), (2, 'b', false);

CREATE VIEW active_users AS SELECT id, email, name FROM users WHERE active;
CREATE MATERIALIZED VIEW order_totals AS
    SELECT user_id, count(*) AS n, sum(total) AS total FROM orders GROUP BY user_id;

-- functions: a read-only SQL function, a plpgsql function that writes, a procedure
CREATE FUNCTION user_name(uid int) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT name FROM users WHERE id = uid
$$;
CREATE FUNCTION order_count(uid int) RETURNS bigint LANGUAGE sql STABLE
    RETURN (SELECT count(*) FROM orders WHERE user_id = uid);
CREATE FUNCTION log_event(k text) RETURNS bigint LANGUAGE plpgsql AS $body$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO events (kind) VALUES (k) RETURNING id INTO new_id;
    RETURN new_id;
END
$body$;
CREATE PROCEDURE archive_orders(before timestamptz) LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE created_at < before);
    DELETE FROM orders WHERE created_at < before;
END
$$;
CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT i + 1;
END;
CREATE TABLE archived_orders (LIKE orders);
ANALYZE;
