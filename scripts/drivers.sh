#!/usr/bin/env bash
# Runs real drivers' own test suites, unmodified, on a throwaway primary: directly, then
# through switchyard in transaction pooling and in session pooling mode, and (split) in
# transaction pooling in front of the primary and two streaming replicas with reads split;
# and compares them test by test. A test that passes directly must pass through the proxy; the script exits 1
# when one does not, and prints which.
#
# Suites:
#   psycopg2        psycopg2 2.9.10 (psycopg2-binary), tests/ of its sdist from PyPI, the
#                   driver's wheel in a private venv
#   asyncpg         asyncpg 0.32.0, the same way (with PGHOST set it uses the given server; its
#                   tests that start clusters of their own fail the same way in every mode
#                   when run as root)
#   pg8000          pg8000 1.31.6 (pure Python), test/ of its sdist, run with pytest (its
#                   auth/ tests, which reconfigure the server's SSL and need CI's pg_hba, and
#                   its benchmarks are left out)
#   pgx, pq         the Go drivers pgx v4 (packages pgx and pgxpool) and lib/pq, from Debian's
#                   golang-github-jackc-pgx-v4-dev and golang-github-lib-pq-dev (their full
#                   sources with the tests), built by Debian's Go in GOPATH mode (installed
#                   with apt when missing)
#   tokio-postgres  the tokio-postgres this crate builds with (Cargo.lock), tests/ of its
#                   crates.io package, all type features. Its tests connect to 127.0.0.1:5433
#                   and `localhost` port 5433, so that port must be free: the direct run moves
#                   the primary there, the proxy runs listen there. The primary gets the
#                   users, passwords, authentication methods and extensions of the driver's
#                   own test setup (pass_user, md5_user, scram_user; hstore, citext, ltree).
#
# Usage: scripts/drivers.sh [SUITE...] [-- MODE...]
#   SUITE: psycopg2, asyncpg, pg8000, pgx, pq, tokio-postgres (default: all six)
#   MODE: direct, transaction, session, split (default: all)
# Output: target/drivers/<suite>/<mode>.log (the runner's output) and <mode>.tsv (test, outcome).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PSYCOPG2_VERSION=2.9.10
ASYNCPG_VERSION=0.32.0
PG8000_VERSION=1.31.6
RUN_TIMEOUT=${DRIVERS_TIMEOUT:-900}

SUITES=()
MODES=()
seen_sep=0
for arg in "$@"; do
    if [ "$arg" = "--" ]; then
        seen_sep=1
    elif [ "$seen_sep" -eq 0 ]; then
        case "$arg" in
            psycopg2 | asyncpg | pg8000 | pgx | pq | tokio-postgres) SUITES+=("$arg") ;;
            *)
                echo "drivers.sh: unknown suite: $arg (psycopg2, asyncpg, pg8000, pgx, pq, tokio-postgres)" >&2
                exit 2
                ;;
        esac
    else
        case "$arg" in
            direct | transaction | session | split) MODES+=("$arg") ;;
            *)
                echo "drivers.sh: unknown mode: $arg (direct, transaction, session, split)" >&2
                exit 2
                ;;
        esac
    fi
