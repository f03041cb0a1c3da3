// pgjdbc through switchyard: server-side prepared statements (S_1, S_2, ... on every
// connection, prepareThreshold=1), batches, transactions and rollbacks, cursor fetches with
// fetchSize (a named portal read across several Executes), session settings, errors with
// their SQLSTATE, metadata, and several connections at once sharing a small pool.
//
// Usage: java -cp postgresql.jar JdbcClient.java HOST PORT DATABASE USER PASSWORD
// Exits non-zero with a message on the first failure; prints "ok" last on success.

import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class JdbcClient {
    static String url;
    static Properties props = new Properties();

    static void step(String s) {
        System.err.println("step: " + s);
    }

    static void check(boolean cond, String msg) {
        if (!cond) {
            throw new AssertionError(msg);
        }
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, props);
    }

    static long one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            check(rs.next(), "no row: " + sql);
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[2];
        props.setProperty("user", args[3]);
        props.setProperty("password", args[4]);
        props.setProperty("prepareThreshold", "1");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        props.setProperty("ApplicationName", "switchyard-pgjdbc-test");

        try (Connection c = connect()) {
            step("setup");
            try (Statement s = c.createStatement()) {
                s.execute("drop table if exists cl_jdbc");
                s.execute("create table cl_jdbc (id int primary key, v text, n numeric)");
            }

            step("server-side prepared statements, reused many times");
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2, ?::text")) {
                for (int i = 0; i < 50; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "v" + i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "row " + i);
                        check(rs.getInt(1) == 2 * i, "value " + i);
                        check(rs.getString(2).equals("v" + i), "text " + i);
                    }
                }
            }

            step("batch insert in a transaction, then commit");
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into cl_jdbc values (?, ?, ?)")) {
                for (int i = 1; i <= 500; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.setBigDecimal(3, new java.math.BigDecimal(i).movePointLeft(2));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 500, "batch counts " + counts.length);
            }
            c.commit();
            check(one(c, "select count(*) from cl_jdbc") == 500, "500 rows after commit");
            c.commit();

            step("rollback");
            try (Statement s = c.createStatement()) {
                s.execute("insert into cl_jdbc values (1000, 'gone', 0)");
            }
            c.rollback();
            check(one(c, "select count(*) from cl_jdbc where id = 1000") == 0, "rolled back");
            c.commit();

            step("a failing batch rolls back with its transaction");
            try (PreparedStatement ps = c.prepareStatement("insert into cl_jdbc values (?, 'dup', 0)")) {
                ps.setInt(1, 2000);
                ps.addBatch();
                ps.setInt(1, 1);
                ps.addBatch();
                ps.executeBatch();
                check(false, "duplicate key not reported");
            } catch (BatchUpdateException e) {
                check("23505".equals(e.getNextException() != null
                        ? e.getNextException().getSQLState() : e.getSQLState()),
                        "SQLSTATE " + e.getSQLState());
            }
            c.rollback();
            check(one(c, "select count(*) from cl_jdbc where id = 2000") == 0, "batch rolled back");
            c.commit();

            step("cursor fetch: a named portal read in pieces across several Executes");
            try (PreparedStatement ps = c.prepareStatement("select id, v from cl_jdbc order by id")) {
                ps.setFetchSize(37);
                long sum = 0;
                int rows = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        sum += rs.getInt(1);
                        rows++;
                        check(rs.getString(2).equals("row " + rs.getInt(1)), "cursor row");
                    }
                }
                check(rows == 500 && sum == 500L * 501 / 2, "cursor rows " + rows + " sum " + sum);
            }
            c.commit();
            c.setAutoCommit(true);

            step("session settings persist across transactions");
            try (Statement s = c.createStatement()) {
                s.execute("set search_path = pg_catalog, public");
                s.execute("set extra_float_digits = 1");
            }
            for (int i = 0; i < 5; i++) {
                try (Statement s = c.createStatement();
                        ResultSet rs = s.executeQuery("show search_path")) {
                    check(rs.next() && rs.getString(1).equals("pg_catalog, public"), "search_path");
                }
            }
            try (Statement s = c.createStatement()) {
                s.execute("reset search_path");
            }

            step("errors carry their SQLSTATE; the connection stays usable");
            try (PreparedStatement ps = c.prepareStatement("select 1 / ?::int")) {
                ps.setInt(1, 0);
                ps.executeQuery();
                check(false, "division by zero not reported");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("select * from cl_jdbc_no_such_table");
                check(false, "missing table not reported");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
            check(one(c, "select 41 + 1") == 42, "usable after errors");

            step("metadata");
            try (PreparedStatement ps = c.prepareStatement("select id, v, n from cl_jdbc where id = ?")) {
                ResultSetMetaData md = ps.getMetaData();
                check(md.getColumnCount() == 3, "column count");
                check(md.getColumnName(2).equals("v"), "column name");
                check(ps.getParameterMetaData().getParameterCount() == 1, "parameter count");
            }
            check(c.getMetaData().getDatabaseProductName().equals("PostgreSQL"), "product name");
        }

        step("several connections at once, each with its own S_1, S_2, ...");
        ExecutorService pool = Executors.newFixedThreadPool(4);
        List<Future<Void>> done = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            final int k = t;
            done.add(pool.submit(() -> {
                try (Connection c = connect()) {
                    // A different first statement on every connection: each is S_1 there.
                    String sql = "select ?::int * " + (k + 1) + ", " + k + " as who";
                    try (PreparedStatement ps = c.prepareStatement(sql);
                            PreparedStatement sum = c.prepareStatement(
                                    "select sum(id) + ?::int from cl_jdbc")) {
                        for (int i = 0; i < 100; i++) {
                            ps.setInt(1, i);
                            try (ResultSet rs = ps.executeQuery()) {
                                check(rs.next(), "row");
                                check(rs.getInt(1) == i * (k + 1) && rs.getInt(2) == k,
                                        "connection " + k + " got " + rs.getInt(1) + "/" + rs.getInt(2));
                            }
                            if (i % 10 == 0) {
                                c.setAutoCommit(false);
                                sum.setInt(1, k);
                                try (ResultSet rs = sum.executeQuery()) {
                                    check(rs.next() && rs.getLong(1) == 500L * 501 / 2 + k, "sum");
                                }
                                c.commit();
                                c.setAutoCommit(true);
                            }
                        }
                    }
                }
                return null;
            }));
        }
        for (Future<Void> f : done) {
            f.get(120, TimeUnit.SECONDS);
        }
        pool.shutdown();

        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("drop table cl_jdbc");
        }
        System.out.println("ok");
    }
}
