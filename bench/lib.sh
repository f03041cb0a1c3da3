# Shared helpers for bench/run.sh and bench/split.sh. Source it; do not run it.
#
# Everything a benchmark starts is recorded here (PIDs, data directories) so that one EXIT
# trap can stop it all, whatever way the script ends. All servers listen on 127.0.0.1 only,
# on free ports chosen at run time.
# shellcheck shell=bash

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"

BENCH_SECONDS="${BENCH_SECONDS:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
BENCH_SCALE="${BENCH_SCALE:-10}"
BENCH_PASSWORD="bench"

# State for cleanup.
WORK=""              # temp dir holding every data dir, config and log
PG_DATADIRS=()       # PostgreSQL data dirs we started
BG_PIDS=()           # switchyard instances and other background children
PGBOUNCER_PIDFILE="" # pgbouncer daemonizes; its pid is in this file
PGBENCH_PID=""       # the pgbench run in progress
USED_PORTS=" "

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}

[[ "$BENCH_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# Runs a command as the `postgres` OS user when we are root (PostgreSQL refuses to run as
# root), from / so that tools calling getcwd() do not trip over an unreadable directory.
as_pg() {
    if [ "$IS_ROOT" -eq 1 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# ---------------------------------------------------------------------------------------------
# Cleanup

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$PGBENCH_PID" ]; then
        kill "$PGBENCH_PID" 2>/dev/null
        wait "$PGBENCH_PID" 2>/dev/null
    fi
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${BG_PIDS[@]}"; do
        # switchyard drains for up to shutdown_timeout; the benchmark configs set it short.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "$PGBOUNCER_PIDFILE" ] && [ -s "$PGBOUNCER_PIDFILE" ]; then
        pid="$(cat "$PGBOUNCER_PIDFILE")"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    local d
    for d in "${PG_DATADIRS[@]}"; do
        if [ -f "$d/postmaster.pid" ]; then
            as_pg "$PG_BINDIR/pg_ctl" -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
                {
                    pid="$(head -1 "$d/postmaster.pid" 2>/dev/null)"
                    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
                }
        fi
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then
            log "BENCH_KEEP=1: kept $WORK (data dirs, configs, logs)"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

install_traps() {
    trap cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
}

make_workdir() {
    LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")"
    chmod 755 "$WORK"
    if [ "$IS_ROOT" -eq 1 ]; then chown postgres:postgres "$WORK"; fi
    log "work dir: $WORK"
}

# ---------------------------------------------------------------------------------------------
# Tools

# PostgreSQL server binaries: $PG_BINDIR, else `pg_config --bindir`, else the directory of
# `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin.
find_pg_bindir() {
    local cand=()
    [ -n "${PG_BINDIR:-}" ] && cand+=("$PG_BINDIR")
    if command -v pg_config >/dev/null 2>&1; then cand+=("$(pg_config --bindir 2>/dev/null || true)"); fi
    if command -v initdb >/dev/null 2>&1; then cand+=("$(dirname "$(readlink -f "$(command -v initdb)")")"); fi
    local d
    while IFS= read -r d; do cand+=("$d"); done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV)
    for d in "${cand[@]}"; do
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ]; then
            PG_BINDIR="$d"
            return 0
        fi
    done
    die "PostgreSQL server binaries not found (set PG_BINDIR, or install postgresql)"
}

find_pgbench() {
    if [ -x "$PG_BINDIR/pgbench" ]; then PGBENCH="$PG_BINDIR/pgbench"; return; fi
    PGBENCH="$(command -v pgbench)" || die "pgbench not found"
}

find_psql() {
    if [ -x "$PG_BINDIR/psql" ]; then PSQL="$PG_BINDIR/psql"; return; fi
    PSQL="$(command -v psql)" || die "psql not found"
}

# PgBouncer: installed with apt when missing. The Debian package starts a service on 6432;
# stop and disable it so that it neither holds that port nor competes for CPU.
find_pgbouncer() {
    PGBOUNCER="$(command -v pgbouncer 2>/dev/null || true)"
    [ -z "$PGBOUNCER" ] && [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer
    if [ -z "$PGBOUNCER" ]; then
        [ "$IS_ROOT" -eq 1 ] || die "pgbouncer is not installed and we are not root: apt-get install pgbouncer"
        log "installing pgbouncer with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq pgbouncer >&2
        PGBOUNCER="$(command -v pgbouncer 2>/dev/null || echo /usr/sbin/pgbouncer)"
        [ -x "$PGBOUNCER" ] || die "pgbouncer install failed"
        stop_packaged_pgbouncer
    fi
}

stop_packaged_pgbouncer() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop pgbouncer >/dev/null 2>&1 || true
        systemctl disable pgbouncer >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then service pgbouncer stop >/dev/null 2>&1 || true; fi
    if command -v update-rc.d >/dev/null 2>&1; then update-rc.d pgbouncer disable >/dev/null 2>&1 || true; fi
    # Whatever is left: the packaged daemon writes /run/postgresql/pgbouncer.pid.
    local pf pid
    for pf in /run/postgresql/pgbouncer.pid /var/run/postgresql/pgbouncer.pid; do
        if [ -s "$pf" ]; then
            pid="$(cat "$pf")"
            if [ -n "$pid" ] && grep -q pgbouncer "/proc/$pid/comm" 2>/dev/null; then
                log "stopping packaged pgbouncer (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        fi
    done
    sleep 1
    if port_open 6432 && command -v ss >/dev/null 2>&1 && ss -Hltnp 'sport = :6432' | grep -q pgbouncer; then
        log "warning: a pgbouncer still listens on 6432 (not ours; the benchmark uses other ports)"
    fi
}

# The switchyard binary: $SWITCHYARD_BIN, else `cargo build --release` and target/release.
# Copied into the work dir so a concurrent rebuild cannot swap it out during the run.
prepare_switchyard() {
    local src
    if [ -n "${SWITCHYARD_BIN:-}" ]; then
        src="$SWITCHYARD_BIN"
    else
        log "cargo build --release"
        (cd "$REPO_DIR" && cargo build --release --bin switchyard </dev/null >&2) ||
            die "cargo build --release failed (set SWITCHYARD_BIN to benchmark an existing binary)"
        src="$REPO_DIR/target/release/switchyard"
    fi
    [ -x "$src" ] || die "switchyard binary not found: $src"
    SY_BIN="$WORK/switchyard"
    cp "$src" "$SY_BIN"
    SY_VERSION="$("$SY_BIN" --version 2>/dev/null || echo switchyard)"
    SY_GIT="$(cd "$REPO_DIR" && git describe --always --dirty 2>/dev/null || echo unknown)"
}

# ---------------------------------------------------------------------------------------------
# Ports

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR: sets VAR to a port nobody listens on and that we have not handed out yet.
free_port() {
    local p
    for _ in $(seq 500); do
        p=$((20000 + RANDOM % 30000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then continue; fi
        port_open "$p" && continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

wait_port() { # port timeout_s what
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    die "$3 did not open 127.0.0.1:$1 within $2 s"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# pg_init DIR PORT: initdb + settings. Local (socket) connections are trusted for setup;
# TCP needs a SCRAM password.
pg_init() {
    local dir="$1" port="$2"
    as_pg mkdir -p "$dir" "$dir.sock"
    as_pg "$PG_BINDIR/initdb" -D "$dir" -U postgres -A trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C >"$dir.initdb.log" 2>&1 || { cat "$dir.initdb.log" >&2; die "initdb failed"; }
    pg_settings "$dir" "$port"
}

pg_settings() {
    local dir="$1" port="$2"
    as_pg tee -a "$dir/postgresql.conf" >/dev/null <<EOF

# --- switchyard benchmark ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir.sock'
fsync = off
max_connections = 300
shared_buffers = 128MB
logging_collector = off
EOF
}

pg_start() { # DIR
    local dir="$1"
    PG_DATADIRS+=("$dir")
    as_pg "$PG_BINDIR/pg_ctl" -D "$dir" -l "$dir.log" -w -t 120 start >/dev/null ||
        { tail -20 "$dir.log" >&2; die "PostgreSQL in $dir did not start"; }
}

# pg_sql DIR PORT DB SQL: runs SQL as the postgres superuser over the node's Unix socket.
pg_sql() {
    as_pg "$PSQL" -X -q -v ON_ERROR_STOP=1 -At -h "$1.sock" -p "$2" -U postgres -d "$3" -c "$4"
}

pg_server_version() { as_pg "$PG_BINDIR/postgres" --version; }

# Creates the `bench` login role (SCRAM password) and database, and pgbench's tables.
pg_setup_bench_db() {
    local dir="$1" port="$2"
    pg_sql "$dir" "$port" postgres "CREATE ROLE bench LOGIN PASSWORD '$BENCH_PASSWORD'"
    pg_sql "$dir" "$port" postgres "CREATE DATABASE bench OWNER bench"
    log "pgbench -i -s $BENCH_SCALE"
    PGPASSWORD="$BENCH_PASSWORD" "$PGBENCH" -i -q -s "$BENCH_SCALE" -h 127.0.0.1 -p "$port" -U bench bench \
        >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
    pg_sql "$dir" "$port" bench "VACUUM ANALYZE" >/dev/null
    pg_sql "$dir" "$port" postgres "CHECKPOINT" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# switchyard and PgBouncer

# start_switchyard NAME CONFIG PORT HTTP_PORT: sets SY_PID_<NAME>.
start_switchyard() {
    local name="$1" cfg="$2" port="$3" http="$4"
    "$SY_BIN" check --config "$cfg" >"$WORK/$name.check.log" 2>&1 ||
        { cat "$WORK/$name.check.log" >&2; die "switchyard check failed for $cfg"; }
    # In its own session, as a service manager (or PgBouncer's -d) would run it: with the
    # kernel's autogroup scheduling on, a proxy left in this script's session shares one CPU
    # share with pgbench and loses to a daemonized PgBouncer for that reason alone.
    setsid "$SY_BIN" run --config "$cfg" >"$WORK/$name.log" 2>&1 </dev/null &
    local pid=$!
    BG_PIDS+=("$pid")
    printf -v "SY_PID_$name" '%s' "$pid"
    wait_port "$port" 30 "switchyard ($name)"
    wait_port "$http" 30 "switchyard ($name) HTTP"
    local i
    for ((i = 0; i < 300; i++)); do
        if curl -fsS "http://127.0.0.1:$http/readyz" 2>/dev/null | grep -q '^ready$'; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/$name.log" >&2; die "switchyard ($name) exited"; }
        sleep 0.1
    done
    tail -20 "$WORK/$name.log" >&2
    die "switchyard ($name) not ready (no primary) within 30 s"
}

metrics() { curl -fsS "http://127.0.0.1:$1/metrics"; }

# Peak and current RSS of a process, in MiB.
rss_report() {
    local pid="$1"
    awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 }
         END { printf "peak RSS (VmHWM) %.1f MiB, current RSS (VmRSS) %.1f MiB\n", h / 1024, r / 1024 }' \
        "/proc/$pid/status"
}

# start_pgbouncer PORT PG_PORT [PG_HOST]: transaction pooling, 20 server connections, SCRAM auth
# (lines in PGBOUNCER_EXTRA are added to the [pgbouncer] section). PG_HOST (default 127.0.0.1)
# may be a socket directory; with BOUNCER_SOCKET_DIR set, it listens on a socket there too.
start_pgbouncer() {
    local port="$1" pgport="$2" pghost="${3:-127.0.0.1}" d="$WORK/pgbouncer"
    as_pg mkdir -p "$d"
    as_pg tee "$d/userlist.txt" >/dev/null <<EOF
"bench" "$BENCH_PASSWORD"
EOF
    as_pg chmod 600 "$d/userlist.txt"
    as_pg tee "$d/pgbouncer.ini" >/dev/null <<EOF
[databases]
bench = host=$pghost port=$pgport dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = ${BOUNCER_SOCKET_DIR:-}
auth_type = scram-sha-256
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
${PGBOUNCER_EXTRA:-}
EOF
    PGBOUNCER_PIDFILE="$d/pgbouncer.pid"
    as_pg "$PGBOUNCER" -d "$d/pgbouncer.ini" >"$d/start.log" 2>&1 ||
        { cat "$d/start.log" "$d/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
    wait_port "$port" 30 pgbouncer
    PGBOUNCER_VERSION="$("$PGBOUNCER" --version 2>/dev/null | head -1)"
}

# ---------------------------------------------------------------------------------------------
# pgbench runs and results

declare -A HOST_OF=()   # target -> the host pgbench connects to (default 127.0.0.1)
declare -A RES_TPS=()   # key -> space-separated tps of successful rounds
declare -A RES_FAIL=()  # key -> failed rounds
declare -A RES_ERR=()   # key -> distinct error lines (newline separated)
declare -A RES_UNSUP=() # key -> 1 when the failure is "prepared statement ... does not exist"
declare -A RES_CPU=()   # key -> space-separated proxy CPU microseconds per transaction

# run_interleaved: every workload x client count x target, ROUNDS times, the target order
# rotated each round so no target always runs first or last; records each run's tps, and the
# proxy's CPU time where PID_OF names a process, under "workload|clients|target". Reads the
# caller's WORKLOADS, CLIENTS, TARGETS, PORT_OF and PID_OF.
run_interleaved() {
    local total n round wl c jobs t target key out pid ticks
    total=$((ROUNDS * ${#WORKLOADS[@]} * ${#CLIENTS[@]} * ${#TARGETS[@]}))
    log "$total runs of $BENCH_SECONDS s (~$((total * (BENCH_SECONDS + 1) / 60)) min)"
    mkdir -p "$WORK/out"
    n=0
    for ((round = 1; round <= ROUNDS; round++)); do
        for wl in "${WORKLOADS[@]}"; do
            for c in "${CLIENTS[@]}"; do
                jobs=1
                [ "$c" -ge 2 ] && jobs=2
                for ((t = 0; t < ${#TARGETS[@]}; t++)); do
                    target="${TARGETS[$(((t + round - 1) % ${#TARGETS[@]}))]}"
                    n=$((n + 1))
                    key="$wl|$c|$target"
                    out="$WORK/out/r$round-${wl// /}-c$c-$target.txt"
                    pid="${PID_OF[$target]}"
                    ticks=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
                    # shellcheck disable=SC2086  # $wl is several pgbench options
                    PGBENCH_HOST="${HOST_OF[$target]:-127.0.0.1}" \
                        run_pgbench "${PORT_OF[$target]}" "$out" $wl -c "$c" -j "$jobs"
                    record_result "$key" "$out"
                    [ -n "$pid" ] && record_cpu "$key" "$out" "$ticks" "$(cpu_ticks "$pid")"
                    log "[$n/$total] round $round: $wl -c $c -> $target: $RESULT_MSG"
                done
            done
        done
    done
}

# run_pgbench PORT OUTFILE PGBENCH_ARGS...: one timed run as user bench on database bench (on
# host PGBENCH_HOST, 127.0.0.1 by default: a socket directory for BENCH_TRANSPORT=unix);
# pgbench's output goes to OUTFILE, its exit status to OUTFILE.rc.
run_pgbench() {
    local port="$1" out="$2"
    shift 2
    local rc=0
    PGPASSWORD="$BENCH_PASSWORD" "$PGBENCH" -h "${PGBENCH_HOST:-127.0.0.1}" -p "$port" -U bench -n -T "$BENCH_SECONDS" \
        "$@" bench >"$out" 2>&1 &
    PGBENCH_PID=$!
    wait "$PGBENCH_PID" || rc=$?
    PGBENCH_PID=""
    echo "$rc" >"$out.rc"
}

# record_result KEY OUTFILE: records the run's tps under KEY, or a failure (non-zero exit,
# aborted clients, or failed transactions) with its distinct error messages. Sets RESULT_MSG.
record_result() {
    local key="$1" out="$2"
    local rc tps failed
    rc="$(cat "$out.rc")"
    tps="$(awk '/^tps = / { print $3; exit }' "$out")"
    failed="$(awk -F'[: ]+' '/^number of failed transactions/ { print $5; exit }' "$out")"
    if [ "$rc" -eq 0 ] && [ -n "$tps" ] && [ "${failed:-0}" = 0 ] && ! grep -q 'aborted' "$out"; then
        RES_TPS[$key]="${RES_TPS[$key]:-} $tps"
        RESULT_MSG="$tps tps"
        return 0
    fi
    RES_FAIL[$key]=$((${RES_FAIL[$key]:-0} + 1))
    local errs
    errs="$(grep -iE 'error|fatal|abort|failed' "$out" | grep -v '^number of failed' |
        sed -E 's/client [0-9]+/client N/g; s/^.*(client N script [0-9]+ aborted)/\1/; t
                s/^.*((ERROR|FATAL|PANIC):)/\1/' | sort -u | head -5 || true)"
    [ -z "$errs" ] && errs="pgbench exit status $rc, no tps line"
    RES_ERR[$key]="$(printf '%s\n%s' "${RES_ERR[$key]:-}" "$errs" | grep -v '^$' | sort -u | head -8)"
    if grep -qE 'prepared statement "[^"]*" does not exist' "$out"; then RES_UNSUP[$key]=1; fi
    RESULT_MSG="FAILED (exit $rc, failed transactions ${failed:-?}, tps ${tps:-none}): $(head -1 <<<"$errs")"
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# record_cpu KEY OUTFILE TICKS_BEFORE TICKS_AFTER: records the proxy's CPU time per
# transaction (microseconds) of a successful run under KEY. Steadier than tps on a shared
# machine: it does not depend on how much CPU the other jobs left the run.
record_cpu() {
    local key="$1" out="$2" before="$3" after="$4" tx
    [ "$(cat "$out.rc")" -eq 0 ] || return 0
    tx="$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")"
    [ -n "$tx" ] && [ "$tx" -gt 0 ] || return 0
    RES_CPU[$key]="${RES_CPU[$key]:-} $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$tx" \
        'BEGIN { printf "%.2f", t / hz / n * 1e6 }')"
}

# cpu_cell KEY: the median CPU microseconds per transaction, or n/a.
cpu_cell() {
    local v="${RES_CPU[$1]:-}"
    if [ -z "${v// /}" ]; then echo "n/a"; return; fi
    tr ' ' '\n' <<<"$v" | grep -v '^$' | median
}

# median of the numbers on stdin
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# cell KEY: the median tps, or why there is none. Sets CELL_NUM (empty when n/a).
cell() {
    local key="$1"
    CELL_NUM=""
    local fails="${RES_FAIL[$key]:-0}"
    if [ "$fails" -gt 0 ]; then
        if [ -n "${RES_UNSUP[$key]:-}" ]; then
            CELL="n/a (unsupported)"
        else
            CELL="n/a (failed $fails/$ROUNDS)"
        fi
        return
    fi
    if [ -z "${RES_TPS[$key]:-}" ]; then
        CELL="n/a"
        return
    fi
    CELL_NUM="$(tr ' ' '\n' <<<"${RES_TPS[$key]}" | grep -v '^$' | median)"
    CELL="$(printf '%.0f' "$CELL_NUM")"
}

# spread KEY: "min-max" of the successful rounds' tps, "-" when none.
spread() {
    local v="${RES_TPS[$1]:-}"
    if [ -z "${v// /}" ]; then echo "-"; return; fi
    tr ' ' '\n' <<<"$v" | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f\n", lo, hi }'
}

# paired KEY_A KEY_B: the median over rounds of A's tps / B's tps in the same round (the two
# ran back to back, so machine load that changes between rounds mostly cancels out), or n/a.
paired() {
    local a="${RES_TPS[$1]:-}" b="${RES_TPS[$2]:-}"
    if [ -z "$a" ] || [ -z "$b" ] || [ "${RES_FAIL[$1]:-0}" -gt 0 ] || [ "${RES_FAIL[$2]:-0}" -gt 0 ]; then
        echo "n/a"
        return
    fi
    paste -d' ' <(tr ' ' '\n' <<<"$a" | grep -v '^$') <(tr ' ' '\n' <<<"$b" | grep -v '^$') |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END {
            if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { # a b -> a/b with 2 decimals, or n/a
    if [ -z "$1" ] || [ -z "$2" ]; then echo "n/a"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'; fi
}

print_machine() {
    echo "## Machine"
    echo
    echo "- CPUs (nproc): $(nproc)"
    echo "- CPU model: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- PostgreSQL: $(pg_server_version) ($PG_BINDIR); pgbench: $("$PGBENCH" --version)"
    [ -n "${PGBOUNCER_VERSION:-}" ] && echo "- PgBouncer: $PGBOUNCER_VERSION"
    echo "- switchyard: $SY_VERSION (git $SY_GIT)"
    echo "- Load average (1/5/15 min) at start: ${LOADAVG_START:-?}; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
}

print_failures() {
    local key any=0
    for key in "${!RES_FAIL[@]}"; do
        if [ "$any" -eq 0 ]; then
            echo
            echo "## Failed runs"
            echo
            any=1
        fi
        IFS='|' read -r k_wl k_c k_t <<<"$key"
        echo "- \`$k_wl\`, $k_c clients, $k_t: ${RES_FAIL[$key]}/$ROUNDS rounds failed"
        sed 's/^/    /' <<<"${RES_ERR[$key]}"
    done
}

# Warnings and errors in a switchyard log (distinct messages, most frequent first).
print_proxy_log_summary() {
    local name="$1" f="$WORK/$1.log" clean="$WORK/$1.log.plain"
    sed -E 's/\x1b\[[0-9;]*m//g' "$f" >"$clean"
    local n
    n="$(grep -cE '^[^ ]+ +(WARN|ERROR) ' "$clean" || true)"
    echo "- switchyard ($name) log: ${n:-0} WARN/ERROR lines"
    if [ "${n:-0}" -gt 0 ]; then
        grep -E '^[^ ]+ +(WARN|ERROR) ' "$clean" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn |
            head -8 | sed 's/^/    /'
    fi
}