done
[ ${#SUITES[@]} -eq 0 ] && SUITES=(psycopg2 asyncpg pg8000 pgx pq tokio-postgres)
[ ${#MODES[@]} -eq 0 ] && MODES=(direct transaction session split)
[ "${MODES[0]}" = direct ] || MODES=(direct "${MODES[@]}")

./scripts/deps.sh </dev/null
cargo build --release --bins </dev/null
LOG_TAG=drivers
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
SY_BIN=$ROOT/target/release/switchyard

WORK=$ROOT/target/drivers
mkdir -p "$WORK/src"

# ---------------------------------------------------------------- drivers and their tests
VENV=$WORK/venv
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
fetch_tests() { # NAME VERSION [DIR]: the sdist's DIR (tests) in $WORK/src/NAME-VERSION
    local dir=$WORK/src/$1-$2 tests=${3:-tests}
    [ -d "$dir/$tests" ] && return
    log "downloading the $1 $2 source distribution (its tests)"
    "${PIP[@]}" download --no-deps --no-binary :all: "$1==$2" -d "$WORK/src/dl" </dev/null
    mkdir -p "$dir"
    # Only tests/: the sdist's package sources must not shadow the installed wheel.
    tar -xzf "$WORK/src/dl/$1-$2.tar.gz" -C "$dir" --strip-components=1 "$1-$2/$tests"
}
if [[ " ${SUITES[*]} " =~ " psycopg2 "|" asyncpg "|" pg8000 " ]]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "${PIP[@]}" install "psycopg2-binary==$PSYCOPG2_VERSION" "asyncpg==$ASYNCPG_VERSION" \
        "pg8000==$PG8000_VERSION" pytest pytest-mock pytz
    fetch_tests psycopg2 "$PSYCOPG2_VERSION"
    fetch_tests asyncpg "$ASYNCPG_VERSION"
    fetch_tests pg8000 "$PG8000_VERSION" test
fi

# pgx and pq: Debian's packages of their sources, tests included, and Debian's Go.
GO_PACKAGES=(golang-go golang-github-jackc-pgx-v4-dev golang-github-lib-pq-dev
    golang-github-stretchr-testify-dev)
GO_ENV=(GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$WORK/go-cache" GOFLAGS=)
if [[ " ${SUITES[*]} " =~ " pgx "|" pq " ]]; then
    if ! dpkg -s "${GO_PACKAGES[@]}" >/dev/null 2>&1; then
        log "installing Go and the pgx and lib/pq sources with apt"
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${GO_PACKAGES[@]}" >/dev/null ||
            { "${SUDO[@]}" apt-get update -q >/dev/null &&
                DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${GO_PACKAGES[@]}" >/dev/null; } ||
            die "could not install ${GO_PACKAGES[*]}"
    fi
    log "building the pgx and lib/pq tests"
    env "${GO_ENV[@]}" go test -count=1 -run '^$' github.com/jackc/pgx/v4 \
        github.com/jackc/pgx/v4/pgxpool github.com/lib/pq >/dev/null </dev/null ||
        die "the pgx and lib/pq tests do not build"
fi

# tokio-postgres: the package cargo already fetched for this crate, copied (as a workspace of
# its own) and its tests built once.
TP_PORT=5433
TP_FEATURES=runtime,array-impls,with-bit-vec-0_6,with-bit-vec-0_7,with-bit-vec-0_8
TP_FEATURES+=,with-bit-vec-0_9,with-chrono-0_4,with-eui48-1,with-geo-types-0_6,with-geo-types-0_7
TP_FEATURES+=,with-jiff-0_1,with-jiff-0_2,with-serde_json-1,with-smol_str-01,with-time-0_2
TP_FEATURES+=,with-time-0_3,with-uuid-0_8,with-uuid-1
TP_CARGO=(cargo test --features "$TP_FEATURES" --test test)
if [[ " ${SUITES[*]} " == *" tokio-postgres "* ]]; then
    tp_manifest=$(cargo metadata --format-version 1 </dev/null | python3 -c '
import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"]
           if p["name"] == "tokio-postgres"))')
    TP_SRC=$WORK/src/$(basename "$(dirname "$tp_manifest")")
    if [ ! -d "$TP_SRC/tests" ]; then
        cp -r "$(dirname "$tp_manifest")" "$TP_SRC.tmp"
        printf '\n[workspace]\n' >>"$TP_SRC.tmp/Cargo.toml"
        mv "$TP_SRC.tmp" "$TP_SRC"
    fi
    log "building $(basename "$TP_SRC")'s tests"
    (cd "$TP_SRC" && CARGO_TARGET_DIR=$WORK/cargo-target "${TP_CARGO[@]}" --no-run --quiet) </dev/null
    python3 -c 'import socket; socket.create_server(("127.0.0.1", int(__import__("sys").argv[1])))' \
        "$TP_PORT" 2>/dev/null ||
        die "tokio-postgres: its tests need 127.0.0.1:$TP_PORT, which is in use"
    PROXY_EXTRA_TOML='
[[users]]
name = "pass_user"
password = "password"

[[users]]
name = "md5_user"
password = "password"
auth = "md5"

[[users]]
name = "scram_user"
password = "password"
'
fi

# ---------------------------------------------------------------- runs
start_primary
[[ " ${MODES[*]} " == *" split "* ]] && start_replicas 2

prepare_db() { # SUITE: a fresh database for the suite
    case "$1" in
        psycopg2)
            pg_psql postgres -c "DROP DATABASE IF EXISTS psycopg2_test" -c "CREATE DATABASE psycopg2_test"
            pg_psql psycopg2_test -c "CREATE EXTENSION hstore"
            ;;
        asyncpg) ;; # uses the postgres database and cleans up after itself
        pg8000)
            # Its hstore tests expect the extension; a role a failed run of its
            # test_bytes_password left would fail the next run's.
            pg_psql postgres -c "CREATE EXTENSION IF NOT EXISTS hstore" \
                -c "DROP ROLE IF EXISTS boltzmann" 2>&1 | grep -v '^NOTICE' >&2 || true
            ;;
        pgx)
            # pgx's CI setup: a database, hstore and a domain its tests use.
            pg_psql postgres -c "DROP DATABASE IF EXISTS pgx_test WITH (FORCE)" -c "CREATE DATABASE pgx_test"
            pg_psql pgx_test -c "CREATE EXTENSION hstore" -c "CREATE DOMAIN uint64 AS numeric(20,0)"
            ;;
        pq)
            # (FORCE: sessions its tests left may still be ending)
            pg_psql postgres -c "DROP DATABASE IF EXISTS pqgotest WITH (FORCE)" -c "CREATE DATABASE pqgotest"
            pg_psql pqgotest -c "CREATE EXTENSION hstore"
            ;;
        tokio-postgres)
            # The driver's own test setup: a user per password method, and three extensions.
            if ! grep -q pass_user "$RUN/data/pg_hba.conf"; then
                {
                    printf 'host all pass_user 127.0.0.1/32 password\n'
                    printf 'host all md5_user 127.0.0.1/32 md5\n'
                    printf 'host all scram_user 127.0.0.1/32 scram-sha-256\n'
                    cat "$RUN/data/pg_hba.conf"
                } >"$RUN/pg_hba.conf"
                as_pg cp "$RUN/pg_hba.conf" "$RUN/data/pg_hba.conf"
                pg_psql postgres -c "SELECT pg_reload_conf()" >/dev/null
            fi
            pg_psql postgres -c "DROP ROLE IF EXISTS pass_user" -c "DROP ROLE IF EXISTS md5_user" \
                -c "DROP ROLE IF EXISTS scram_user" \
                -c "SET password_encryption = 'md5'" \
                -c "CREATE ROLE pass_user PASSWORD 'password' LOGIN" \
                -c "CREATE ROLE md5_user PASSWORD 'password' LOGIN" \
                -c "SET password_encryption = 'scram-sha-256'" \
                -c "CREATE ROLE scram_user PASSWORD 'password' LOGIN" \
                -c "CREATE EXTENSION IF NOT EXISTS hstore" -c "CREATE EXTENSION IF NOT EXISTS citext" \
                -c "CREATE EXTENSION IF NOT EXISTS ltree" 2>&1 | grep -v '^NOTICE' >&2 || true
            ;;
    esac
}

