#!/usr/bin/env bash
# Foundation benchmark: pgbench against PostgreSQL directly, through switchyard, and through
# PgBouncer, all on one fresh throwaway primary. switchyard runs twice: with its default pool
# affinity, and with `[pool] affinity = false` (PgBouncer's order: the most recently used
# connection), as target switchyard-mru. Prints a Markdown report on stdout (progress
# goes to stderr).
#
# Usage: bench/run.sh
# Knobs (environment):
#   BENCH_SECONDS=10   duration of each pgbench run
#   BENCH_ROUNDS=3     interleaved rounds; the table shows the median per cell
#   BENCH_CLIENTS="1 16 64"   client counts
#   BENCH_SCALE=10     pgbench -i scale factor
#   SWITCHYARD_BIN=... benchmark this binary instead of running `cargo build --release`
#   PG_BINDIR=...      PostgreSQL server binaries (default: found via pg_config / PATH)
#   BENCH_KEEP=1       keep the temp dir (data dirs, configs, every pgbench output, logs)
#   BENCH_TRANSPORT=unix   every connection over Unix-domain sockets (pgbench to each target,
#                      both proxies to PostgreSQL) instead of TCP on 127.0.0.1
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra CLIENTS <<<"${BENCH_CLIENTS:-1 16 64}"
TRANSPORT="${BENCH_TRANSPORT:-tcp}"
[[ "$TRANSPORT" =~ ^(tcp|unix)$ ]] || die "BENCH_TRANSPORT must be tcp or unix"
WORKLOADS=("-S -M simple" "-S -M extended" "-S -M prepared" "-N -M simple")
TARGETS=(direct switchyard switchyard-mru pgbouncer)

install_traps
find_pg_bindir
find_pgbench
find_psql
find_pgbouncer
make_workdir
prepare_switchyard

free_port PG_PORT
free_port SY_PORT
free_port SY_HTTP
free_port MRU_PORT
free_port MRU_HTTP
free_port BOUNCER_PORT

log "PostgreSQL primary on 127.0.0.1:$PG_PORT ($PG_BINDIR)"
pg_init "$WORK/primary" "$PG_PORT"
pg_start "$WORK/primary"
pg_setup_bench_db "$WORK/primary" "$PG_PORT"

PG_HOST=127.0.0.1 SY_BACKEND="127.0.0.1:$PG_PORT" SY_SOCKET=""
if [ "$TRANSPORT" = unix ]; then
    # PostgreSQL's socket directory is the data dir's name plus .sock (pg_settings).
    PG_HOST="$WORK/primary.sock" SY_BACKEND="$WORK/primary.sock:$PG_PORT"
    SY_SOCKET="$WORK/sy.sock" MRU_SOCKET="$WORK/mru.sock" BOUNCER_SOCKET_DIR="$WORK/pgbouncer"
    mkdir -p "$SY_SOCKET" "$MRU_SOCKET"
    HOST_OF=([direct]="$PG_HOST" [switchyard]="$SY_SOCKET" [switchyard-mru]="$MRU_SOCKET"
        [pgbouncer]="$BOUNCER_SOCKET_DIR")
fi

log "PgBouncer on 127.0.0.1:$BOUNCER_PORT"
start_pgbouncer "$BOUNCER_PORT" "$PG_PORT" "$PG_HOST"

# sy_config PORT HTTP SOCKET_DIR AFFINITY
sy_config() {
    cat <<EOF
listen = "127.0.0.1:$1"
http_listen = "127.0.0.1:$2"
unix_socket_dir = "$3"
pool_mode = "transaction"
shutdown_timeout = "2s"

[pool]
size = 20
affinity = $4

[routing]
read_write_split = false

[[backends]]
name = "primary"
address = "$SY_BACKEND"

[[users]]
name = "bench"
password = "$BENCH_PASSWORD"
auth = "scram-sha-256"
EOF
}

log "switchyard on 127.0.0.1:$SY_PORT (http $SY_HTTP); with affinity = false on 127.0.0.1:$MRU_PORT"
sy_config "$SY_PORT" "$SY_HTTP" "$SY_SOCKET" true >"$WORK/switchyard.toml"
sy_config "$MRU_PORT" "$MRU_HTTP" "${MRU_SOCKET:-}" true >"$WORK/switchyard-mru.toml"
start_switchyard sy "$WORK/switchyard.toml" "$SY_PORT" "$SY_HTTP"
cp "$OLD_BIN" "$WORK/switchyard-old"; SY_BIN_NEW="$SY_BIN"; SY_BIN="$WORK/switchyard-old"
start_switchyard mru "$WORK/switchyard-mru.toml" "$MRU_PORT" "$MRU_HTTP"
SY_BIN="$SY_BIN_NEW"

declare -A PORT_OF=([direct]="$PG_PORT" [switchyard]="$SY_PORT" [switchyard-mru]="$MRU_PORT"
    [pgbouncer]="$BOUNCER_PORT")
declare -A PID_OF=([direct]="" [switchyard]="$SY_PID_sy" [switchyard-mru]="$SY_PID_mru"
    [pgbouncer]="$(cat "$PGBOUNCER_PIDFILE")")

