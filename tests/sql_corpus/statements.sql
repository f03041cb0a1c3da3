-- switchyard SQL corpus: one statement per record; records are separated by lines consisting
-- of exactly `-- ;;`. Records that hold only comments (like this header) are to be skipped.
-- Run tests/sql_corpus/schema.sql on a fresh database first; each statement is meant to be
-- run alone inside `BEGIN READ ONLY; <statement>; ROLLBACK;` (a statement is a write if it
-- fails there with SQLSTATE 25006). Generated; statements have no trailing `;` unless the
-- record tests a trailing `;` or comment.
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 919
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 414
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 122
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 608
-- ;;
select abalance from pgbench_accounts where aid = 963
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 812
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 238
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 383
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 22
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 495
-- ;;
select abalance from pgbench_accounts where aid = 64
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 392
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 266
-- ;;
select abalance from pgbench_accounts where aid = 62
-- ;;
select abalance from pgbench_accounts where aid = 401
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 119
-- ;;
select abalance from pgbench_accounts where aid = 235
-- ;;
select abalance from pgbench_accounts where aid = 633
-- ;;
select abalance from pgbench_accounts where aid = 784
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 704
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 514
-- ;;
select abalance from pgbench_accounts where aid = 65
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 508
-- ;;
SELECT abalance FROM pgbench_accounts WHERE aid = 149
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 15
-- ;;
select bbalance from pgbench_branches where bid = 2
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 12
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 7
-- ;;
select bbalance from pgbench_branches where bid = 1
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 18
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 20
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 2
-- ;;
SELECT tbalance FROM pgbench_tellers WHERE tid = 8
-- ;;
SELECT count(*) FROM pgbench_branches
-- ;;
SELECT sum(abalance), avg(abalance) FROM pgbench_accounts WHERE bid = 1
-- ;;
select manager_id from users where tags @> array['t1'] limit 3 offset 16
-- ;;
SELECT attrs, stock, name, sku FROM products WHERE stock = 0
-- ;;
SELECT stock, sku, attrs FROM products WHERE id = 99 ORDER BY 1 DESC
-- ;;
SELECT category, id, name, stock FROM products WHERE attrs->>'color' = 'red' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT status, created_at, user_id, id FROM orders WHERE status IN ('new', 'paid') AND total > 83 ORDER BY 1 LIMIT 45
-- ;;
SELECT price, sku, attrs, stock FROM products WHERE stock = 0 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT created_at, shipped_at FROM orders WHERE id = 878 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT active, manager_id, id FROM users WHERE created_at > now() - interval '20 days' ORDER BY 1 DESC
-- ;;
SELECT manager_id, email, tags FROM users WHERE id = 28 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT attrs FROM products WHERE category = 'tools' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT settings, active FROM users WHERE manager_id IS NOT NULL
-- ;;
SELECT created_at FROM users WHERE active
-- ;;
SELECT price FROM products WHERE attrs->>'color' = 'red' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT category, price FROM products WHERE attrs->>'color' = 'red' LIMIT 8 OFFSET 2
-- ;;
SELECT created_at, email, id, settings FROM users WHERE name LIKE 'User 6%' FETCH FIRST 5 ROWS ONLY
-- ;;
select id, stock, category from products where price < 276.60 limit 9 offset 14
-- ;;
SELECT id, email, created_at, active FROM users WHERE settings ? 'lang' ORDER BY 1 LIMIT 29
-- ;;
SELECT created_at, shipped_at, note, status FROM orders WHERE status IN ('new', 'paid') AND total > 32
-- ;;
SELECT settings, manager_id FROM users WHERE settings->>'theme' = 'dark' ORDER BY 1 DESC
-- ;;
SELECT total FROM orders WHERE shipped_at IS NULL
-- ;;
SELECT attrs, id, sku FROM products WHERE name ILIKE '%3%' LIMIT 9 OFFSET 10
-- ;;
SELECT id, shipped_at FROM orders WHERE status IN ('new', 'paid') AND total > 76
-- ;;
select id, user_id, created_at from orders where status in ('new', 'paid') and total > 13 fetch first 5 rows only
-- ;;
select created_at from orders where user_id = 158 fetch first 5 rows only
-- ;;
select price, sku from products where price < 57.24 limit 1 offset 4
-- ;;
select status, created_at from orders where id = 62
-- ;;
SELECT id, created_at FROM users WHERE NOT active ORDER BY 1 LIMIT 50
-- ;;
SELECT shipped_at, status, created_at FROM orders WHERE status IN ('new', 'paid') AND total > 31 ORDER BY 1 DESC
-- ;;
select email from users where id = 178
-- ;;
select id, sku, stock, name from products where stock = 0 fetch first 5 rows only
-- ;;
SELECT tags FROM users WHERE id = 5 ORDER BY 1 DESC
-- ;;
SELECT created_at, total, user_id FROM orders WHERE shipped_at IS NULL
-- ;;
SELECT manager_id, id, tags, settings FROM users WHERE manager_id IS NOT NULL LIMIT 10 OFFSET 13
-- ;;
SELECT name, id FROM users WHERE name LIKE 'User 4%'
-- ;;
SELECT price, attrs FROM products WHERE id = 64 ORDER BY 1 DESC
-- ;;
SELECT name, attrs, id FROM products WHERE name ILIKE '%8%' LIMIT 1 OFFSET 2
-- ;;
SELECT total FROM orders WHERE created_at >= now() - interval '32 hours' LIMIT 6 OFFSET 3
-- ;;
SELECT id, name FROM products WHERE stock = 0 LIMIT 8 OFFSET 14
-- ;;
SELECT manager_id FROM users WHERE name LIKE 'User 5%'
-- ;;
select category, stock, sku, name from products where attrs->>'color' = 'red' limit 4 offset 9
-- ;;
SELECT note, user_id, shipped_at, id FROM orders WHERE created_at >= now() - interval '13 hours' ORDER BY 1 LIMIT 40
-- ;;
SELECT user_id, total FROM orders WHERE created_at >= now() - interval '42 hours' ORDER BY 1 LIMIT 50
-- ;;
SELECT id, settings, manager_id, email FROM users WHERE settings->>'theme' = 'dark' LIMIT 7 OFFSET 15
-- ;;
SELECT created_at, settings FROM users WHERE id = 128 ORDER BY 1 DESC
-- ;;
select settings, created_at, id, active from users where created_at > now() - interval '29 days'
-- ;;
SELECT name, attrs, category FROM products WHERE price < 185.50
-- ;;
SELECT note, shipped_at FROM orders WHERE status IN ('new', 'paid') AND total > 83 FETCH FIRST 5 ROWS ONLY
-- ;;
select attrs from products where attrs @> '{"color": "blue"}' fetch first 5 rows only
-- ;;
SELECT name, category, attrs, id FROM products WHERE stock = 0 LIMIT 8 OFFSET 20
-- ;;
SELECT email, id, settings FROM users WHERE tags @> ARRAY['t2'] FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT active, created_at, id FROM users WHERE active FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT status, note, id FROM orders WHERE note IS DISTINCT FROM 'x' ORDER BY 1 LIMIT 38
-- ;;
SELECT category, name FROM products WHERE name ILIKE '%1%' ORDER BY 1 LIMIT 35
-- ;;
SELECT created_at, id FROM users WHERE id IN (8, 76, 114) LIMIT 2 OFFSET 1
-- ;;
SELECT note, shipped_at, created_at, total FROM orders WHERE id = 534 ORDER BY 1 LIMIT 37
-- ;;
select email, created_at, settings, manager_id from users where created_at > now() - interval '5 days' fetch first 5 rows only
-- ;;
SELECT id, price, category, stock FROM products WHERE id = 46 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT status, total FROM orders WHERE created_at >= now() - interval '23 hours' ORDER BY 1 DESC
-- ;;
SELECT id, stock, sku FROM products WHERE id = 76 ORDER BY 1 LIMIT 20
-- ;;
SELECT category, price, attrs FROM products WHERE id = 16 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT user_id, status FROM orders WHERE shipped_at IS NULL ORDER BY 1 DESC
-- ;;
SELECT id, manager_id, email FROM users WHERE id IN (7, 88, 101)
-- ;;
SELECT active, email, manager_id, created_at FROM users WHERE tags @> ARRAY['t1']
-- ;;
SELECT id, category FROM products WHERE name ILIKE '%6%' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT id, status, total FROM orders WHERE status = 'new'
-- ;;
SELECT status FROM orders WHERE shipped_at IS NULL
-- ;;
select created_at, status, note from orders where id = 436 order by 1 desc
-- ;;
SELECT tags FROM users WHERE email = 'user96@example.com' ORDER BY 1 LIMIT 24
-- ;;
SELECT shipped_at FROM orders WHERE total BETWEEN 46 AND 67
-- ;;
SELECT name, attrs FROM products WHERE stock = 0 ORDER BY 1 LIMIT 10
-- ;;
select user_id, created_at, id from orders where created_at >= now() - interval '14 hours' limit 8 offset 7
-- ;;
select created_at, id, settings, email from users where email = 'user62@example.com' limit 5 offset 15
-- ;;
select stock from products where name ilike '%6%' order by 1 limit 28
-- ;;
SELECT id FROM products WHERE category = 'food'
-- ;;
SELECT name, settings FROM users WHERE id IN (36, 83, 122) ORDER BY 1 DESC
-- ;;
select id, name, sku from products where attrs->>'color' = 'red'
-- ;;
select active, manager_id, email, name from users where settings->>'theme' = 'dark' order by 1 desc
-- ;;
SELECT active, tags FROM users WHERE 't1' = ANY(tags) LIMIT 2 OFFSET 13
-- ;;
select note, id from orders where shipped_at is null order by 1 limit 4
-- ;;
SELECT category, name FROM products WHERE category = 'food' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT status, total, user_id FROM orders WHERE note IS DISTINCT FROM 'x' LIMIT 4 OFFSET 18
-- ;;
SELECT name, active, tags FROM users WHERE id IN (14, 84, 191) LIMIT 4 OFFSET 9
-- ;;
SELECT note, id, status, user_id FROM orders WHERE user_id = 133 ORDER BY 1 DESC
-- ;;
SELECT email, settings, tags FROM users WHERE name LIKE 'User 6%'
-- ;;
SELECT name FROM products WHERE price < 211.48
-- ;;
SELECT attrs, stock, price, sku FROM products WHERE sku = 'SKU-14' ORDER BY 1 LIMIT 1
-- ;;
SELECT created_at, user_id FROM orders WHERE id = 160 LIMIT 1 OFFSET 8
-- ;;
SELECT category, stock, name, price FROM products WHERE name ILIKE '%4%' ORDER BY 1 LIMIT 44
-- ;;
SELECT stock, category FROM products WHERE price < 50.71
-- ;;
select name, category, attrs, id from products where id = 41
-- ;;
SELECT created_at, shipped_at, user_id FROM orders WHERE created_at >= now() - interval '20 hours'
-- ;;
select email, active, name from users where active order by 1 desc
-- ;;
SELECT note, total, created_at FROM orders WHERE total BETWEEN 47 AND 184 ORDER BY 1 LIMIT 36
-- ;;
SELECT created_at, manager_id, tags, settings FROM users WHERE 't1' = ANY(tags)
-- ;;
SELECT id FROM users WHERE NOT active FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT manager_id, settings, tags FROM users WHERE manager_id IS NOT NULL
-- ;;
SELECT stock, name, category, sku FROM products WHERE stock = 0 FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT stock FROM products WHERE price < 122.96
-- ;;
SELECT id, stock, category, price FROM products WHERE stock = 0 ORDER BY 1 DESC
-- ;;
SELECT active, tags FROM users WHERE active
-- ;;
SELECT price, sku FROM products WHERE stock = 0 LIMIT 3 OFFSET 1
-- ;;
SELECT sku, attrs, name, category FROM products WHERE attrs @> '{"color": "blue"}'
-- ;;
select user_id, created_at from orders where created_at >= now() - interval '28 hours'
-- ;;
select id, price, stock, category from products where category = 'tools' limit 9 offset 0
-- ;;
SELECT created_at, email, active, name FROM users WHERE settings->>'theme' = 'dark' FETCH FIRST 5 ROWS ONLY
-- ;;
SELECT id FROM orders WHERE shipped_at IS NULL
-- ;;
SELECT price, category, name, stock FROM products WHERE price < 270.46
-- ;;
SELECT created_at, shipped_at, total, id FROM orders WHERE note IS DISTINCT FROM 'x' LIMIT 1 OFFSET 2
-- ;;
SELECT stock, name FROM products WHERE id = 37 LIMIT 8 OFFSET 8
-- ;;
select name, settings from users where name like 'User 4%' order by 1 desc
-- ;;
SELECT name FROM users WHERE id = 1
-- ;;
SELECT * FROM orders WHERE user_id = 3 AND status = 'paid'
-- ;;
SELECT id, price FROM products WHERE category = 'books' ORDER BY price LIMIT 3
-- ;;
SELECT p.category, sum(i.qty) FROM order_items i JOIN products p ON p.id = i.product_id GROUP BY p.category
-- ;;
select t.tid, b.bbalance from pgbench_tellers t join pgbench_branches b using (bid) where t.tid = 10
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 19
-- ;;
SELECT o.id, p.name, i.qty * i.price AS line FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id WHERE o.id = 295
-- ;;
select p.category, sum(i.qty) from order_items i join products p on p.id = i.product_id group by p.category
-- ;;
SELECT * FROM users u RIGHT JOIN orders o ON o.user_id = u.id WHERE o.total > 20 LIMIT 22
-- ;;
SELECT u.name, x.n FROM users u LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders WHERE user_id = u.id) x ON true WHERE u.active LIMIT 24
-- ;;
SELECT u.id, m.name AS manager FROM users u FULL OUTER JOIN users m ON u.manager_id = m.id WHERE u.id < 27
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 29
-- ;;
SELECT o.id, p.name, i.qty * i.price AS line FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id WHERE o.id = 390
-- ;;
SELECT u.name, x.n FROM users u LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders WHERE user_id = u.id) x ON true WHERE u.active LIMIT 5
-- ;;
select o.id, p.name, i.qty * i.price as line from orders o join order_items i on i.order_id = o.id join products p on p.id = i.product_id where o.id = 373
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 78 AND 377
-- ;;
SELECT u.name, o.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 23
-- ;;
select u.email, count(o.id) from users u left join orders o on o.user_id = u.id group by u.email order by 2 desc limit 23
-- ;;
SELECT t.tid, b.bbalance FROM pgbench_tellers t JOIN pgbench_branches b USING (bid) WHERE t.tid = 1
-- ;;
SELECT u.name, x.n FROM users u LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders WHERE user_id = u.id) x ON true WHERE u.active LIMIT 3
-- ;;
SELECT * FROM users u RIGHT JOIN orders o ON o.user_id = u.id WHERE o.total > 194 LIMIT 15
-- ;;
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.status = 'cancelled') LIMIT 7
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 7
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 4
-- ;;
SELECT u.id, m.name AS manager FROM users u FULL OUTER JOIN users m ON u.manager_id = m.id WHERE u.id < 16
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 9
-- ;;
SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id AND u.active JOIN order_items i ON i.order_id = o.id GROUP BY o.id HAVING count(*) > 3
-- ;;
SELECT u.id, m.name AS manager FROM users u FULL OUTER JOIN users m ON u.manager_id = m.id WHERE u.id < 3
-- ;;
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.status = 'cancelled') LIMIT 9
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 27
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 13
-- ;;
SELECT o.* FROM orders o NATURAL JOIN (SELECT 50 AS user_id) s
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 63 AND 309
-- ;;
select a.aid, a.abalance, b.bbalance from pgbench_accounts a inner join pgbench_branches b on a.bid = b.bid where a.aid between 193 and 224
-- ;;
SELECT * FROM users u RIGHT JOIN orders o ON o.user_id = u.id WHERE o.total > 167 LIMIT 21
-- ;;
SELECT u.name, o.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 155
-- ;;
select o.* from orders o natural join (select 84 as user_id) s
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 27 AND 206
-- ;;
SELECT * FROM users u RIGHT JOIN orders o ON o.user_id = u.id WHERE o.total > 11 LIMIT 30
-- ;;
SELECT o.* FROM orders o NATURAL JOIN (SELECT 101 AS user_id) s
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 28
-- ;;
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.status = 'cancelled') LIMIT 8
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 22
-- ;;
SELECT u.name, x.n FROM users u LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders WHERE user_id = u.id) x ON true WHERE u.active LIMIT 1
-- ;;
SELECT a.k, b.k FROM kv a CROSS JOIN kv b WHERE a.k < b.k LIMIT 2
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 179 AND 217
-- ;;
select u.name, o.id, o.total from users u join orders o on o.user_id = u.id where u.id = 142
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 14
-- ;;
SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id AND u.active JOIN order_items i ON i.order_id = o.id GROUP BY o.id HAVING count(*) > 2
-- ;;
SELECT a.k, b.k FROM kv a CROSS JOIN kv b WHERE a.k < b.k LIMIT 29
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 97 AND 203
-- ;;
select o.* from orders o natural join (select 97 as user_id) s
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 182 AND 398
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 23
-- ;;
SELECT o.id, p.name, i.qty * i.price AS line FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id WHERE o.id = 950
-- ;;
select u.name, o.id, o.total from users u join orders o on o.user_id = u.id where u.id = 84
-- ;;
SELECT u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.email ORDER BY 2 DESC LIMIT 29
-- ;;
select o.* from orders o natural join (select 16 as user_id) s
-- ;;
SELECT o.id, p.name, i.qty * i.price AS line FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id WHERE o.id = 558
-- ;;
SELECT t.tid, b.bbalance FROM pgbench_tellers t JOIN pgbench_branches b USING (bid) WHERE t.tid = 8
-- ;;
select u.email, count(o.id) from users u left join orders o on o.user_id = u.id group by u.email order by 2 desc limit 27
-- ;;
select u.id, m.name as manager from users u full outer join users m on u.manager_id = m.id where u.id < 16
-- ;;
SELECT u.id, m.name AS manager FROM users u FULL OUTER JOIN users m ON u.manager_id = m.id WHERE u.id < 19
-- ;;
select * from users u right join orders o on o.user_id = u.id where o.total > 94 limit 1
-- ;;
SELECT u.id, m.name AS manager FROM users u FULL OUTER JOIN users m ON u.manager_id = m.id WHERE u.id < 4
-- ;;
SELECT o.id, p.name, i.qty * i.price AS line FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id WHERE o.id = 711
-- ;;
select u.name, last.id from users u cross join lateral (select id from orders o where o.user_id = u.id order by created_at desc limit 1) last where u.id <= 1
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 180 AND 390
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 127 AND 383
-- ;;
select o.id from orders o join users u on u.id = o.user_id and u.active join order_items i on i.order_id = o.id group by o.id having count(*) > 3
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 28
-- ;;
select u.name, x.n from users u left join lateral (select count(*) as n from orders where user_id = u.id) x on true where u.active limit 16
-- ;;
SELECT t.tid, b.bbalance FROM pgbench_tellers t JOIN pgbench_branches b USING (bid) WHERE t.tid = 15
-- ;;
SELECT t.tid, b.bbalance FROM pgbench_tellers t JOIN pgbench_branches b USING (bid) WHERE t.tid = 18
-- ;;
SELECT u.name, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) last WHERE u.id <= 23
-- ;;
select o.id from orders o join users u on u.id = o.user_id and u.active join order_items i on i.order_id = o.id group by o.id having count(*) > 2
-- ;;
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a INNER JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid BETWEEN 74 AND 226
-- ;;
SELECT u.name, o.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 52
-- ;;
SELECT status, count(*), sum(total), avg(total)::numeric(10,2) FROM orders GROUP BY status
-- ;;
SELECT category, stock > 0 AS in_stock, count(*) FROM products GROUP BY ROLLUP (category, stock > 0)
-- ;;
select category, status, count(*) from orders o join order_items i on i.order_id = o.id join products p on p.id = i.product_id group by grouping sets ((category), (status), ())
-- ;;
SELECT kind, count(*) FROM events GROUP BY kind ORDER BY count(*) DESC
-- ;;
SELECT user_id, array_agg(id ORDER BY id) FROM orders WHERE user_id < 4 GROUP BY user_id
-- ;;
SELECT jsonb_object_agg(k, v) FROM kv WHERE k LIKE 'key5%'
-- ;;
select user_id, array_agg(id order by id) from orders where user_id < 37 group by user_id
-- ;;
SELECT category, status, count(*) FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id GROUP BY GROUPING SETS ((category), (status), ())
-- ;;
select user_id, array_agg(id order by id) from orders where user_id < 15 group by user_id
-- ;;
SELECT count(DISTINCT user_id) FROM orders WHERE total > 30
-- ;;
SELECT user_id, array_agg(id ORDER BY id) FROM orders WHERE user_id < 38 GROUP BY user_id
-- ;;
select status, count(*), sum(total), avg(total)::numeric(10,2) from orders group by status
-- ;;
SELECT user_id, array_agg(id ORDER BY id) FROM orders WHERE user_id < 26 GROUP BY user_id
-- ;;
SELECT mode() WITHIN GROUP (ORDER BY category) FROM products
-- ;;
select user_id, array_agg(id order by id) from orders where user_id < 17 group by user_id
-- ;;
SELECT status, extract(hour FROM created_at) AS h, count(*) FROM orders GROUP BY CUBE (status, h)
-- ;;
SELECT date_trunc('day', created_at) AS day, count(*) FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 40
-- ;;
select mode() within group (order by category) from products
-- ;;
SELECT date_trunc('day', created_at) AS day, count(*) FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 8
-- ;;
select bool_and(active), bool_or(active), every(active) from users
-- ;;
SELECT category, min(price), max(price) FROM products GROUP BY category HAVING count(*) > 7 ORDER BY 1
-- ;;
SELECT count(DISTINCT user_id) FROM orders WHERE total > 125
-- ;;
select user_id, array_agg(id order by id) from orders where user_id < 28 group by user_id
-- ;;
SELECT category, min(price), max(price) FROM products GROUP BY category HAVING count(*) > 4 ORDER BY 1
-- ;;
select category, stock > 0 as in_stock, count(*) from products group by rollup (category, stock > 0)
-- ;;
SELECT user_id, array_agg(id ORDER BY id) FROM orders WHERE user_id < 40 GROUP BY user_id
-- ;;
select string_agg(name, ', ' order by name) from users where id < 29
-- ;;
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders
-- ;;
SELECT date_trunc('day', created_at) AS day, count(*) FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 31
-- ;;
select count(distinct user_id) from orders where total > 106
-- ;;
SELECT user_id, array_agg(id ORDER BY id) FROM orders WHERE user_id < 30 GROUP BY user_id
-- ;;
select string_agg(name, ', ' order by name) from users where id < 19
-- ;;
SELECT id, total, sum(total) OVER (ORDER BY id ROWS BETWEEN 8 PRECEDING AND CURRENT ROW) FROM orders LIMIT 20
-- ;;
SELECT category, name, price, dense_rank() OVER (PARTITION BY category ORDER BY price DESC) FROM products
-- ;;
select id, avg(total) over (partition by status range between unbounded preceding and current row) from orders limit 6
-- ;;
SELECT id, first_value(name) OVER (ORDER BY id GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW) FROM users LIMIT 27
-- ;;
SELECT id, lag(total) OVER w, lead(total) OVER w FROM orders WINDOW w AS (PARTITION BY user_id ORDER BY id) LIMIT 32
-- ;;
select id, user_id, row_number() over (partition by user_id order by created_at) from orders where user_id < 7
-- ;;
select id, lag(total) over w, lead(total) over w from orders window w as (partition by user_id order by id) limit 5
-- ;;
SELECT id, total, rank() OVER (ORDER BY total DESC) FROM orders LIMIT 2
-- ;;
SELECT id, avg(total) OVER (PARTITION BY status RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders LIMIT 28
-- ;;
SELECT id, user_id, row_number() OVER (PARTITION BY user_id ORDER BY created_at) FROM orders WHERE user_id < 29
-- ;;
SELECT id, avg(total) OVER (PARTITION BY status RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders LIMIT 31
-- ;;
SELECT id, total, sum(total) OVER (ORDER BY id ROWS BETWEEN 8 PRECEDING AND CURRENT ROW) FROM orders LIMIT 18
-- ;;
SELECT id, total, rank() OVER (ORDER BY total DESC) FROM orders LIMIT 28
-- ;;
select id, total, rank() over (order by total desc) from orders limit 39
-- ;;
SELECT id, total, rank() OVER (ORDER BY total DESC) FROM orders LIMIT 6
-- ;;
SELECT id, total, sum(total) OVER (ORDER BY id ROWS BETWEEN 7 PRECEDING AND CURRENT ROW) FROM orders LIMIT 2
-- ;;
select id, total, rank() over (order by total desc) from orders limit 6
-- ;;
SELECT id, user_id, row_number() OVER (PARTITION BY user_id ORDER BY created_at) FROM orders WHERE user_id < 14
-- ;;
SELECT id, avg(total) OVER (PARTITION BY status RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders LIMIT 7
-- ;;
SELECT id, total, rank() OVER (ORDER BY total DESC) FROM orders LIMIT 27
-- ;;
SELECT id, lag(total) OVER w, lead(total) OVER w FROM orders WINDOW w AS (PARTITION BY user_id ORDER BY id) LIMIT 23
-- ;;
SELECT * FROM (SELECT id, ntile(4) OVER (ORDER BY price) q FROM products) s WHERE q = 3
-- ;;
SELECT * FROM (SELECT id, ntile(4) OVER (ORDER BY price) q FROM products) s WHERE q = 1
-- ;;
select id, lag(total) over w, lead(total) over w from orders window w as (partition by user_id order by id) limit 35
-- ;;
SELECT * FROM (SELECT id, ntile(4) OVER (ORDER BY price) q FROM products) s WHERE q = 2
-- ;;
SELECT id, avg(total) OVER (PARTITION BY status RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders LIMIT 12
-- ;;
select id, total, rank() over (order by total desc) from orders limit 18
-- ;;
SELECT id, avg(total) OVER (PARTITION BY status RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders LIMIT 19
-- ;;
with totals(uid, s) as (select user_id, sum(total) from orders group by user_id) select u.name, t.s from totals t join users u on u.id = t.uid order by t.s desc limit 16
-- ;;
WITH t AS MATERIALIZED (SELECT category, avg(price) p FROM products GROUP BY category) SELECT * FROM t WHERE p > 192
-- ;;
with t as not materialized (select * from kv) select k from t where v = 'value13'
-- ;;
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 35) SEARCH DEPTH FIRST BY n SET ordercol SELECT * FROM t ORDER BY ordercol
-- ;;
with a as (select id from users where active), b as (select user_id from orders where status = 'paid') select count(*) from a join b on a.id = b.user_id
-- ;;
with recursive chain(id, manager_id, depth) as (select id, manager_id, 0 from users where id = 20 union all select u.id, u.manager_id, c.depth + 1 from users u join chain c on u.id = c.manager_id where c.depth < 10) select * from chain
-- ;;
with t as not materialized (select * from kv) select k from t where v = 'value7'
-- ;;
WITH "for update" AS (SELECT 1 AS x) SELECT x FROM "for update"
-- ;;
with recursive chain(id, manager_id, depth) as (select id, manager_id, 0 from users where id = 7 union all select u.id, u.manager_id, c.depth + 1 from users u join chain c on u.id = c.manager_id where c.depth < 10) select * from chain
-- ;;
WITH RECURSIVE chain(id, manager_id, depth) AS (SELECT id, manager_id, 0 FROM users WHERE id = 20 UNION ALL SELECT u.id, u.manager_id, c.depth + 1 FROM users u JOIN chain c ON u.id = c.manager_id WHERE c.depth < 10) SELECT * FROM chain
-- ;;
WITH RECURSIVE g(id, manager_id) AS (SELECT id, manager_id FROM users UNION ALL SELECT u.id, u.manager_id FROM users u JOIN g ON g.id = u.manager_id) CYCLE id SET is_cycle USING path SELECT count(*) FROM g WHERE NOT is_cycle
-- ;;
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 26) SEARCH DEPTH FIRST BY n SET ordercol SELECT * FROM t ORDER BY ordercol
-- ;;
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 17) SEARCH DEPTH FIRST BY n SET ordercol SELECT * FROM t ORDER BY ordercol
-- ;;
with totals(uid, s) as (select user_id, sum(total) from orders group by user_id) select u.name, t.s from totals t join users u on u.id = t.uid order by t.s desc limit 10
-- ;;
with t as materialized (select category, avg(price) p from products group by category) select * from t where p > 17
-- ;;
WITH RECURSIVE chain(id, manager_id, depth) AS (SELECT id, manager_id, 0 FROM users WHERE id = 18 UNION ALL SELECT u.id, u.manager_id, c.depth + 1 FROM users u JOIN chain c ON u.id = c.manager_id WHERE c.depth < 10) SELECT * FROM chain
-- ;;
WITH RECURSIVE nums(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 3) SELECT sum(n) FROM nums
-- ;;
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 20) SEARCH DEPTH FIRST BY n SET ordercol SELECT * FROM t ORDER BY ordercol
-- ;;
WITH t AS MATERIALIZED (SELECT category, avg(price) p FROM products GROUP BY category) SELECT * FROM t WHERE p > 36
-- ;;
WITH t AS NOT MATERIALIZED (SELECT * FROM kv) SELECT k FROM t WHERE v = 'value23'
-- ;;
with totals(uid, s) as (select user_id, sum(total) from orders group by user_id) select u.name, t.s from totals t join users u on u.id = t.uid order by t.s desc limit 30
-- ;;
WITH totals(uid, s) AS (SELECT user_id, sum(total) FROM orders GROUP BY user_id) SELECT u.name, t.s FROM totals t JOIN users u ON u.id = t.uid ORDER BY t.s DESC LIMIT 29
-- ;;
WITH RECURSIVE nums(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 20) SELECT sum(n) FROM nums
-- ;;
with recursive g(id, manager_id) as (select id, manager_id from users union all select u.id, u.manager_id from users u join g on g.id = u.manager_id) cycle id set is_cycle using path select count(*) from g where not is_cycle
-- ;;
WITH RECURSIVE nums(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 18) SELECT sum(n) FROM nums
-- ;;
WITH a AS (SELECT id FROM users WHERE active), b AS (SELECT user_id FROM orders WHERE status = 'paid') SELECT count(*) FROM a JOIN b ON a.id = b.user_id
-- ;;
WITH t AS NOT MATERIALIZED (SELECT * FROM kv) SELECT k FROM t WHERE v = 'value4'
-- ;;
WITH totals(uid, s) AS (SELECT user_id, sum(total) FROM orders GROUP BY user_id) SELECT u.name, t.s FROM totals t JOIN users u ON u.id = t.uid ORDER BY t.s DESC LIMIT 3
-- ;;
WITH t AS NOT MATERIALIZED (SELECT * FROM kv) SELECT k FROM t WHERE v = 'value24'
-- ;;
WITH RECURSIVE nums(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 35) SELECT sum(n) FROM nums
-- ;;
WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '14 days') SELECT user_id, count(*) FROM recent GROUP BY user_id ORDER BY 2 DESC LIMIT 3
-- ;;
WITH totals(uid, s) AS (SELECT user_id, sum(total) FROM orders GROUP BY user_id) SELECT u.name, t.s FROM totals t JOIN users u ON u.id = t.uid ORDER BY t.s DESC LIMIT 17
-- ;;
with recent as (select * from orders where created_at > now() - interval '13 days') select user_id, count(*) from recent group by user_id order by 2 desc limit 7
-- ;;
WITH totals(uid, s) AS (SELECT user_id, sum(total) FROM orders GROUP BY user_id) SELECT u.name, t.s FROM totals t JOIN users u ON u.id = t.uid ORDER BY t.s DESC LIMIT 40
-- ;;
with totals(uid, s) as (select user_id, sum(total) from orders group by user_id) select u.name, t.s from totals t join users u on u.id = t.uid order by t.s desc limit 34
-- ;;
with recursive t(n) as (select 1 union all select n + 1 from t where n < 23) search depth first by n set ordercol select * from t order by ordercol
-- ;;
with t as materialized (select category, avg(price) p from products group by category) select * from t where p > 164
-- ;;
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 11) SEARCH DEPTH FIRST BY n SET ordercol SELECT * FROM t ORDER BY ordercol
-- ;;
WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '28 days') SELECT user_id, count(*) FROM recent GROUP BY user_id ORDER BY 2 DESC LIMIT 3
-- ;;
WITH RECURSIVE nums(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 10) SELECT sum(n) FROM nums
-- ;;
WITH RECURSIVE chain(id, manager_id, depth) AS (SELECT id, manager_id, 0 FROM users WHERE id = 15 UNION ALL SELECT u.id, u.manager_id, c.depth + 1 FROM users u JOIN chain c ON u.id = c.manager_id WHERE c.depth < 10) SELECT * FROM chain
-- ;;
WITH t AS MATERIALIZED (SELECT category, avg(price) p FROM products GROUP BY category) SELECT * FROM t WHERE p > 46
-- ;;
WITH RECURSIVE chain(id, manager_id, depth) AS (SELECT id, manager_id, 0 FROM users WHERE id = 12 UNION ALL SELECT u.id, u.manager_id, c.depth + 1 FROM users u JOIN chain c ON u.id = c.manager_id WHERE c.depth < 10) SELECT * FROM chain
-- ;;
SELECT * FROM products WHERE price > ALL (SELECT price FROM products WHERE category = 'food')
-- ;;
SELECT * FROM products WHERE price > ALL (SELECT price FROM products WHERE category = 'games')
-- ;;
select id from orders o where total > (select avg(total) from orders where user_id = o.user_id) limit 81
-- ;;
SELECT name, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) AS n FROM users u WHERE id < 83
-- ;;
SELECT * FROM products WHERE price < ANY (ARRAY[1, 124]::numeric[])
-- ;;
SELECT * FROM products WHERE price < ANY (ARRAY[1, 138]::numeric[])
-- ;;
SELECT EXISTS (SELECT 1 FROM users WHERE email = 'user68@example.com')
-- ;;
select id from orders o where total > (select avg(total) from orders where user_id = o.user_id) limit 22
-- ;;
select * from products where price > all (select price from products where category = 'food')
-- ;;
SELECT * FROM (SELECT user_id, sum(total) s FROM orders GROUP BY user_id) t WHERE s > 177 ORDER BY s DESC
-- ;;
SELECT id FROM orders o WHERE total > (SELECT avg(total) FROM orders WHERE user_id = o.user_id) LIMIT 17
-- ;;
SELECT * FROM (SELECT user_id, sum(total) s FROM orders GROUP BY user_id) t WHERE s > 134 ORDER BY s DESC
-- ;;
select id from orders where (user_id, status) in (select id, 'paid'::order_status from users where id < 46)
-- ;;
SELECT EXISTS (SELECT 1 FROM users WHERE email = 'user29@example.com')
-- ;;
SELECT * FROM products WHERE price < ANY (ARRAY[1, 60]::numeric[])
-- ;;
select name, (select count(*) from orders o where o.user_id = u.id) as n from users u where id < 16
-- ;;
SELECT * FROM products WHERE price > ALL (SELECT price FROM products WHERE category = 'tools')
-- ;;
SELECT EXISTS (SELECT 1 FROM users WHERE email = 'user30@example.com')
-- ;;
SELECT EXISTS (SELECT 1 FROM users WHERE email = 'user75@example.com')
-- ;;
select * from (select user_id, sum(total) s from orders group by user_id) t where s > 146 order by s desc
-- ;;
SELECT * FROM products WHERE price < ANY (ARRAY[4, 74]::numeric[])
-- ;;
SELECT name, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) AS n FROM users u WHERE id < 91
-- ;;
SELECT * FROM (SELECT user_id, sum(total) s FROM orders GROUP BY user_id) t WHERE s > 110 ORDER BY s DESC
-- ;;
SELECT id FROM orders WHERE (user_id, status) IN (SELECT id, 'paid'::order_status FROM users WHERE id < 23)
-- ;;
SELECT id FROM orders WHERE (user_id, status) IN (SELECT id, 'paid'::order_status FROM users WHERE id < 43)
-- ;;
SELECT id FROM orders o WHERE total > (SELECT avg(total) FROM orders WHERE user_id = o.user_id) LIMIT 8
-- ;;
select name from users where id in (select user_id from orders where total > 71)
-- ;;
SELECT * FROM products WHERE price < ANY (ARRAY[6, 88]::numeric[])
-- ;;
select * from products where price > all (select price from products where category = 'games')
-- ;;
select id from orders o where total > (select avg(total) from orders where user_id = o.user_id) limit 62
-- ;;
SELECT * FROM (SELECT user_id, sum(total) s FROM orders GROUP BY user_id) t WHERE s > 179 ORDER BY s DESC
-- ;;
SELECT name, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) AS n FROM users u WHERE id < 98
-- ;;
select id from orders o where total > (select avg(total) from orders where user_id = o.user_id) limit 33
-- ;;
SELECT name, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) AS n FROM users u WHERE id < 80
-- ;;
SELECT EXISTS (SELECT 1 FROM users WHERE email = 'user37@example.com')
-- ;;
SELECT id FROM users UNION ALL SELECT id FROM products ORDER BY 1 LIMIT 15
-- ;;
SELECT id FROM users WHERE id < 22 UNION SELECT user_id FROM orders WHERE total > 130
-- ;;
SELECT id FROM users WHERE id < 74 UNION SELECT user_id FROM orders WHERE total > 122
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 19) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 19)
-- ;;
SELECT id FROM users EXCEPT SELECT user_id FROM orders
-- ;;
select id from users except select user_id from orders
-- ;;
SELECT id FROM users UNION ALL SELECT id FROM products ORDER BY 1 LIMIT 77
-- ;;
(select id from users order by id limit 56) union (select id from products order by id desc limit 56)
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 7) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 7)
-- ;;
select user_id from orders intersect select id from users where active
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 61) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 61)
-- ;;
SELECT 1 EXCEPT ALL SELECT 2 INTERSECT ALL SELECT 3
-- ;;
SELECT user_id FROM orders INTERSECT SELECT id FROM users WHERE active
-- ;;
SELECT id FROM users UNION ALL SELECT id FROM products ORDER BY 1 LIMIT 17
-- ;;
select 1 except all select 2 intersect all select 3
-- ;;
(select name from users where id = 77)
-- ;;
SELECT id FROM users UNION ALL SELECT id FROM products ORDER BY 1 LIMIT 76
-- ;;
select id from users where id < 14 union select user_id from orders where total > 20
-- ;;
select id from users union all select id from products order by 1 limit 89
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 50) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 50)
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 40) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 40)
-- ;;
(SELECT id FROM users ORDER BY id LIMIT 2) UNION (SELECT id FROM products ORDER BY id DESC LIMIT 2)
-- ;;
table reporting.daily
-- ;;
values (1, 'one'), (2, 'two'), (3, 'three')
-- ;;
TABLE "Weird Table"
-- ;;
values (22) order by 1
-- ;;
VALUES (1, 'one'), (2, 'two'), (3, 'three')
-- ;;
values (42) order by 1
-- ;;
VALUES (40) ORDER BY 1
-- ;;
table kv
-- ;;
SELECT extract(epoch FROM created_at), date_part('year', created_at) FROM orders WHERE id = 55
-- ;;
SELECT position('a' IN name), trim(both ' ' from name), upper(name) FROM users WHERE id = 3
-- ;;
SELECT coalesce(note, 'none'), nullif(status::text, 'new'), greatest(total, 1), least(total, 2) FROM orders LIMIT 2
-- ;;
SELECT settings->'theme', settings->>'lang', settings #> '{theme}', jsonb_pretty(settings) FROM users WHERE id = 20
-- ;;
select substring(email for 2) from users limit 3
-- ;;
select unnest(array[1, 2, 3]) as x, generate_series(1, 5)
-- ;;
select int4range(1, 7) @> 4, '[1,5)'::int4range * '[3,7)'::int4range
-- ;;
SELECT * FROM generate_series(1, 72) g(i) WHERE i % 2 = 0
-- ;;
select settings->'theme', settings->>'lang', settings #> '{theme}', jsonb_pretty(settings) from users where id = 25
-- ;;
SELECT coalesce(note, 'none'), nullif(status::text, 'new'), greatest(total, 1), least(total, 2) FROM orders LIMIT 3
-- ;;
SELECT unnest(ARRAY[1, 2, 3]) AS x, generate_series(1, 1)
-- ;;
SELECT 'a' COLLATE "C" < 'b', pg_collation_for('x')
-- ;;
SELECT to_char(now(), 'YYYY-MM-DD'), to_timestamp(0), age(timestamp '2020-01-01')
-- ;;
SELECT extract(epoch FROM created_at), date_part('year', created_at) FROM orders WHERE id = 100
-- ;;
select substring('echo' from 2 for 3)
-- ;;
SELECT regexp_replace('delta', '[aeiou]', '_', 'g'), split_part('a,b,c', ',', 2)
-- ;;
select to_char(now(), 'YYYY-MM-DD'), to_timestamp(0), age(timestamp '2020-01-01')
-- ;;
SELECT CASE WHEN total > 19 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END FROM orders LIMIT 1
-- ;;
SELECT 'echo' ~ '^a', 'echo' ~* 'A', 'echo' SIMILAR TO '%a%', 'echo' LIKE 'a%' ESCAPE '!'
-- ;;
SELECT substring('foxtrot' FROM 2 FOR 3)
-- ;;
SELECT substring(email for 4) from users limit 3
-- ;;
SELECT unnest(ARRAY[1, 2, 3]) AS x, generate_series(1, 3)
-- ;;
SELECT 1 WHERE 1 IS NOT NULL AND NOT false AND 2 BETWEEN SYMMETRIC 3 AND 1
-- ;;
SELECT ROW(1, 'a') = ROW(1, 'a'), (1, 2) < (1, 3)
-- ;;
SELECT now(), current_date, current_time, localtimestamp, clock_timestamp() > now() - interval '1 hour'
-- ;;
select position('a' in name), trim(both ' ' from name), upper(name) from users where id = 29
-- ;;
SELECT settings->'theme', settings->>'lang', settings #> '{theme}', jsonb_pretty(settings) FROM users WHERE id = 88
-- ;;
select xmlelement(name foo, 'bar'), to_json(row(1, 'x'))
-- ;;
SELECT created_at AT TIME ZONE 'UTC' FROM orders WHERE id = 42
-- ;;
SELECT overlay('alpha' placing 'XX' from 2 for 2)
-- ;;
SELECT cast(total AS text), total::int, total::float8 FROM orders WHERE id = 1
-- ;;
SELECT md5('bravo'), sha256('bravo'::bytea), encode('bravo'::bytea, 'hex')
-- ;;
SELECT 'charlie' ~ '^a', 'charlie' ~* 'A', 'charlie' SIMILAR TO '%a%', 'charlie' LIKE 'a%' ESCAPE '!'
-- ;;
select case when total > 64 then 'big' when total > 10 then 'mid' else 'small' end from orders limit 4
-- ;;
select gen_random_uuid() is not null, random() < 2
-- ;;
SELECT current_user, session_user, current_schema, current_database(), version()
-- ;;
SELECT gen_random_uuid() IS NOT NULL, random() < 2
-- ;;
select settings->'theme', settings->>'lang', settings #> '{theme}', jsonb_pretty(settings) from users where id = 47
-- ;;
SELECT int4range(1, 46) @> 4, '[1,5)'::int4range * '[3,7)'::int4range
-- ;;
SELECT substring(name FROM 1 FOR 4) FROM users WHERE id = 70
-- ;;
SELECT regexp_replace('bravo', '[aeiou]', '_', 'g'), split_part('a,b,c', ',', 2)
-- ;;
SELECT coalesce(note, 'none'), nullif(status::text, 'new'), greatest(total, 1), least(total, 2) FROM orders LIMIT 1
-- ;;
SELECT created_at AT TIME ZONE 'UTC' FROM orders WHERE id = 88
-- ;;
select case when total > 53 then 'big' when total > 10 then 'mid' else 'small' end from orders limit 3
-- ;;
SELECT format('%s-%s', 'a', 8), concat_ws('-', 'a', 'b'), repeat('x', 1)
-- ;;
select 1 where 1 is not null and not false and 2 between symmetric 3 and 1
-- ;;
SELECT jsonb_path_query_array(attrs, '$.color') FROM products WHERE id = 98
-- ;;
select tags[1], array_length(tags, 1), cardinality(tags), tags || array['x'] from users where id = 18
-- ;;
SELECT jsonb_path_query_array(attrs, '$.color') FROM products WHERE id = 40
-- ;;
select current_user, session_user, current_schema, current_database(), version()
-- ;;
SELECT overlay('foxtrot' placing 'XX' from 2 for 2)
-- ;;
SELECT md5('charlie'), sha256('charlie'::bytea), encode('charlie'::bytea, 'hex')
-- ;;
SELECT CASE WHEN total > 102 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END FROM orders LIMIT 5
-- ;;
SELECT format('%s-%s', 'a', 64), concat_ws('-', 'a', 'b'), repeat('x', 3)
-- ;;
select now(), current_date, current_time, localtimestamp, clock_timestamp() > now() - interval '1 hour'
-- ;;
SELECT md5('echo'), sha256('echo'::bytea), encode('echo'::bytea, 'hex')
-- ;;
SELECT format('%s-%s', 'a', 73), concat_ws('-', 'a', 'b'), repeat('x', 1)
-- ;;
select unnest(array[1, 2, 3]) as x, generate_series(1, 3)
-- ;;
SELECT B'1010' | B'0101', X'1F'::bit(8), 1e3, .5, 5., 1.5E-3
-- ;;
SELECT created_at AT TIME ZONE 'UTC' FROM orders WHERE id = 5
-- ;;
SELECT int4range(1, 76) @> 4, '[1,5)'::int4range * '[3,7)'::int4range
-- ;;
SELECT cast(total AS text), total::int, total::float8 FROM orders WHERE id = 56
-- ;;
SELECT * FROM generate_series(1, 97) g(i) WHERE i % 2 = 0
-- ;;
SELECT * FROM generate_series(1, 44) g(i) WHERE i % 2 = 0
-- ;;
select tags[1], array_length(tags, 1), cardinality(tags), tags || array['x'] from users where id = 94
-- ;;
SELECT jsonb_path_query_array(attrs, '$.color') FROM products WHERE id = 25
-- ;;
SELECT int4range(1, 93) @> 5, '[1,5)'::int4range * '[3,7)'::int4range
-- ;;
SELECT cast(total AS text), total::int, total::float8 FROM orders WHERE id = 27
-- ;;
SELECT settings->'theme', settings->>'lang', settings #> '{theme}', jsonb_pretty(settings) FROM users WHERE id = 18
-- ;;
SELECT jsonb_path_query_array(attrs, '$.color') FROM products WHERE id = 93
-- ;;
SELECT 'bravo' ~ '^a', 'bravo' ~* 'A', 'bravo' SIMILAR TO '%a%', 'bravo' LIKE 'a%' ESCAPE '!'
-- ;;
SELECT CASE WHEN total > 39 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END FROM orders LIMIT 3
-- ;;
SELECT tags[1], array_length(tags, 1), cardinality(tags), tags || ARRAY['x'] FROM users WHERE id = 54
-- ;;
SELECT 'SELECT * FROM t FOR UPDATE' AS q
-- ;;
SELECT 'it''s FOR SHARE' AS q
-- ;;
SELECT E'it\'s; DELETE FROM users; --' AS q
-- ;;
SELECT E'\\' AS backslash, E'\n' AS nl
-- ;;
SELECT U&'d\0061t\+000061' AS data
-- ;;
SELECT $$ INSERT INTO users VALUES (1) $$ AS q
-- ;;
SELECT $tag$ nextval('invoice_seq'); $$ $tag$ AS q
-- ;;
SELECT $a$ $b$ FOR UPDATE $b$ $a$
-- ;;
SELECT 1 /* FOR UPDATE */ AS x
-- ;;
SELECT 1 /* nested /* FOR UPDATE */ still comment */ AS x
-- ;;
SELECT 1 -- FOR UPDATE
 AS x