suite_db() {
    case "$1" in
        psycopg2) echo psycopg2_test ;;
        pgx) echo pgx_test ;;
        pq) echo pqgotest ;;
        *) echo postgres ;;
    esac
}

# Tests that cannot pass through switchyard for a reason outside the proxy's relay, one per
# line as in the .tsv files: known_differences SUITE MODE. (pg8000's test_bytes_password
# tests were here until switchyard learned auth_query: they log in as a role they create.)
known_differences() {
    case "$1 $2" in
        # With reads split, a read of pg_prepared_statements lists the statements of the
        # server that ran it (README, "Known limitations"): the statement this test prepared
        # and ran lives on a connection to one replica, and its count may be read on the
        # other.
        "pg8000 split") echo test.native.test_query::test_close_prepared_statement ;;
        *) ;;
    esac
}

# pytest's JUnit XML as "test id<TAB>ok|fail|error|skip" (xfail counts as skip there)
junit_outcomes() {
    [ -f "$1" ] || return 0
    python3 -c '
import sys, xml.etree.ElementTree as ET
for tc in ET.parse(sys.argv[1]).iter("testcase"):
    kinds = {c.tag for c in tc}
    out = ("error" if "error" in kinds else "fail" if "failure" in kinds
           else "skip" if "skipped" in kinds else "ok")
    print(tc.get("classname") + "::" + tc.get("name") + "\t" + out)
' "$1"
}