run_interleaved

SY_RSS="$(rss_report "$SY_PID_sy")"
MRU_RSS="$(rss_report "$SY_PID_mru")"

echo
echo "# switchyard foundation benchmark"
echo
print_machine
echo "## Setup"
echo
echo "- One PostgreSQL primary (fsync=off, max_connections=300, shared_buffers=128MB), pgbench scale $BENCH_SCALE."
if [ "$TRANSPORT" = unix ]; then
    echo "- Every connection over Unix-domain sockets: pgbench to each target, both proxies to PostgreSQL."
else
    echo "- Every connection over TCP on 127.0.0.1."
fi
echo "- switchyard: transaction pooling, pool size 20, read_write_split = false, SCRAM client auth."
echo "- switchyard-mru: the same with \`[pool] affinity = false\` (the most recently used server"
echo "  connection, PgBouncer's order, instead of each client's own)."
echo "- PgBouncer: pool_mode = transaction, default_pool_size = 20, max_client_conn = 500, SCRAM auth."
echo "- pgbench -n -T $BENCH_SECONDS, -j 2 for 2+ clients; $ROUNDS interleaved round(s); median tps"
echo "  (tps excludes connection time). Every process shares the same $(nproc) CPUs, so proxies"
echo "  compete with PostgreSQL and pgbench for CPU."
echo
echo "## Results (median tps)"
echo
echo "| workload | clients | direct tps | switchyard tps | switchyard-mru tps | pgbouncer tps | switchyard/direct | switchyard/pgbouncer | same-round | mru/direct | mru/pgbouncer | same-round |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for wl in "${WORKLOADS[@]}"; do
    for c in "${CLIENTS[@]}"; do
        cell "$wl|$c|direct"
        d="$CELL" dn="$CELL_NUM"
        cell "$wl|$c|switchyard"
        s="$CELL" sn="$CELL_NUM"
        cell "$wl|$c|switchyard-mru"
        m="$CELL" mn="$CELL_NUM"
        cell "$wl|$c|pgbouncer"
        b="$CELL" bn="$CELL_NUM"
        echo "| \`$wl\` | $c | $d | $s | $m | $b | $(ratio "$sn" "$dn") | $(ratio "$sn" "$bn") | $(paired "$wl|$c|switchyard" "$wl|$c|pgbouncer") | $(ratio "$mn" "$dn") | $(ratio "$mn" "$bn") | $(paired "$wl|$c|switchyard-mru" "$wl|$c|pgbouncer") |"
    done
done
pgb_prep_ok=""
for c in "${CLIENTS[@]}"; do
    [ -n "${RES_TPS[-S -M prepared|$c|pgbouncer]:-}" ] && [ "${RES_FAIL[-S -M prepared|$c|pgbouncer]:-0}" -eq 0 ] &&
        pgb_prep_ok+=" $c"
done
if [ -n "$pgb_prep_ok" ]; then
    echo
    echo "Note: $PGBOUNCER_VERSION has no prepared-statement support in transaction mode;"
    echo "\`-M prepared\` completed there only at${pgb_prep_ok} client(s), where PgBouncer happened to hand the"
    echo "client the same server connection every time (it reuses the most recently released one)."
fi
echo
echo "### Proxy CPU time per transaction"
echo
echo "User plus system CPU of the proxy process over each run, divided by the transactions it"
echo "carried; median over rounds, in microseconds. It does not depend on how much CPU other jobs"
echo "left the run, so it compares the two proxies' cost more steadily than tps does."
echo
echo "| workload | clients | switchyard µs | switchyard-mru µs | pgbouncer µs | switchyard/pgbouncer |"
echo "|---|---:|---:|---:|---:|---:|"
for wl in "${WORKLOADS[@]}"; do
    for c in "${CLIENTS[@]}"; do
        sc="$(cpu_cell "$wl|$c|switchyard")" mc="$(cpu_cell "$wl|$c|switchyard-mru")" bc="$(cpu_cell "$wl|$c|pgbouncer")"
        r="n/a"
        [ "$sc" != n/a ] && [ "$bc" != n/a ] && r="$(ratio "$sc" "$bc")"
        echo "| \`$wl\` | $c | $sc | $mc | $bc | $r |"
    done
done
if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "### Spread over rounds (min-max tps)"
    echo
    echo "| workload | clients | direct | switchyard | switchyard-mru | pgbouncer |"
    echo "|---|---:|---:|---:|---:|---:|"
    for wl in "${WORKLOADS[@]}"; do
        for c in "${CLIENTS[@]}"; do
            echo "| \`$wl\` | $c | $(spread "$wl|$c|direct") | $(spread "$wl|$c|switchyard") | $(spread "$wl|$c|switchyard-mru") | $(spread "$wl|$c|pgbouncer") |"
        done
    done
fi
print_failures
echo
echo "## switchyard process"
echo
echo "- $SY_RSS (after all runs)"
echo "- switchyard-mru: $MRU_RSS"
print_proxy_log_summary sy
print_proxy_log_summary mru
