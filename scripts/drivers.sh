#!/usr/bin/env bash
# Runs real drivers' own test suites, unmodified, on a throwaway primary: directly, then
# through switchyard in transaction pooling and in session pooling mode, and (split) in
# transaction pooling in front of the primary and two streaming replicas with reads split;
# and compares them test by test. A test that passes directly must pass through the proxy; the script exits 1
# when one does not, and prints which.
#
# Suites (the released source distributions from PyPI, the drivers' wheels in a private venv):
#   psycopg2   psycopg2 2.9.10 (psycopg2-binary), tests/ of its sdist
#   asyncpg    asyncpg 0.32.0, tests/ of its sdist (with PGHOST set it uses the given server;
#              its tests that start clusters of their own fail the same way in every mode
#              when run as root)
#
# Usage: scripts/drivers.sh [SUITE...] [-- MODE...]
#   SUITE: psycopg2, asyncpg (default: both)
#   MODE: direct, transaction, session, split (default: all)
# Output: target/drivers/<suite>/<mode>.log (the runner's output) and <mode>.tsv (test, outcome).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PSYCOPG2_VERSION=2.9.10
ASYNCPG_VERSION=0.32.0
RUN_TIMEOUT=${DRIVERS_TIMEOUT:-900}

SUITES=()
MODES=()
seen_sep=0
for arg in "$@"; do
    if [ "$arg" = "--" ]; then
        seen_sep=1
    elif [ "$seen_sep" -eq 0 ]; then
        case "$arg" in
            psycopg2 | asyncpg) SUITES+=("$arg") ;;
            *)
                echo "drivers.sh: unknown suite: $arg (psycopg2, asyncpg)" >&2
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
[ ${#SUITES[@]} -eq 0 ] && SUITES=(psycopg2 asyncpg)
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
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
"${PIP[@]}" install "psycopg2-binary==$PSYCOPG2_VERSION" "asyncpg==$ASYNCPG_VERSION"
fetch_tests() { # NAME VERSION: the sdist's tests/ in $WORK/src/NAME-VERSION
    local dir=$WORK/src/$1-$2
    [ -d "$dir/tests" ] && return
    log "downloading the $1 $2 source distribution (its tests)"
    "${PIP[@]}" download --no-deps --no-binary :all: "$1==$2" -d "$WORK/src/dl" </dev/null
    mkdir -p "$dir"
    # Only tests/: the sdist's package sources must not shadow the installed wheel.
    tar -xzf "$WORK/src/dl/$1-$2.tar.gz" -C "$dir" --strip-components=1 "$1-$2/tests"
}
fetch_tests psycopg2 "$PSYCOPG2_VERSION"
fetch_tests asyncpg "$ASYNCPG_VERSION"

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
    esac
}

suite_db() { case "$1" in psycopg2) echo psycopg2_test ;; asyncpg) echo postgres ;; esac }

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
        if [ "$mode" = direct ]; then
            PORT=$PG_PORT
        else
            start_proxy "$mode" "$out/$mode.switchyard.log"
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
        [ "$status" -eq 124 ] && log "$suite ($mode): cut off after ${RUN_TIMEOUT}s (hang?)"
        touch "$out/$mode.tsv"
        log "$suite ($mode): $(summary "$out/$mode.tsv") in $(($(date +%s) - started))s"
        if [ "$mode" = direct ] && ! grep -q $'\tok$' "$out/direct.tsv"; then
            tail -20 "$out/direct.log" >&2
            die "$suite: no test passed directly (see $out/direct.log)"
        fi
    done
    # Verdict: every test that passed (or was skipped) directly must do the same through the
    # proxy; a test missing from a run (cut off, crashed) counts as failed.
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
        if [ -n "$worse" ]; then
            log "$suite, $mode: fails where PostgreSQL directly passes (see $out/$mode.log):"
            echo "$worse" >&2
            rc=1
        else
            log "$suite, $mode: every test that passes directly passes"
        fi
    done
done
exit $rc