# go test -json's events as "package.Test<TAB>ok|fail|skip" (subtests too)
go_outcomes() {
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("Test") and e.get("Action") in ("pass", "fail", "skip"):
        out = {"pass": "ok", "fail": "fail", "skip": "skip"}[e["Action"]]
        print(e["Package"] + "." + e["Test"] + "\t" + out)
' "$1"
}

# libtest's lines "test NAME ... ok|FAILED|ignored" as "NAME<TAB>ok|fail|skip"
libtest_outcomes() {
    sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\|ignored\)$/\1\t\2/p' "$1" |
        sed 's/\tFAILED$/\tfail/; s/\tignored$/\tskip/'
}

run_suite() { # SUITE MODE PORT
    local out=$WORK/$1
    local -a env=(PGHOST=127.0.0.1 PGPORT="$3" PGUSER=postgres PGDATABASE="$(suite_db "$1")"
        PYTHONDONTWRITEBYTECODE=1)
    local src target
    case "$1" in
        psycopg2)
            src=$WORK/src/psycopg2-$PSYCOPG2_VERSION
            target=tests:test_suite
            env+=(PSYCOPG2_TESTDB=psycopg2_test PSYCOPG2_TESTDB_HOST=127.0.0.1
                PSYCOPG2_TESTDB_PORT="$3" PSYCOPG2_TESTDB_USER=postgres)
            ;;
        asyncpg)
            src=$WORK/src/asyncpg-$ASYNCPG_VERSION
            target=tests:suite
            ;;
        pg8000)
            # pytest's report as "test id<TAB>outcome" (ok, fail, error, skip, xfail, xpass)
            (cd "$WORK/src/pg8000-$PG8000_VERSION" && env "${env[@]}" timeout -k 10 "$RUN_TIMEOUT" \
                "$VENV/bin/python" -m pytest test -p no:cacheprovider -q -rfE \
                --ignore=test/native/auth --ignore=test/dbapi/auth --ignore=test/legacy/auth \
                --ignore=test/native/test_benchmarks.py --ignore=test/dbapi/test_benchmarks.py \
                --ignore=test/legacy/test_benchmarks.py --junitxml="$out/$2.xml") \
                >"$out/$2.log" 2>&1 </dev/null
            local status=$?
            junit_outcomes "$out/$2.xml" >"$out/$2.tsv"
            return $status
            ;;
        pgx | pq)
            local -a pkgs=(github.com/lib/pq)
            [ "$1" = pgx ] && pkgs=(github.com/jackc/pgx/v4 github.com/jackc/pgx/v4/pgxpool)
            (cd "$WORK" && env "${env[@]}" "${GO_ENV[@]}" PGSSLMODE=disable \
                PGX_TEST_DATABASE="host=127.0.0.1 port=$3 user=postgres dbname=pgx_test" \
                timeout -k 10 "$RUN_TIMEOUT" go test -count=1 -json -timeout "${RUN_TIMEOUT}s" \
                "${pkgs[@]}") >"$out/$2.json" 2>"$out/$2.log" </dev/null
            local status=$?
            go_outcomes "$out/$2.json" >"$out/$2.tsv"
            return $status
            ;;
        tokio-postgres)
            (cd "$TP_SRC" && CARGO_TARGET_DIR=$WORK/cargo-target timeout -k 10 "$RUN_TIMEOUT" \
                "${TP_CARGO[@]}" -- --color never) >"$out/$2.log" 2>&1 </dev/null
            local status=$?
            libtest_outcomes "$out/$2.log" >"$out/$2.tsv"
            return $status
            ;;
    esac
    (cd "$src" && env "${env[@]}" timeout -k 10 "$RUN_TIMEOUT" "$VENV/bin/python" \
        "$ROOT/scripts/unittest_outcomes.py" "$out/$2.tsv" "$target") >"$out/$2.log" 2>&1 </dev/null
}

