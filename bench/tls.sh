#!/usr/bin/env bash
# TLS benchmark: pgbench with sslmode=require against PostgreSQL directly (ssl = on), through
# switchyard (clients on TLS; server connections plain, and TLS as well), and through
# PgBouncer (clients on TLS, server connections plain). Prints a Markdown report on stdout.
#
# Usage: bench/tls.sh   (knobs as bench/run.sh: BENCH_SECONDS, BENCH_ROUNDS, BENCH_CLIENTS,
#                        BENCH_SCALE, SWITCHYARD_BIN, PG_BINDIR, BENCH_KEEP)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra CLIENTS <<<"${BENCH_CLIENTS:-1 16}"
WORKLOADS=("-S -M simple" "-S -M extended")
TARGETS=(direct switchyard switchyard_tls2 pgbouncer)

install_traps
find_pg_bindir
find_pgbench
find_psql
find_pgbouncer
make_workdir
prepare_switchyard
command -v openssl >/dev/null || die "openssl is needed to make the test certificate"

free_port PG_PORT
free_port SY_PORT
free_port SY_HTTP
free_port SY2_PORT
free_port SY2_HTTP
free_port BOUNCER_PORT

# One self-signed certificate for all three servers. PostgreSQL and PgBouncer read the
# postgres user's copy of the key (PostgreSQL insists on owning it), switchyard its own.
as_pg mkdir -p "$WORK/tls"
as_pg openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/tls.log" 2>&1 ||
    { cat "$WORK/tls.log" >&2; die "openssl could not make a certificate"; }
as_pg chmod 600 "$WORK/tls/key.pem"
as_pg cat "$WORK/tls/key.pem" >"$WORK/sy-key.pem"
chmod 600 "$WORK/sy-key.pem"

log "PostgreSQL primary on 127.0.0.1:$PG_PORT with ssl = on"
pg_init "$WORK/primary" "$PG_PORT"
printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" "$WORK/tls/cert.pem" "$WORK/tls/key.pem" |
    as_pg tee -a "$WORK/primary/postgresql.conf" >/dev/null
pg_start "$WORK/primary"
pg_setup_bench_db "$WORK/primary" "$PG_PORT"

log "PgBouncer on 127.0.0.1:$BOUNCER_PORT (client TLS)"
PGBOUNCER_EXTRA="client_tls_sslmode = allow
client_tls_cert_file = $WORK/tls/cert.pem
client_tls_key_file = $WORK/tls/key.pem
server_tls_sslmode = disable"
start_pgbouncer "$BOUNCER_PORT" "$PG_PORT"

sy_config() { # PORT HTTP SERVER_TLS_MODE
    printf '%s\n' \
        "listen = \"127.0.0.1:$1\"" \
        "http_listen = \"127.0.0.1:$2\"" \
        'pool_mode = "transaction"' \
        'shutdown_timeout = "2s"' \
        '[pool]' 'size = 20' \
        '[routing]' 'read_write_split = false' \
        '[tls]' "cert = \"$WORK/tls/cert.pem\"" "key = \"$WORK/sy-key.pem\"" \
        '[server_tls]' "mode = \"$3\"" \
        '[[backends]]' 'name = "primary"' "address = \"127.0.0.1:$PG_PORT\"" \
        '[[users]]' 'name = "bench"' "password = \"$BENCH_PASSWORD\"" 'auth = "scram-sha-256"'
}
sy_config "$SY_PORT" "$SY_HTTP" disable >"$WORK/sy.toml"
sy_config "$SY2_PORT" "$SY2_HTTP" require >"$WORK/sy2.toml"
log "switchyard on 127.0.0.1:$SY_PORT (client TLS) and :$SY2_PORT (client and server TLS)"
start_switchyard sy "$WORK/sy.toml" "$SY_PORT" "$SY_HTTP"
start_switchyard sy2 "$WORK/sy2.toml" "$SY2_PORT" "$SY2_HTTP"

declare -A PORT_OF=([direct]="$PG_PORT" [switchyard]="$SY_PORT" [switchyard_tls2]="$SY2_PORT" [pgbouncer]="$BOUNCER_PORT")
declare -A PID_OF=([direct]="" [switchyard]="$SY_PID_sy" [switchyard_tls2]="$SY_PID_sy2" [pgbouncer]="$(cat "$PGBOUNCER_PIDFILE")")

export PGSSLMODE=require
run_interleaved

echo
echo "# switchyard TLS benchmark"
echo
print_machine
echo "- pgbench -n -T $BENCH_SECONDS with sslmode=require, $ROUNDS interleaved round(s), medians."
echo "- PostgreSQL has ssl = on. \"switchyard\" and PgBouncer (transaction pooling, 20 server"
echo "  connections) reach it in plain text; \"sy TLS both\" with [server_tls] mode = \"require\"."
echo
echo "| workload | clients | direct tps | switchyard tps | sy TLS both tps | pgbouncer tps | switchyard/pgbouncer | switchyard µs/txn | sy TLS both µs/txn | pgbouncer µs/txn |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for wl in "${WORKLOADS[@]}"; do
    for c in "${CLIENTS[@]}"; do
        cell "$wl|$c|direct"
        d="$CELL"
        cell "$wl|$c|switchyard"
        s="$CELL" sn="$CELL_NUM"
        cell "$wl|$c|switchyard_tls2"
        s2="$CELL"
        cell "$wl|$c|pgbouncer"
        b="$CELL" bn="$CELL_NUM"
        echo "| \`$wl\` | $c | $d | $s | $s2 | $b | $(ratio "$sn" "$bn") | $(cpu_cell "$wl|$c|switchyard") | $(cpu_cell "$wl|$c|switchyard_tls2") | $(cpu_cell "$wl|$c|pgbouncer") |"
    done
done
print_failures