-- ;;
-- leading comment: DELETE FROM users
SELECT count(*) FROM users
-- ;;
/* INSERT INTO t */ SELECT 2
-- ;;
SELECT "Select", "from", "FOR UPDATE" FROM "Weird Table"
-- ;;
SELECT "Select" FROM "Weird Table" WHERE "FOR UPDATE"
-- ;;
SELECT w."from" FROM "Weird Table" AS w ORDER BY w."Select"
-- ;;
SELECT 'nextval(''invoice_seq'')' AS not_a_call
-- ;;
SELECT 'a;b;c' AS semis, ';' AS semi
-- ;;
SELECT 'x' AS "insert", 'y' AS "update", 'z' AS "delete"
-- ;;
SELECT 1 AS "into"
-- ;;
SELECT 1 FROM users
-- ;;
SELECT 'INTO TEMP t' AS q
-- ;;
SELECT e'\'' = '''' AS same
-- ;;
SELECT N'national', B'101', X'ff'
-- ;;
SELECT 'multi
line
string' AS s
-- ;;
SELECT
  id,
  name
FROM
  users
WHERE
  id = 7
ORDER BY
  id
-- ;;
select/**/1
-- ;;
SELECT(1)
-- ;;
SELECT 'a'
  'b' AS continued
-- ;;
SELECT "a""b".x FROM (SELECT 1 AS x) AS "a""b"
-- ;;
SELECT 'pg_advisory_lock(1)' AS s, 'set_config' AS t
-- ;;
SELECT 1 AS for_update, 2 AS update_count
-- ;;
SELECT count(*) AS nextval FROM users
-- ;;
SELECT users.name FROM users WHERE users.id = 1
-- ;;
SELECT 'FOR UPDATE' AS for_x FROM users LIMIT 1
-- ;;
SELECT $$;$$
-- ;;
SELECT 1; -- trailing comment
-- ;;
SHOW search_path
-- ;;
SHOW server_version
-- ;;
SHOW TIME ZONE
-- ;;
SHOW transaction_read_only
-- ;;
show work_mem
-- ;;
SHOW TRANSACTION ISOLATION LEVEL
-- ;;
SHOW max_connections
-- ;;
SHOW statement_timeout
-- ;;
SHOW client_encoding
-- ;;
SHOW DateStyle
-- ;;
SHOW standard_conforming_strings
-- ;;
SHOW ALL
-- ;;
EXPLAIN (FORMAT JSON) UPDATE users SET name = 'x' WHERE id = 65
-- ;;
EXPLAIN VERBOSE INSERT INTO kv VALUES ('new65', 'x')
-- ;;
explain (verbose, costs false) SELECT * FROM users WHERE id = 32
-- ;;
explain (verbose, costs false) WITH x AS (SELECT * FROM products) SELECT * FROM x WHERE price > 179
-- ;;
EXPLAIN VERBOSE VALUES (1)
-- ;;
EXPLAIN (ANALYZE false) DELETE FROM events WHERE id = 41
-- ;;
EXPLAIN (FORMAT JSON) INSERT INTO kv VALUES ('new95', 'x')
-- ;;
EXPLAIN (ANALYZE false) VALUES (1)
-- ;;
explain (verbose, costs false) VALUES (1)
-- ;;
EXPLAIN SELECT count(*) FROM orders WHERE status = 'paid'
-- ;;
EXPLAIN (FORMAT JSON) DELETE FROM events WHERE id = 3
-- ;;
EXPLAIN (FORMAT JSON) WITH x AS (SELECT * FROM products) SELECT * FROM x WHERE price > 82
-- ;;
EXPLAIN VERBOSE TABLE kv
-- ;;
EXPLAIN (ANALYZE false) TABLE kv
-- ;;
EXPLAIN INSERT INTO kv VALUES ('new20', 'x')
-- ;;
EXPLAIN (FORMAT JSON) DELETE FROM events WHERE id = 7
-- ;;
EXPLAIN (COSTS OFF) TABLE kv
-- ;;
EXPLAIN UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 3
-- ;;
EXPLAIN VERBOSE UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 87
-- ;;
EXPLAIN (FORMAT JSON) SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 29
-- ;;
EXPLAIN VERBOSE WITH x AS (SELECT * FROM products) SELECT * FROM x WHERE price > 52
-- ;;
EXPLAIN TABLE kv
-- ;;
EXPLAIN (COSTS OFF) UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 53
-- ;;
EXPLAIN (COSTS OFF) UPDATE users SET name = 'x' WHERE id = 13
-- ;;
EXPLAIN ANALYZE VERBOSE VALUES (1)
-- ;;
EXPLAIN (ANALYZE true, TIMING off) SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 165
-- ;;
EXPLAIN ANALYSE SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 165
-- ;;
EXPLAIN (FORMAT YAML, ANALYZE on) SELECT count(*) FROM orders WHERE status = 'paid'
-- ;;
EXPLAIN (ANALYZE) SELECT count(*) FROM orders WHERE status = 'paid'
-- ;;
EXPLAIN ANALYZE TABLE kv
-- ;;
EXPLAIN (FORMAT YAML, ANALYZE on) SELECT * FROM users WHERE id = 32
-- ;;
EXPLAIN (ANALYZE) TABLE kv
-- ;;
EXPLAIN ANALYZE VERBOSE SELECT count(*) FROM orders WHERE status = 'paid'
-- ;;
EXPLAIN (ANALYZE) WITH x AS (SELECT * FROM products) SELECT * FROM x WHERE price > 69
-- ;;
EXPLAIN ANALYSE TABLE kv
-- ;;
EXPLAIN ANALYZE SELECT count(*) FROM orders WHERE status = 'paid'
-- ;;
EXPLAIN (ANALYZE) SELECT * FROM users WHERE id = 24
-- ;;
SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1
-- ;;
SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database()
-- ;;
SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2
-- ;;
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'
-- ;;
SELECT pg_size_pretty(pg_total_relation_size('orders'))
-- ;;
SELECT pg_is_in_recovery()
-- ;;
SELECT setting FROM pg_settings WHERE name = 'max_connections'
-- ;;
SELECT current_setting('search_path')
-- ;;
SELECT * FROM pg_stat_user_tables WHERE relname = 'users'
-- ;;
SELECT indexrelid::regclass, idx_scan FROM pg_stat_user_indexes
-- ;;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'orders'::regclass
-- ;;
SELECT pg_get_viewdef('active_users'::regclass)
-- ;;
SELECT has_table_privilege('orders', 'SELECT'), has_table_privilege('orders', 'UPDATE')
-- ;;
SELECT * FROM pg_locks WHERE NOT granted
-- ;;
SELECT typname FROM pg_type WHERE typname = 'order_status'
-- ;;
SELECT unnest(enum_range(NULL::order_status))
-- ;;
SELECT schemaname, matviewname FROM pg_matviews
-- ;;
SELECT proname FROM pg_proc WHERE proname IN ('user_name', 'log_event', 'nextval')
-- ;;
SELECT last_value, is_called FROM invoice_seq
-- ;;
SELECT * FROM pg_sequences WHERE sequencename = 'invoice_seq'
-- ;;
SELECT pg_database_size(current_database()) > 0
-- ;;
SELECT datname FROM pg_database WHERE NOT datistemplate
-- ;;
SELECT event_manipulation FROM information_schema.triggers WHERE event_manipulation = 'UPDATE'
-- ;;
SELECT txid_current_snapshot() IS NOT NULL, pg_current_snapshot() IS NOT NULL
-- ;;
SELECT pg_postmaster_start_time() < now()
-- ;;
SELECT * FROM pg_stat_database WHERE datname = current_database()
-- ;;
SELECT user_name(1), order_count(2), add_one(41)
-- ;;
SELECT pg_sleep(0)
-- ;;
SELECT set_config('application_name', 'corpus', false)
-- ;;
SELECT set_config('statement_timeout', '0', true)
-- ;;
SELECT name FROM active_users WHERE id < 5
-- ;;
SELECT * FROM order_totals ORDER BY total DESC LIMIT 5
-- ;;
SELECT * FROM reporting.daily
-- ;;
SELECT count(*) FROM pg_largeobject_metadata
-- ;;
COPY users TO STDOUT
-- ;;
COPY kv (k, v) TO STDOUT WITH (FORMAT csv, HEADER)
-- ;;
COPY (SELECT id, total FROM orders WHERE status = 'paid') TO STDOUT
-- ;;
copy (select * from products where category = 'books') to stdout with csv
-- ;;
COPY pgbench_branches TO STDOUT (FORMAT text)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 2794 WHERE aid = 165
-- ;;
update pgbench_tellers set tbalance = tbalance + 2794 where tid = 4
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 2794 WHERE bid = 1
-- ;;
insert into pgbench_history (tid, bid, aid, delta, mtime) values (4, 1, 165, 2794, current_timestamp)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 89 WHERE aid = 577
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 89 WHERE tid = 9
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 89 WHERE bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (9, 2, 577, 89, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 455 WHERE aid = 3
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 455 WHERE tid = 12
-- ;;
update pgbench_branches set bbalance = bbalance + 455 where bid = 1
-- ;;
insert into pgbench_history (tid, bid, aid, delta, mtime) values (12, 1, 3, 455, current_timestamp)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 4897 WHERE aid = 481
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 4897 WHERE tid = 15
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 4897 WHERE bid = 1
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (15, 1, 481, 4897, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + -4623 WHERE aid = 144
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + -4623 WHERE tid = 12
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + -4623 WHERE bid = 1
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (12, 1, 144, -4623, CURRENT_TIMESTAMP)
-- ;;
update pgbench_accounts set abalance = abalance + 3181 where aid = 510
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 3181 WHERE tid = 16
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 3181 WHERE bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (16, 2, 510, 3181, CURRENT_TIMESTAMP)
-- ;;
update pgbench_accounts set abalance = abalance + -266 where aid = 986
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + -266 WHERE tid = 13
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + -266 WHERE bid = 1
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (13, 1, 986, -266, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 1428 WHERE aid = 42
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 1428 WHERE tid = 17
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 1428 WHERE bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (17, 2, 42, 1428, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 4639 WHERE aid = 661
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 4639 WHERE tid = 6
-- ;;
update pgbench_branches set bbalance = bbalance + 4639 where bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (6, 2, 661, 4639, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 403 WHERE aid = 290
-- ;;
update pgbench_tellers set tbalance = tbalance + 403 where tid = 14
-- ;;
update pgbench_branches set bbalance = bbalance + 403 where bid = 2
-- ;;
insert into pgbench_history (tid, bid, aid, delta, mtime) values (14, 2, 290, 403, current_timestamp)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 4047 WHERE aid = 316
-- ;;
update pgbench_tellers set tbalance = tbalance + 4047 where tid = 2
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 4047 WHERE bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (2, 2, 316, 4047, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + 1454 WHERE aid = 16
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + 1454 WHERE tid = 7
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + 1454 WHERE bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 2, 16, 1454, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + -193 WHERE aid = 799
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + -193 WHERE tid = 16
-- ;;
update pgbench_branches set bbalance = bbalance + -193 where bid = 2
-- ;;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (16, 2, 799, -193, CURRENT_TIMESTAMP)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + -4325 WHERE aid = 631
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + -4325 WHERE tid = 4
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + -4325 WHERE bid = 1
-- ;;
insert into pgbench_history (tid, bid, aid, delta, mtime) values (4, 1, 631, -4325, current_timestamp)
-- ;;
UPDATE pgbench_accounts SET abalance = abalance + -2055 WHERE aid = 62
-- ;;
UPDATE pgbench_tellers SET tbalance = tbalance + -2055 WHERE tid = 2
-- ;;
UPDATE pgbench_branches SET bbalance = bbalance + -2055 WHERE bid = 2
-- ;;
insert into pgbench_history (tid, bid, aid, delta, mtime) values (2, 2, 62, -2055, current_timestamp)
-- ;;
INSERT INTO reporting.daily (day, orders, revenue) SELECT created_at::date, count(*), sum(total) FROM orders GROUP BY 1 ON CONFLICT (day) DO UPDATE SET orders = excluded.orders
-- ;;
INSERT INTO kv (k, v) VALUES ('key17', 'x') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, updated_at = now()
-- ;;
INSERT INTO products (sku, name, category, price) VALUES ('SKU-N86820', 'New', 'books', 291.99)
-- ;;
INSERT INTO kv SELECT 'copy' || k, v FROM kv WHERE k LIKE 'key6%'
-- ;;
WITH src AS (SELECT 30060 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
INSERT INTO orders (user_id, total) VALUES (57, 66) RETURNING id
-- ;;
INSERT INTO audit DEFAULT VALUES
-- ;;
insert into order_items (order_id, product_id, qty, price) values (556, 56, 1, 1.00) on conflict (order_id, product_id) do update set qty = order_items.qty + 1
-- ;;
INSERT INTO orders (user_id, total) SELECT id, 0 FROM users WHERE id = 198
-- ;;
INSERT INTO orders (user_id, total) VALUES (166, 81) RETURNING id
-- ;;
insert into kv select 'copy' || k, v from kv where k like 'key34%'
-- ;;
WITH src AS (SELECT 91697 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
INSERT INTO kv (k) VALUES ('o47203')
-- ;;
INSERT INTO orders (user_id, total) VALUES (185, 14) RETURNING id
-- ;;
INSERT INTO "Weird Table" ("Select", "from") VALUES (31, 'for update')
-- ;;
INSERT INTO kv (k, v) VALUES ('key41', 'x') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, updated_at = now()
-- ;;
insert into orders (user_id, total) select id, 0 from users where id = 45
-- ;;
insert into archived_orders select * from orders where created_at < now() - interval '4 days'
-- ;;
INSERT INTO events (kind) VALUES ('x') RETURNING *
-- ;;
INSERT INTO orders (user_id, total) VALUES (49, 203) RETURNING id
-- ;;
INSERT INTO audit (tbl, op) SELECT 'orders', 'x' FROM generate_series(1, 18)
-- ;;
INSERT INTO kv (k, v) VALUES ('key34', 'x') ON CONFLICT DO NOTHING
-- ;;
INSERT INTO kv SELECT 'copy' || k, v FROM kv WHERE k LIKE 'key14%'
-- ;;
INSERT INTO kv (k, v) VALUES ('k6807', 'v6807')
-- ;;
INSERT INTO kv VALUES ('k12200', 'v'), ('k181715', 'w')
-- ;;
INSERT INTO kv (k, v) VALUES (E'k\'41313', 'SELECT 1')
-- ;;
insert into audit (tbl, op) select 'orders', 'x' from generate_series(1, 21)
-- ;;
insert into order_items (order_id, product_id, qty, price) values (486, 15, 1, 1.00) on conflict (order_id, product_id) do update set qty = order_items.qty + 1
-- ;;
INSERT INTO kv (k, v) VALUES (E'k\'30103', 'SELECT 1')
-- ;;
insert into audit (tbl, op) select 'orders', 'x' from generate_series(1, 37)
-- ;;
INSERT INTO events (kind, payload) VALUES ($$quoted$$, NULL)
-- ;;
INSERT INTO order_items (order_id, product_id, qty, price) VALUES (336, 22, 1, 1.00) ON CONFLICT (order_id, product_id) DO UPDATE SET qty = order_items.qty + 1
-- ;;
INSERT INTO archived_orders SELECT * FROM orders WHERE created_at < now() - interval '35 days'
-- ;;
insert into events (kind, payload) values ('signup', '{"user": 36378}') returning id
-- ;;
WITH src AS (SELECT 92267 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
INSERT INTO kv (k, v) VALUES ('z25325', 'x') ON CONFLICT ON CONSTRAINT kv_pkey DO NOTHING RETURNING k
-- ;;
INSERT INTO products (sku, name, category, price) VALUES ('SKU-N10440', 'New', 'books', 3.99)
-- ;;
insert into reporting.daily (day, orders, revenue) select created_at::date, count(*), sum(total) from orders group by 1 on conflict (day) do update set orders = excluded.orders
-- ;;
insert into audit default values
-- ;;
WITH src AS (SELECT 87540 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
insert into orders (user_id, total) values (108, 115) returning id
-- ;;
insert into archived_orders select * from orders where created_at < now() - interval '20 days'
-- ;;
INSERT INTO kv (k) VALUES ('o44628')
-- ;;
insert into kv select 'copy' || k, v from kv where k like 'key6%'
-- ;;
WITH src AS (SELECT 16877 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
with src as (select 30149 as n) insert into audit (tbl, op) select 'src', n::text from src
-- ;;
INSERT INTO archived_orders SELECT * FROM orders WHERE created_at < now() - interval '14 days'
-- ;;
INSERT INTO order_items (order_id, product_id, qty, price) VALUES (253, 45, 1, 1.00) ON CONFLICT (order_id, product_id) DO UPDATE SET qty = order_items.qty + 1
-- ;;
INSERT INTO orders (user_id, total) SELECT id, 0 FROM users WHERE id = 101
-- ;;
INSERT INTO products (sku, name, category, price) VALUES ('SKU-N35053', 'New', 'books', 258.99)
-- ;;
INSERT INTO audit (tbl, op) SELECT 'orders', 'x' FROM generate_series(1, 44)
-- ;;
INSERT INTO kv (k, v) VALUES (E'k\'50147', 'SELECT 1')
-- ;;
INSERT INTO "Weird Table" ("Select", "from") VALUES (33, 'for update')
-- ;;
INSERT INTO orders (user_id, total) VALUES (27, 106) RETURNING id
-- ;;
INSERT INTO kv SELECT 'copy' || k, v FROM kv WHERE k LIKE 'key49%'
-- ;;
INSERT INTO kv (k, v) VALUES ('key8', 'x') ON CONFLICT DO NOTHING
-- ;;
INSERT INTO kv VALUES ('k91160', 'v'), ('k165064', 'w')
-- ;;
INSERT INTO events (kind, payload) VALUES ('signup', '{"user": 55020}') RETURNING id
-- ;;
INSERT INTO kv SELECT 'copy' || k, v FROM kv WHERE k LIKE 'key25%'
-- ;;
INSERT INTO archived_orders SELECT * FROM orders WHERE created_at < now() - interval '32 days'
-- ;;
INSERT INTO audit (tbl, op) SELECT 'orders', 'x' FROM generate_series(1, 41)
-- ;;
insert into kv select 'copy' || k, v from kv where k like 'key27%'
-- ;;
insert into "Weird Table" ("Select", "from") values (14, 'for update')
-- ;;
INSERT INTO audit (tbl, op) SELECT 'orders', 'x' FROM generate_series(1, 5)
-- ;;
INSERT INTO kv (k, v) VALUES ('z32850', 'x') ON CONFLICT ON CONSTRAINT kv_pkey DO NOTHING RETURNING k
-- ;;
INSERT INTO "Weird Table" ("Select", "from") VALUES (30, 'for update')
-- ;;
INSERT INTO users (email, name) VALUES ('new6487@example.com', 'New 6487') RETURNING id, created_at
-- ;;
INSERT INTO users (email, name) VALUES ('new24145@example.com', 'New 24145') RETURNING id, created_at
-- ;;
insert into users (email, name) values ('new98246@example.com', 'New 98246') returning id, created_at
-- ;;
INSERT INTO kv (k, v) VALUES ('key48', 'x') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, updated_at = now()
-- ;;
insert into events (kind) values ('x') returning *
-- ;;
INSERT INTO kv (k, v) VALUES (E'k\'47562', 'SELECT 1')
-- ;;
insert into products (sku, name, category, price) values ('SKU-N9615', 'New', 'books', 132.99)
-- ;;
WITH src AS (SELECT 86486 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
INSERT INTO kv (k, v) VALUES ('key32', 'x') ON CONFLICT DO NOTHING
-- ;;
INSERT INTO users (email, name) VALUES ('new25062@example.com', 'New 25062') RETURNING id, created_at
-- ;;
insert into kv (k, v) values ('z70690', 'x') on conflict on constraint kv_pkey do nothing returning k
-- ;;
INSERT INTO audit (tbl, op) SELECT 'orders', 'x' FROM generate_series(1, 38)
-- ;;
WITH src AS (SELECT 53679 AS n) INSERT INTO audit (tbl, op) SELECT 'src', n::text FROM src
-- ;;
INSERT INTO archived_orders SELECT * FROM orders WHERE created_at < now() - interval '16 days'
-- ;;
WITH old AS (SELECT id FROM orders WHERE created_at < now() - interval '27 days') UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM old) AND status = 'new'
-- ;;
UPDATE users SET tags = array_append(tags, 'vip') WHERE id = 78
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 16 AND 131
-- ;;
UPDATE users SET manager_id = DEFAULT WHERE id = 20
-- ;;
UPDATE products SET price = price * 1.1 WHERE category = 'tools'
-- ;;
UPDATE users SET active = NOT active WHERE id = 72 RETURNING active
-- ;;
UPDATE users SET tags = array_append(tags, 'vip') WHERE id = 62
-- ;;
UPDATE users SET active = NOT active WHERE id = 63 RETURNING active
-- ;;
update users set (name, active) = ('Bulk', true) where id between 15 and 122
-- ;;
UPDATE products SET stock = stock - 1 WHERE id = 83 AND stock > 0 RETURNING stock
-- ;;
update kv set v = 'updated', updated_at = now() where k = 'key38'
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 12 AND 156
-- ;;
UPDATE orders SET note = 'FOR UPDATE' WHERE id = 297
-- ;;
UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = 586 AND status = 'paid'
-- ;;
UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = 849 AND status = 'paid'
-- ;;
UPDATE orders o SET total = s.t FROM (SELECT order_id, sum(qty * price) t FROM order_items GROUP BY order_id) s WHERE s.order_id = o.id AND o.id = 723
-- ;;
UPDATE kv SET v = 'updated', updated_at = now() WHERE k = 'key44'
-- ;;
UPDATE users SET name = 'Renamed 49' WHERE id = 60
-- ;;
UPDATE users SET settings = settings || '{"theme": "dark"}' WHERE id = 31
-- ;;
UPDATE users SET settings = settings || '{"theme": "dark"}' WHERE id = 20
-- ;;
update pgbench_accounts set abalance = 0 where aid in (select aid from pgbench_accounts where bid = 1 limit 10)
-- ;;
update users set active = not active where id = 62 returning active
-- ;;
update orders o set total = s.t from (select order_id, sum(qty * price) t from order_items group by order_id) s where s.order_id = o.id and o.id = 822
-- ;;
update users set active = not active where id = 9 returning active
-- ;;
UPDATE users SET name = 'Renamed 458' WHERE id = 34
-- ;;
UPDATE kv SET v = 'updated', updated_at = now() WHERE k = 'key38'
-- ;;
with old as (select id from orders where created_at < now() - interval '34 days') update orders set status = 'cancelled' where id in (select id from old) and status = 'new'
-- ;;
WITH old AS (SELECT id FROM orders WHERE created_at < now() - interval '40 days') UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM old) AND status = 'new'
-- ;;
WITH old AS (SELECT id FROM orders WHERE created_at < now() - interval '33 days') UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM old) AND status = 'new'
-- ;;
UPDATE users SET manager_id = DEFAULT WHERE id = 19
-- ;;
UPDATE products SET stock = stock - 1 WHERE id = 38 AND stock > 0 RETURNING stock
-- ;;
UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = 59 AND status = 'paid'
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 43 AND 190
-- ;;
UPDATE "Weird Table" SET "from" = 'x' WHERE "Select" = 24
-- ;;
UPDATE "Weird Table" SET "from" = 'x' WHERE "Select" = 11
-- ;;
WITH old AS (SELECT id FROM orders WHERE created_at < now() - interval '44 days') UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM old) AND status = 'new'
-- ;;
UPDATE orders SET note = 'FOR UPDATE' WHERE id = 443
-- ;;
UPDATE "Weird Table" SET "from" = 'x' WHERE "Select" = 37
-- ;;
UPDATE users SET active = NOT active WHERE id = 35 RETURNING active
-- ;;
UPDATE kv SET v = 'updated', updated_at = now() WHERE k = 'key21'
-- ;;
UPDATE kv SET v = 'updated', updated_at = now() WHERE k = 'key48'
-- ;;
UPDATE orders SET note = 'FOR UPDATE' WHERE id = 507
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 79 AND 102
-- ;;
update pgbench_accounts set abalance = 0 where aid in (select aid from pgbench_accounts where bid = 2 limit 10)
-- ;;
UPDATE orders o SET total = s.t FROM (SELECT order_id, sum(qty * price) t FROM order_items GROUP BY order_id) s WHERE s.order_id = o.id AND o.id = 354
-- ;;
UPDATE orders o SET total = s.t FROM (SELECT order_id, sum(qty * price) t FROM order_items GROUP BY order_id) s WHERE s.order_id = o.id AND o.id = 460
-- ;;
update users set settings = settings || '{"theme": "dark"}' where id = 63
-- ;;
update orders set total = (select max(total) from orders) where id = 171
-- ;;
UPDATE orders o SET total = s.t FROM (SELECT order_id, sum(qty * price) t FROM order_items GROUP BY order_id) s WHERE s.order_id = o.id AND o.id = 346
-- ;;
UPDATE users SET settings = settings || '{"theme": "dark"}' WHERE id = 61
-- ;;
UPDATE users SET name = 'Renamed 569' WHERE id = 27
-- ;;
update users set name = 'Renamed 964' where id = 66
-- ;;
update "Weird Table" set "from" = 'x' where "Select" = 31
-- ;;
update users set active = not active where id = 100 returning active
-- ;;
UPDATE orders SET note = 'FOR UPDATE' WHERE id = 475
-- ;;
UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = 791 AND status = 'paid'
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 42 AND 184
-- ;;
update orders set note = 'FOR UPDATE' where id = 254
-- ;;
UPDATE products SET price = price * 1.1 WHERE category = 'books'
-- ;;
update only orders set note = null where id = 671
-- ;;
with old as (select id from orders where created_at < now() - interval '9 days') update orders set status = 'cancelled' where id in (select id from old) and status = 'new'
-- ;;
update products set price = price * 1.1 where category = 'tools'
-- ;;
update users set manager_id = default where id = 33
-- ;;
UPDATE users SET manager_id = DEFAULT WHERE id = 90
-- ;;
UPDATE products SET stock = stock - 1 WHERE id = 52 AND stock > 0 RETURNING stock
-- ;;
UPDATE users SET (name, active) = ('Bulk', true) WHERE id BETWEEN 26 AND 148
-- ;;
update users set (name, active) = ('Bulk', true) where id between 47 and 159
-- ;;
WITH old AS (SELECT id FROM orders WHERE created_at < now() - interval '14 days') UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM old) AND status = 'new'
-- ;;
UPDATE products SET stock = stock - 1 WHERE id = 12 AND stock > 0 RETURNING stock
-- ;;
UPDATE orders SET note = 'FOR UPDATE' WHERE id = 375
-- ;;
update orders set status = 'shipped', shipped_at = now() where id = 367 and status = 'paid'
-- ;;
UPDATE users SET tags = array_append(tags, 'vip') WHERE id = 29
-- ;;
update products set stock = stock - 1 where id = 47 and stock > 0 returning stock
-- ;;
UPDATE orders SET total = (SELECT max(total) FROM orders) WHERE id = 445
-- ;;
update users set tags = array_append(tags, 'vip') where id = 51
-- ;;
UPDATE users SET tags = array_append(tags, 'vip') WHERE id = 13
-- ;;
DELETE FROM events WHERE at < now() - interval '26 days'
-- ;;
delete from pgbench_history where mtime < now() - interval '1 day'
-- ;;
DELETE FROM "Weird Table" WHERE "from" = 'SELECT'
-- ;;
with doomed as (select id from events where kind = 'click' limit 1) delete from events where id in (select id from doomed)
-- ;;
DELETE FROM kv WHERE k = 'key15'
-- ;;
DELETE FROM audit
-- ;;
DELETE FROM kv WHERE k IN (SELECT k FROM kv ORDER BY updated_at LIMIT 3)
-- ;;
DELETE FROM kv WHERE k IN (SELECT k FROM kv ORDER BY updated_at LIMIT 42)
-- ;;
delete from only archived_orders where id = 533
-- ;;
WITH doomed AS (SELECT id FROM events WHERE kind = 'click' LIMIT 20) DELETE FROM events WHERE id IN (SELECT id FROM doomed)
-- ;;
delete from only archived_orders where id = 721
-- ;;
DELETE FROM pgbench_history WHERE mtime < now() - interval '1 day'
-- ;;
with doomed as (select id from events where kind = 'click' limit 40) delete from events where id in (select id from doomed)
-- ;;
delete from order_items where order_id = 553
-- ;;
delete from kv where k in (select k from kv order by updated_at limit 43)
-- ;;
DELETE FROM kv WHERE k = 'key14'
-- ;;
delete from "Weird Table" where "from" = 'SELECT'
-- ;;
delete from events where id = 157 returning *
-- ;;
WITH doomed AS (SELECT id FROM events WHERE kind = 'click' LIMIT 11) DELETE FROM events WHERE id IN (SELECT id FROM doomed)
-- ;;
DELETE FROM events WHERE id = 178 RETURNING *
-- ;;
DELETE FROM kv WHERE k IN (SELECT k FROM kv ORDER BY updated_at LIMIT 40)
-- ;;
DELETE FROM kv WHERE k = 'key26'
-- ;;
DELETE FROM events WHERE id = 31 RETURNING *
-- ;;
delete from only archived_orders where id = 103
-- ;;
DELETE FROM events WHERE id = 92 RETURNING *
-- ;;
DELETE FROM kv WHERE k IN (SELECT k FROM kv ORDER BY updated_at LIMIT 50)
-- ;;
DELETE FROM kv WHERE k = 'key27'
-- ;;
DELETE FROM kv WHERE k IN (SELECT k FROM kv ORDER BY updated_at LIMIT 27)
-- ;;
WITH doomed AS (SELECT id FROM events WHERE kind = 'click' LIMIT 5) DELETE FROM events WHERE id IN (SELECT id FROM doomed)
-- ;;
delete from kv where k in (select k from kv order by updated_at limit 12)
-- ;;
DELETE FROM order_items i USING orders o WHERE o.id = i.order_id AND o.status = 'cancelled' AND o.id < 396
-- ;;
delete from order_items i using orders o where o.id = i.order_id and o.status = 'cancelled' and o.id < 531
-- ;;
DELETE FROM events WHERE id = 260 RETURNING *
-- ;;
DELETE FROM kv WHERE k = 'key40'
-- ;;
delete from only archived_orders where id = 450
-- ;;
WITH doomed AS (SELECT id FROM events WHERE kind = 'click' LIMIT 13) DELETE FROM events WHERE id IN (SELECT id FROM doomed)
-- ;;
WITH doomed AS (SELECT id FROM events WHERE kind = 'click' LIMIT 21) DELETE FROM events WHERE id IN (SELECT id FROM doomed)
-- ;;
DELETE FROM events WHERE id = 10 RETURNING *
-- ;;
DELETE FROM events WHERE at < now() - interval '29 days'
-- ;;
DELETE FROM order_items WHERE order_id = 447
-- ;;
DELETE FROM events WHERE id = 291 RETURNING *
-- ;;
MERGE INTO kv USING kv AS src ON kv.k = src.k WHEN MATCHED THEN DO NOTHING
-- ;;
MERGE INTO reporting.daily d USING (SELECT created_at::date AS day, count(*) AS n FROM orders GROUP BY 1) s ON d.day = s.day WHEN MATCHED THEN UPDATE SET orders = s.n WHEN NOT MATCHED THEN INSERT (day, orders) VALUES (s.day, s.n)
-- ;;
merge into products p using (select 78 as id) s on p.id = s.id when matched and p.stock = 0 then delete when matched then update set stock = p.stock - 1
-- ;;
MERGE INTO kv t USING (VALUES ('key41', 'm')) AS s(k, v) ON t.k = s.k WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.k, s.v)
-- ;;
merge into kv t using (values ('key31', 'm')) as s(k, v) on t.k = s.k when matched then update set v = s.v when not matched then insert values (s.k, s.v)
-- ;;
MERGE INTO products p USING (SELECT 51 AS id) s ON p.id = s.id WHEN MATCHED AND p.stock = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET stock = p.stock - 1
-- ;;
MERGE INTO products p USING (SELECT 59 AS id) s ON p.id = s.id WHEN MATCHED AND p.stock = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET stock = p.stock - 1
-- ;;
merge into reporting.daily d using (select created_at::date as day, count(*) as n from orders group by 1) s on d.day = s.day when matched then update set orders = s.n when not matched then insert (day, orders) values (s.day, s.n)
-- ;;
MERGE INTO products p USING (SELECT 43 AS id) s ON p.id = s.id WHEN MATCHED AND p.stock = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET stock = p.stock - 1
-- ;;
merge into kv using kv as src on kv.k = src.k when matched then do nothing
-- ;;
WITH moved AS (DELETE FROM orders WHERE id = 629 RETURNING *) INSERT INTO archived_orders SELECT * FROM moved
-- ;;
WITH d AS (DELETE FROM events WHERE id = 233 RETURNING id) SELECT count(*) FROM d
-- ;;
with upd as (update users set active = true where id = 123 returning id) select * from upd
-- ;;
with u as (update products set stock = stock + 1 where id = 98 returning id, stock) select * from u
-- ;;
WITH moved AS (DELETE FROM orders WHERE id = 500 RETURNING *) INSERT INTO archived_orders SELECT * FROM moved
-- ;;
with u as (update products set stock = stock + 1 where id = 94 returning id, stock) select * from u
-- ;;
with upd as (update users set active = true where id = 144 returning id) select * from upd
-- ;;
WITH i AS (INSERT INTO audit (tbl, op) VALUES ('orders', 'i') RETURNING id) SELECT id FROM i
-- ;;
with moved as (delete from orders where id = 57 returning *) insert into archived_orders select * from moved
-- ;;
with i as (insert into audit (tbl, op) values ('orders', 'i') returning id) select id from i
-- ;;
with upd as (update users set active = true where id = 99 returning id) select * from upd
-- ;;
WITH u AS (UPDATE products SET stock = stock + 1 WHERE id = 100 RETURNING id, stock) SELECT * FROM u
-- ;;
with upd as (update users set active = true where id = 119 returning id) select * from upd
-- ;;
WITH a AS (SELECT 1 AS x), b AS (INSERT INTO kv VALUES ('cte209', 'v') RETURNING k) SELECT * FROM a, b
-- ;;
WITH d AS (DELETE FROM events WHERE id = 115 RETURNING id) SELECT count(*) FROM d
-- ;;
with u as (update products set stock = stock + 1 where id = 4 returning id, stock) select * from u
-- ;;
with upd as (update users set active = true where id = 146 returning id) select * from upd
-- ;;
with upd as (update users set active = true where id = 113 returning id) select * from upd
-- ;;
WITH a AS (SELECT 1 AS x), b AS (INSERT INTO kv VALUES ('cte211', 'v') RETURNING k) SELECT * FROM a, b
-- ;;
WITH u AS (UPDATE products SET stock = stock + 1 WHERE id = 43 RETURNING id, stock) SELECT * FROM u
-- ;;
SELECT * FROM users WHERE id = 184 FOR KEY SHARE
-- ;;
WITH locked AS (SELECT id FROM products WHERE stock > 0 LIMIT 1 FOR UPDATE) SELECT * FROM locked
-- ;;
SELECT * FROM orders WHERE id = 506 FOR UPDATE
-- ;;
SELECT * FROM orders WHERE id = 595
FOR
  UPDATE
-- ;;
select substring(name from 1 for 3) from users where id = 183 for update
-- ;;
with locked as (select id from products where stock > 0 limit 1 for update) select * from locked
-- ;;
SELECT * FROM orders WHERE status = 'new' ORDER BY created_at LIMIT 10 FOR UPDATE SKIP LOCKED
-- ;;
SELECT * FROM users WHERE id = 129 FOR SHARE
-- ;;
select id from (select id from orders where user_id = 125 for update) s
-- ;;
SELECT * FROM kv WHERE k = 'key16' FOR SHARE OF kv SKIP LOCKED
-- ;;
SELECT * FROM orders WHERE id = 303 FOR UPDATE
-- ;;
select substring(name from 1 for 3) from users where id = 26 for update
-- ;;
SELECT * FROM users WHERE id = 122 FOR SHARE
-- ;;
SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = 587 FOR UPDATE OF o
-- ;;
SELECT * FROM orders WHERE status = 'new' ORDER BY created_at LIMIT 6 FOR UPDATE SKIP LOCKED
-- ;;
SELECT * FROM orders WHERE status = 'new' ORDER BY created_at LIMIT 4 FOR UPDATE SKIP LOCKED
-- ;;
SELECT * FROM users WHERE id = 92 FOR KEY SHARE
-- ;;
SELECT * FROM users WHERE id = 112 /* lock it */ FOR /* really */ UPDATE
-- ;;
SELECT * FROM users WHERE id = 144 FOR KEY SHARE
-- ;;
select substring(name from 1 for 3) from users where id = 51 for update
-- ;;
SELECT * FROM products WHERE id = 3 FOR NO KEY UPDATE
-- ;;
SELECT * FROM products WHERE id = 69 FOR NO KEY UPDATE
-- ;;
select * from orders where status = 'new' order by created_at limit 27 for update skip locked
-- ;;
select * from orders where id = 356 for update
-- ;;
SELECT * FROM orders WHERE id = 206 FOR UPDATE NOWAIT
-- ;;
SELECT * FROM kv WHERE k = 'key2' FOR SHARE OF kv SKIP LOCKED
-- ;;
SELECT * FROM orders WHERE id = 931 FOR UPDATE
-- ;;
SELECT * FROM users WHERE id = 42 FOR SHARE
-- ;;
SELECT * FROM orders WHERE id = 700
FOR
  UPDATE
-- ;;
SELECT id FROM (SELECT id FROM orders WHERE user_id = 119 FOR UPDATE) s
-- ;;
SELECT * FROM orders WHERE id = 227
FOR
  UPDATE
-- ;;
SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = 795 FOR UPDATE OF o
-- ;;
SELECT * FROM orders WHERE id = 36 FOR UPDATE NOWAIT
-- ;;
select * from orders where id = 597 for update nowait
-- ;;
SELECT * FROM kv WHERE k = 'key15' FOR SHARE OF kv SKIP LOCKED
-- ;;
SELECT * FROM orders WHERE id = 538 FOR UPDATE
-- ;;
SELECT * FROM orders WHERE status = 'new' ORDER BY created_at LIMIT 15 FOR UPDATE SKIP LOCKED
-- ;;
SELECT * FROM users WHERE id = 13 FOR KEY SHARE
-- ;;
SELECT * FROM users WHERE id = 50 FOR KEY SHARE
-- ;;
select * from users where id = 99 for share
-- ;;
SELECT * FROM orders WHERE id = 367
FOR
  UPDATE
-- ;;
select id, name into table users_copy_929 from users
-- ;;
SELECT * INTO UNLOGGED kv_copy_406 FROM kv
-- ;;
SELECT * INTO TEMPORARY TABLE tmp_439 FROM products
-- ;;
SELECT * INTO orders_copy_105 FROM orders WHERE id < 10
-- ;;
SELECT id, name INTO TABLE users_copy_329 FROM users
-- ;;
SELECT 1 AS x INTO TEMP tmp_834
-- ;;
SELECT * INTO UNLOGGED kv_copy_173 FROM kv
-- ;;
SELECT * INTO TEMPORARY TABLE tmp_774 FROM products
-- ;;
SELECT 1 AS x INTO TEMP tmp_33
-- ;;
SELECT * INTO orders_copy_672 FROM orders WHERE id < 10
-- ;;
select nextval('invoice_seq')
-- ;;
SELECT nextval ('invoice_seq')
-- ;;
SELECT pg_catalog.nextval('invoice_seq')
-- ;;
SELECT * FROM users WHERE id = nextval('users_id_seq')
-- ;;
SELECT nextval('orders_id_seq'::regclass)
-- ;;
SELECT setval('invoice_seq', 423, false)
-- ;;
select * from users where id = nextval('users_id_seq')
-- ;;
select id, nextval('invoice_seq') from orders where id < 2
-- ;;
SELECT setval('invoice_seq', 12, false)
-- ;;
SELECT id, nextval('invoice_seq') FROM orders WHERE id < 7
-- ;;
values (nextval('invoice_seq'), 'x')
-- ;;
SELECT "nextval"('invoice_seq')
-- ;;
SELECT nextval('invoice_seq')
-- ;;
SELECT id, nextval('invoice_seq') FROM orders WHERE id < 8
-- ;;
select id, nextval('invoice_seq') from orders where id < 3
-- ;;
VALUES (nextval('invoice_seq'), 'x')
-- ;;
SELECT setval('invoice_seq', 522, false)
-- ;;
SELECT setval('invoice_seq', 785, false)
-- ;;
select nextval('orders_id_seq'::regclass)
-- ;;
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) INSERT INTO kv VALUES ('new93', 'x')
-- ;;
EXPLAIN (ANALYZE true) UPDATE users SET name = 'x' WHERE id = 20
-- ;;
EXPLAIN (ANALYZE) DELETE FROM events WHERE id = 50
-- ;;
EXPLAIN (ANALYZE) INSERT INTO kv VALUES ('new77', 'x')
-- ;;
explain analyze verbose UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2
-- ;;
explain analyze verbose UPDATE users SET name = 'x' WHERE id = 25
-- ;;
EXPLAIN (ANALYZE true) UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 41
-- ;;
EXPLAIN ANALYZE UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 81
-- ;;
EXPLAIN ANALYZE UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 64
-- ;;
EXPLAIN (ANALYZE) UPDATE users SET name = 'x' WHERE id = 89
-- ;;
EXPLAIN (ANALYZE true) DELETE FROM events WHERE id = 58
-- ;;
EXPLAIN (ANALYZE true) UPDATE users SET name = 'x' WHERE id = 15
-- ;;
explain analyze verbose DELETE FROM events WHERE id = 85
-- ;;
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) DELETE FROM events WHERE id = 30
-- ;;
EXPLAIN (ANALYZE) INSERT INTO kv VALUES ('new61', 'x')
-- ;;
EXPLAIN ANALYZE SELECT nextval('invoice_seq')
-- ;;
EXPLAIN ANALYZE SELECT * FROM orders WHERE id = 5 FOR UPDATE
-- ;;
EXPLAIN (ANALYZE) WITH d AS (DELETE FROM events WHERE id = 1 RETURNING *) SELECT * FROM d
-- ;;
CREATE TABLE t_4062 (id int PRIMARY KEY, v text)
-- ;;
create table if not exists t_9409 (like orders including all)
-- ;;
CREATE TABLE t_3220 AS SELECT * FROM kv
-- ;;
CREATE UNLOGGED TABLE t_108 (a int)
-- ;;
create table t_5342 (id bigint generated always as identity, payload jsonb, check (payload is not null))
-- ;;
CREATE TABLE t_8175 (a int, b int) PARTITION BY RANGE (a)
-- ;;
CREATE TEMP TABLE tmp_3824 (a int)
-- ;;
CREATE TEMPORARY TABLE tmp_3431 (a int) ON COMMIT DROP
-- ;;
create temp table tmp_3252 as select * from users
-- ;;
CREATE INDEX ON orders (status)
-- ;;
CREATE INDEX idx_3918 ON users ((lower(email)))
-- ;;
CREATE UNIQUE INDEX idx_2302 ON kv (k, v)
-- ;;
create index idx_4920 on products using gin (attrs)
-- ;;
CREATE INDEX idx_1962 ON orders (created_at) WHERE status = 'new'
-- ;;
CREATE VIEW v_2672 AS SELECT * FROM users WHERE active
-- ;;
create or replace view active_users as select id, email, name from users where active
-- ;;
CREATE TEMP VIEW tv_9166 AS SELECT 1 AS x
-- ;;
create materialized view mv_6244 as select category, count(*) from products group by 1
-- ;;
create sequence seq_1752 start 100 increment 5
-- ;;
create schema s_382
-- ;;
CREATE TYPE mood_626 AS ENUM ('sad', 'ok', 'happy')
-- ;;
CREATE TYPE pair_5062 AS (a int, b text)
-- ;;
CREATE DOMAIN posint_29 AS int CHECK (VALUE > 0)
-- ;;
CREATE FUNCTION f_2061(a int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT a * 2 $$
-- ;;
CREATE OR REPLACE FUNCTION f_6725() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP);
  RETURN NEW;
END
$fn$
-- ;;
CREATE FUNCTION f_2086(i int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT i + 1; SELECT i + 2; END
-- ;;
CREATE PROCEDURE p_5981() LANGUAGE sql AS 'DELETE FROM audit'
-- ;;
CREATE TRIGGER trg_1012 AFTER UPDATE ON kv FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()
-- ;;
create rule r_9226 as on insert to kv do also (insert into audit (tbl, op) values ('kv', 'i'); insert into audit (tbl, op) values ('kv', 'j'))
-- ;;
CREATE POLICY pol_4526 ON orders FOR SELECT USING (user_id = 1)
-- ;;
create statistics st_2063 on user_id, status from orders
-- ;;
CREATE AGGREGATE agg_2150(int) (SFUNC = int4pl, STYPE = int)
-- ;;
CREATE COLLATION coll_5920 FROM "C"
-- ;;
CREATE CAST (int8 AS order_status) WITH INOUT AS ASSIGNMENT
-- ;;
CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)
-- ;;
CREATE EXTENSION IF NOT EXISTS plpgsql
-- ;;
ALTER TABLE users ADD COLUMN c_8038 int
-- ;;
ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'n/a'
-- ;;
ALTER TABLE orders ALTER COLUMN note TYPE varchar(500)
-- ;;
ALTER TABLE kv RENAME COLUMN v TO value
-- ;;
ALTER TABLE products ADD CONSTRAINT chk_7985 CHECK (price >= 0) NOT VALID
-- ;;
ALTER TABLE events SET (fillfactor = 90)
-- ;;
ALTER TABLE IF EXISTS kv OWNER TO CURRENT_USER
-- ;;
ALTER INDEX orders_user_idx RENAME TO orders_user_idx2
-- ;;
ALTER SEQUENCE invoice_seq RESTART WITH 1000
-- ;;
ALTER VIEW active_users RENAME TO active_users2
-- ;;
alter function user_name(int) stable
-- ;;
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded'
-- ;;
ALTER SCHEMA reporting RENAME TO reports
-- ;;
ALTER DOMAIN email_address SET NOT NULL
-- ;;
ALTER MATERIALIZED VIEW order_totals SET (fillfactor = 70)
-- ;;
alter role current_user set work_mem = '8MB'
-- ;;
alter database postgres set work_mem = '8MB'
-- ;;
alter table orders enable row level security
-- ;;
DROP TABLE archived_orders
-- ;;
drop table if exists no_such_table_4514
-- ;;
DROP VIEW active_users
-- ;;
DROP INDEX orders_created_idx
-- ;;
DROP SEQUENCE invoice_seq
-- ;;
drop function user_name(int)
-- ;;
DROP MATERIALIZED VIEW order_totals
-- ;;
DROP SCHEMA reporting CASCADE
-- ;;
DROP TYPE IF EXISTS no_such_type_839
-- ;;
DROP PROCEDURE archive_orders
-- ;;
TRUNCATE events
-- ;;
TRUNCATE TABLE audit, pgbench_history RESTART IDENTITY
-- ;;
TRUNCATE kv CASCADE
-- ;;
GRANT SELECT ON users TO PUBLIC
-- ;;
grant select, insert, update on all tables in schema public to public
-- ;;
REVOKE UPDATE ON orders FROM PUBLIC
-- ;;
GRANT USAGE ON SCHEMA reporting TO PUBLIC
-- ;;
COMMENT ON TABLE orders IS 'customer orders; see FOR UPDATE notes'
-- ;;
COMMENT ON COLUMN users.email IS NULL
-- ;;
REFRESH MATERIALIZED VIEW order_totals
-- ;;
REFRESH MATERIALIZED VIEW order_totals WITH NO DATA
-- ;;
create table pg_temp.tt_5188 (a int)
-- ;;
COMMENT ON VIEW active_users IS 'v'
-- ;;
DO $$ BEGIN INSERT INTO audit (tbl, op) VALUES ('do', 'x'); END $$
-- ;;
DO LANGUAGE plpgsql $do$ BEGIN UPDATE kv SET v = 'do' WHERE k = 'key1'; END $do$
-- ;;
call archive_orders(now() - interval '5682 days')
-- ;;
COPY kv FROM STDIN
-- ;;
COPY kv (k, v) FROM STDIN WITH (FORMAT csv)
-- ;;
CREATE TABLE t_45097 (id int PRIMARY KEY, v text)
-- ;;
CREATE SCHEMA s_14655
-- ;;
ALTER TABLE products ADD CONSTRAINT chk_51232 CHECK (price >= 0) NOT VALID
-- ;;
CREATE INDEX idx_41864 ON products USING gin (attrs)
-- ;;
CREATE STATISTICS st_23430 ON user_id, status FROM orders
-- ;;
CREATE DOMAIN posint_27439 AS int CHECK (VALUE > 0)
-- ;;
CREATE OR REPLACE FUNCTION f_35121() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP);
  RETURN NEW;
END
$fn$
-- ;;
CREATE SEQUENCE seq_91617 START 100 INCREMENT 5
-- ;;
ALTER TABLE products ADD CONSTRAINT chk_31599 CHECK (price >= 0) NOT VALID
-- ;;
CREATE SEQUENCE seq_50965 START 100 INCREMENT 5
-- ;;
CREATE INDEX idx_32998 ON users ((lower(email)))
-- ;;
CREATE FUNCTION f_39471(a int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT a * 2 $$
-- ;;
CREATE INDEX idx_38322 ON products USING gin (attrs)
-- ;;
CREATE TABLE pg_temp.tt_53329 (a int)
-- ;;
CREATE INDEX idx_47311 ON products USING gin (attrs)
-- ;;
CREATE TABLE pg_temp.tt_16283 (a int)
-- ;;
CREATE FUNCTION f_40330(i int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT i + 1; SELECT i + 2; END
-- ;;
CREATE UNLOGGED TABLE t_94452 (a int)
-- ;;
CREATE TEMP TABLE tmp_10325 (a int)
-- ;;
CREATE MATERIALIZED VIEW mv_93229 AS SELECT category, count(*) FROM products GROUP BY 1
-- ;;
CREATE TYPE mood_43575 AS ENUM ('sad', 'ok', 'happy')
-- ;;
SET search_path = public
-- ;;
SET LOCAL statement_timeout = '5s'
-- ;;
RESET work_mem
-- ;;
SELECT pg_advisory_lock(42)
-- ;;
SELECT pg_try_advisory_xact_lock(7)
-- ;;
SELECT txid_current()
-- ;;
LOCK TABLE orders IN ACCESS SHARE MODE
-- ;;
SELECT pg_notify('corpus', 'x')
-- ;;
LISTEN corpus_channel
-- ;;
DECLARE corpus_cursor CURSOR FOR SELECT * FROM users