summary() { # TSV: "ok N, fail N, ..."
    awk -F'\t' '{ n[$2]++ } END { printf "ok %d, fail %d, error %d, skip %d, xfail %d, xpass %d",
        n["ok"], n["fail"], n["error"], n["skip"], n["xfail"], n["xpass"] }' "$1"
}

rc=0
for suite in "${SUITES[@]}"; do
    out=$WORK/$suite
    rm -rf "$out" && mkdir -p "$out"
    for mode in "${MODES[@]}"; do
        rollback_prepared
        prepare_db "$suite"
        [ "$mode" = split ] && wait_replay
        # tokio-postgres's tests connect to port 5433: the server listens there directly, the
        # proxy otherwise (the replicas find the primary again when it moves back).
        fixed_port=""
        if [ "$suite" = tokio-postgres ]; then
            fixed_port=$TP_PORT
            if [ "$mode" = direct ]; then
                home_port=$PG_PORT
                move_primary "$TP_PORT"
            fi
        fi
        if [ "$mode" = direct ]; then
            PORT=$PG_PORT
        else
            start_proxy "$mode" "$out/$mode.switchyard.log" "$fixed_port"
        fi
        log "$suite ($mode) on port $PORT"
        started=$(date +%s)
        status=0
        run_suite "$suite" "$mode" "$PORT" || status=$?
        if [ "$mode" = split ] && ! check_replica_transactions; then
            log "$suite (split): no transaction ran on a replica"
            rc=1
        fi
        [ "$mode" != direct ] && stop_proxy "$(suite_db "$suite")"
        if [ "$suite" = tokio-postgres ] && [ "$mode" = direct ]; then
            move_primary "$home_port"
        fi
        [ "$status" -eq 124 ] && log "$suite ($mode): cut off after ${RUN_TIMEOUT}s (hang?)"
        touch "$out/$mode.tsv"
        log "$suite ($mode): $(summary "$out/$mode.tsv") in $(($(date +%s) - started))s"
        if [ "$mode" = direct ] && ! grep -q $'\tok$' "$out/direct.tsv"; then
            tail -20 "$out/direct.log" >&2
            die "$suite: no test passed directly (see $out/direct.log)"
        fi
    done
    # Verdict: every test that passed (or was skipped) directly must do the same through the
    # proxy; a test missing from a run (cut off, crashed) counts as failed. The tests
    # known_differences names are listed apart and do not fail the run.
    for mode in "${MODES[@]}"; do
        [ "$mode" = direct ] && continue
        worse=$(awk -F'\t' '
            FNR == NR { direct[$1] = $2; next }
            { proxy[$1] = $2 }
            END {
                for (t in direct) {
                    d = direct[t]; p = (t in proxy) ? proxy[t] : "missing"
                    good_d = (d == "ok" || d == "skip" || d == "xfail")
                    good_p = (p == "ok" || p == "skip" || p == "xfail")
                    if (good_d && !good_p) print "  " t " (" p ")"
                }
            }' "$out/direct.tsv" "$out/$mode.tsv" | sort)
        # (lines "  TEST (outcome)"; an empty pattern list matches nothing)
        known=$(grep -F -f <(known_differences "$suite" "$mode" | sed 's/.*/  & (/') <<<"$worse" || true)
        worse=$(grep -v -F -f <(known_differences "$suite" "$mode" | sed 's/.*/  & (/') <<<"$worse" || true)
        if [ -n "$known" ]; then
            log "$suite, $mode: fails where PostgreSQL directly passes, for the known reason given above this verdict in drivers.sh:"
            echo "$known" >&2
        fi
        if [ -n "$worse" ]; then
            log "$suite, $mode: fails where PostgreSQL directly passes (see $out/$mode.log):"
            echo "$worse" >&2
            rc=1
        else
            log "$suite, $mode: every other test that passes directly passes"
        fi
    done
done
exit $rc
