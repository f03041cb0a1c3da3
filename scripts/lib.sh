# Shared by scripts/regress.sh and scripts/drivers.sh: one throwaway primary and a switchyard
# in front of it, both on free 127.0.0.1 ports, stopped by one EXIT trap. Source it after
# setting LOG_TAG; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "[${LOG_TAG:-script} $(date +%H:%M:%S)] $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)

# The server binaries deps.sh found (or installed).
BINDIR=$(
    # shellcheck disable=SC1091
    source <(sed -n '/^pg_bindir()/,/^}/p' "$ROOT/scripts/deps.sh")
    pg_bindir
)
[ -n "$BINDIR" ] || die "PostgreSQL server binaries not found (run scripts/deps.sh)"
PG_VERSION=$("$BINDIR/postgres" --version | awk '{print $3}')
PG_MAJOR=${PG_VERSION%%.*}

# Runs a command as the `postgres` OS user when we are root (PostgreSQL refuses to run as root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

RUN=$(mktemp -d /tmp/switchyard-script.XXXXXX)
chmod 755 "$RUN"
[ "$(id -u)" -eq 0 ] && chown postgres "$RUN"
PG_PORT=""
SY_PID=""
cleanup() {
    [ -n "$SY_PID" ] && kill -INT "$SY_PID" 2>/dev/null && wait "$SY_PID" 2>/dev/null
    [ -n "$PG_PORT" ] && as_pg "$BINDIR/pg_ctl" -D "$RUN/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$RUN"
}
trap cleanup EXIT

# psql as the superuser on the primary: pg_psql DB ARGS...
pg_psql() {
    local db=$1
    shift
    "$BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}

# Starts the primary (trust authentication, superuser `postgres`); sets PG_PORT.
start_primary() {
    PG_PORT=$(free_port)
    log "primary (PostgreSQL $PG_VERSION) on 127.0.0.1:$PG_PORT"
    as_pg "$BINDIR/initdb" -D "$RUN/data" -U postgres --auth=trust --no-instructions \
        --locale=C.UTF-8 -E UTF8 >"$RUN/initdb.log" 2>&1 || {
        cat "$RUN/initdb.log"
        die "initdb failed"
    }
    cat >>"$RUN/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN'
max_connections = 200
max_prepared_transactions = 10
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    as_pg "$BINDIR/pg_ctl" -D "$RUN/data" -l "$RUN/postgres.log" -w start >/dev/null
}

# Starts switchyard in front of the primary: start_proxy MODE LOGFILE (MODE: transaction or
# session); the superuser `postgres` is its only user (trust). Sets PORT and SY_PID.
start_proxy() {
    local port http
    port=$(free_port)
    http=$(free_port)
    cat >"$RUN/switchyard.toml" <<EOF
listen = "127.0.0.1:$port"
http_listen = "127.0.0.1:$http"
pool_mode = "$1"
max_client_connections = 400

[pool]
size = 60

[[backends]]
name = "primary"
address = "127.0.0.1:$PG_PORT"

[[users]]
name = "postgres"
auth = "trust"
EOF
    setsid "$SY_BIN" run --config "$RUN/switchyard.toml" >"$2" 2>&1 </dev/null &
    SY_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        if "$BINDIR/psql" -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'SELECT 1' >/dev/null 2>&1; then
            PORT=$port
            return
        fi
        sleep 0.1
    done
    die "switchyard did not become ready (see $2)"
}

# Stops switchyard and waits until its server connections to database DB have ended (so that
# the next run can drop that database): stop_proxy DB
stop_proxy() {
    kill -INT "$SY_PID" 2>/dev/null || true
    wait "$SY_PID" 2>/dev/null || true
    SY_PID=""
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(pg_psql postgres -c "SELECT count(*) FROM pg_stat_activity
                WHERE datname = '$1' AND pid <> pg_backend_pid()")" = 0 ] &&
            return
        sleep 0.1
    done
}

# Rolls back prepared transactions a previous run left (they keep a database from being dropped).
rollback_prepared() {
    local db gid
    pg_psql postgres -F ' ' -c "SELECT database, gid FROM pg_prepared_xacts" |
        while read -r db gid; do
            [ -n "$gid" ] && pg_psql "$db" -c "ROLLBACK PREPARED '$gid'" >/dev/null 2>&1
        done
    return 0
}
