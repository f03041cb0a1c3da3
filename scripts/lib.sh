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
REPLICA_PORTS=()
SY_PID=""
SY_HTTP=""
cleanup() {
    # Every step runs whatever the one before returned (errexit would end the trap early).
    set +e
    [ -n "$SY_PID" ] && kill -INT "$SY_PID" 2>/dev/null && wait "$SY_PID" 2>/dev/null
    local i
    for ((i = 1; i <= ${#REPLICA_PORTS[@]}; i++)); do
        as_pg "$BINDIR/pg_ctl" -D "$RUN/replica$i" -m immediate stop >/dev/null 2>&1
    done
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

# Starts N streaming replicas of the primary (pg_basebackup -R, hot standby); appends their
# ports to REPLICA_PORTS. Call once.
start_replicas() {
    local i port dir
    for ((i = 1; i <= $1; i++)); do
        port=$(free_port)
        dir=$RUN/replica$i
        as_pg "$BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$dir" -R \
            -X stream -c fast >"$RUN/basebackup$i.log" 2>&1 || {
            cat "$RUN/basebackup$i.log"
            die "pg_basebackup for replica $i failed"
        }
        echo "port = $port" >>"$dir/postgresql.conf"
        REPLICA_PORTS+=("$port")
        log "replica $i on 127.0.0.1:$port"
        as_pg "$BINDIR/pg_ctl" -D "$dir" -l "$RUN/replica$i.log" -w start >/dev/null
    done
}

# Waits (up to 30 s) until every replica has replayed the primary's WAL as of now: what was
# set up directly on the primary (a database, an extension) is then there on the replicas too.
wait_replay() {
    local lsn port i
    lsn=$(pg_psql postgres -c 'SELECT pg_current_wal_lsn()')
    for port in "${REPLICA_PORTS[@]}"; do
        for ((i = 0; i < 300; i++)); do
            [ "$("$BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -c \
                "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && continue 2
            sleep 0.1
        done
        die "replica on port $port did not replay up to $lsn within 30 s"
    done
}

# Moves the primary to another port (a restart): move_primary PORT. Sets PG_PORT.
move_primary() {
    as_pg "$BINDIR/pg_ctl" -D "$RUN/data" -l "$RUN/postgres.log" -w -o "-p $1" restart >/dev/null
    PG_PORT=$1
}

# TOML appended to the proxy's configuration (more [[users]]); the superuser `postgres`
# (trust) is always there.
PROXY_EXTRA_TOML=""

# Starts switchyard: start_proxy MODE LOGFILE [PORT]. MODE: transaction or session, in front of
# the primary alone; split: transaction pooling in front of the primary and the replicas
# (start_replicas), reads split with the default consistency (read-your-writes). Listens on
# 127.0.0.1:PORT (default: a free port). Users: `postgres` (trust) and PROXY_EXTRA_TOML's;
# other roles log in with their server passwords ([auth_query] as postgres).
# Waits until every backend is up in /status. Sets PORT and SY_PID.
start_proxy() {
    local port http pool_mode=$1 backends=("$PG_PORT") i
    if [ "$1" = split ]; then
        pool_mode=transaction
        backends+=("${REPLICA_PORTS[@]}")
    fi
    port=${3:-$(free_port)}
    http=$(free_port)
    cat >"$RUN/switchyard.toml" <<EOF
listen = "127.0.0.1:$port"
http_listen = "127.0.0.1:$http"
pool_mode = "$pool_mode"
max_client_connections = 400

[pool]
size = 60

[health]
interval = "200ms"

[auth_query]
user = "postgres"
EOF
    for ((i = 0; i < ${#backends[@]}; i++)); do
        printf '\n[[backends]]\nname = "pg%d"\naddress = "127.0.0.1:%s"\n' "$i" "${backends[$i]}" \
            >>"$RUN/switchyard.toml"
    done
    printf '\n[[users]]\nname = "postgres"\nauth = "trust"\n%s\n' "$PROXY_EXTRA_TOML" \
        >>"$RUN/switchyard.toml"
    setsid "$SY_BIN" run --config "$RUN/switchyard.toml" >"$2" 2>&1 </dev/null &
    SY_PID=$!
    for ((i = 0; i < 300; i++)); do
        if "$BINDIR/psql" -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'SELECT 1' >/dev/null 2>&1 && backends_up "$http" "${#backends[@]}"; then
            PORT=$port
            SY_HTTP=$http
            return
        fi
        sleep 0.1
    done
    die "switchyard did not become ready (see $2)"
}

# True when switchyard's /status on 127.0.0.1:HTTP lists N backends, all up: backends_up HTTP N
backends_up() {
    python3 -c '
import json, sys, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
    backends = json.load(r)["backends"]
sys.exit(0 if len(backends) == n and all(b["up"] for b in backends) else 1)
' "$1" "$2" 2>/dev/null
}

# Logs switchyard's transactions per backend so far, from /metrics ("pg0 1234, pg1 567, ..."),
# and fails when none ran on a replica (pg1, pg2, ...): a split run must have split reads.
check_replica_transactions() {
    local out
    out=$(python3 -c '
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5) as r:
    lines = r.read().decode().splitlines()
pre = "switchyard_transactions_total{backend=\""
counts = dict(l[len(pre):].split("\"} ") for l in lines if l.startswith(pre))
routed = [l[len("switchyard_routed_total{"):].replace("\"} ", " ").replace("\"", "")
          for l in lines if l.startswith("switchyard_routed_total{") and not l.endswith(" 0")]
print(", ".join(f"{b} {n}" for b, n in sorted(counts.items())) + "; routed: " + ", ".join(routed))
sys.exit(0 if any(float(n) > 0 for b, n in counts.items() if b != "pg0") else 1)
' "$SY_HTTP")
    local rc=$?
    log "transactions per backend: $out"
    return $rc
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
