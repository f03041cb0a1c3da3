#!/usr/bin/env bash
# Read/write splitting benchmark: a fresh primary plus two streaming replicas, and two
# switchyard instances in front of all three, one with `read_write_split = true` and one with
# `false`. pgbench -S (read-only) runs against each instance and, as a reference, directly
# against the primary. Prints a Markdown report on stdout (progress goes to stderr): median tps
# and the share of requests each backend served (from switchyard_queries_total in /metrics).
#
# Usage: bench/split.sh
# Knobs (environment):
#   BENCH_SECONDS=10   duration of each pgbench run
#   BENCH_ROUNDS=3     interleaved rounds; the table shows the median per cell
#   BENCH_CLIENTS="16 64"   client counts
#   BENCH_SCALE=10     pgbench -i scale factor
#   SWITCHYARD_BIN=... benchmark this binary instead of running `cargo build --release`
#   PG_BINDIR=...      PostgreSQL server binaries (default: found via pg_config / PATH)
#   BENCH_KEEP=1       keep the temp dir (data dirs, configs, every pgbench output, logs)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra CLIENTS <<<"${BENCH_CLIENTS:-16 64}"
WORKLOADS=("-S -M simple" "-S -M prepared")
TARGETS=(direct split_off split_on)
NODES=(primary replica1 replica2)
REPL_PASSWORD="repl"

install_traps
find_pg_bindir
find_pgbench
find_psql
make_workdir
prepare_switchyard

declare -A NODE_PORT=()
for node in "${NODES[@]}"; do free_port "NODE_PORT[$node]"; done
free_port OFF_PORT
free_port OFF_HTTP
free_port ON_PORT
free_port ON_HTTP

P="${NODE_PORT[primary]}"
log "PostgreSQL primary on 127.0.0.1:$P ($PG_BINDIR)"
pg_init "$WORK/primary" "$P"
pg_start "$WORK/primary"
pg_sql "$WORK/primary" "$P" postgres "CREATE ROLE repl REPLICATION LOGIN PASSWORD '$REPL_PASSWORD'"
pg_setup_bench_db "$WORK/primary" "$P"

for node in replica1 replica2; do
    port="${NODE_PORT[$node]}"
    log "$node on 127.0.0.1:$port (pg_basebackup -R -X stream)"
    as_pg mkdir -p "$WORK/$node.sock"
    as_pg env PGPASSWORD="$REPL_PASSWORD" "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 -p "$P" -U repl \
        -D "$WORK/$node" -R -X stream -c fast >"$WORK/$node.basebackup.log" 2>&1 ||
        { cat "$WORK/$node.basebackup.log" >&2; die "pg_basebackup for $node failed"; }
    pg_settings "$WORK/$node" "$port"
    pg_start "$WORK/$node"
done

log "waiting for both replicas to stream and catch up"
for ((i = 0; ; i++)); do
    streaming="$(pg_sql "$WORK/primary" "$P" postgres \
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND replay_lsn >= pg_current_wal_lsn()")"
    [ "$streaming" -ge 2 ] && break
    [ "$i" -ge 600 ] && die "replicas not streaming after 60 s (streaming and caught up: $streaming)"
    sleep 0.1
done
for node in replica1 replica2; do
    [ "$(pg_sql "$WORK/$node" "${NODE_PORT[$node]}" postgres "SELECT pg_is_in_recovery()")" = t ] ||
        die "$node is not in recovery"
done

write_config() { # FILE PORT HTTP SPLIT
    cat >"$1" <<EOF
listen = "127.0.0.1:$2"
http_listen = "127.0.0.1:$3"
pool_mode = "transaction"
shutdown_timeout = "2s"

[pool]
size = 20

[routing]
read_write_split = $4

[[backends]]
name = "primary"
address = "127.0.0.1:${NODE_PORT[primary]}"

[[backends]]
name = "replica1"
address = "127.0.0.1:${NODE_PORT[replica1]}"

[[backends]]
name = "replica2"
address = "127.0.0.1:${NODE_PORT[replica2]}"

[[users]]
name = "bench"
password = "$BENCH_PASSWORD"
auth = "scram-sha-256"
EOF
}

# Waits until an instance's monitor sees every backend up, with the expected roles.
wait_roles() { # HTTP_PORT NAME
    local i m ok
    for ((i = 0; i < 300; i++)); do
        m="$(metrics "$1" 2>/dev/null || true)"
        ok=1
        grep -qx 'switchyard_backend_role{backend="primary"} 1' <<<"$m" || ok=0
        for node in "${NODES[@]}"; do
            grep -qx "switchyard_backend_up{backend=\"$node\"} 1" <<<"$m" || ok=0
        done
        for node in replica1 replica2; do
            grep -qx "switchyard_backend_role{backend=\"$node\"} 0" <<<"$m" || ok=0
        done
        [ "$ok" -eq 1 ] && return 0
        sleep 0.1
    done
    grep -E '^switchyard_backend_(up|role)' <<<"$m" >&2 || true
    die "switchyard ($2): backends not all up with their roles within 30 s"
}

write_config "$WORK/split_off.toml" "$OFF_PORT" "$OFF_HTTP" false
write_config "$WORK/split_on.toml" "$ON_PORT" "$ON_HTTP" true
log "switchyard split=off on 127.0.0.1:$OFF_PORT (http $OFF_HTTP), split=on on 127.0.0.1:$ON_PORT (http $ON_HTTP)"
start_switchyard split_off "$WORK/split_off.toml" "$OFF_PORT" "$OFF_HTTP"
start_switchyard split_on "$WORK/split_on.toml" "$ON_PORT" "$ON_HTTP"
wait_roles "$OFF_HTTP" split_off
wait_roles "$ON_HTTP" split_on

declare -A PORT_OF=([direct]="$P" [split_off]="$OFF_PORT" [split_on]="$ON_PORT")
declare -A HTTP_OF=([split_off]="$OFF_HTTP" [split_on]="$ON_HTTP")

# Per-backend counters of one instance, as "node queries transactions" triples:
# switchyard_queries_total (requests: simple queries and Syncs) and
# switchyard_transactions_total (server connections checked back in after a transaction).
counters_by_backend() {
    local m node q t out=""
    m="$(metrics "$1")"
    for node in "${NODES[@]}"; do
        q="$(awk -v k="switchyard_queries_total{backend=\"$node\"}" '$1 == k { print $2 }' <<<"$m")"
        t="$(awk -v k="switchyard_transactions_total{backend=\"$node\"}" '$1 == k { print $2 }' <<<"$m")"
        out+="$node ${q:-0} ${t:-0} "
    done
    echo "$out"
}

# Requests (xact_commit) on database bench per node, for a whole-run cross-check.
xacts_by_node() {
    local node out=""
    for node in "${NODES[@]}"; do
        out+="$node $(pg_sql "$WORK/$node" "${NODE_PORT[$node]}" postgres \
            "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'") "
    done
    echo "$out"
}

# "q|workload|clients|target|node" (queries_total) and "t|..." (transactions_total) deltas,
# summed over rounds.
declare -A SERVED=()
declare -A ON_TOTAL=() # "q|node" / "t|node": split_on deltas over the whole benchmark
XACT_START="$(xacts_by_node)"

total=$((ROUNDS * ${#WORKLOADS[@]} * ${#CLIENTS[@]} * ${#TARGETS[@]}))
log "$total runs of $BENCH_SECONDS s (~$((total * (BENCH_SECONDS + 1) / 60)) min)"
mkdir -p "$WORK/out"
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    for wl in "${WORKLOADS[@]}"; do
        for c in "${CLIENTS[@]}"; do
            for ((t = 0; t < ${#TARGETS[@]}; t++)); do
                target="${TARGETS[$(((t + round - 1) % ${#TARGETS[@]}))]}"
                n=$((n + 1))
                key="$wl|$c|$target"
                out="$WORK/out/r$round-${wl// /}-c$c-$target.txt"
                before=""
                [ "$target" != direct ] && before="$(counters_by_backend "${HTTP_OF[$target]}")"
                # shellcheck disable=SC2086  # $wl is several pgbench options
                run_pgbench "${PORT_OF[$target]}" "$out" $wl -c "$c" -j 2
                record_result "$key" "$out"
                share=""
                if [ "$target" != direct ]; then
                    after="$(counters_by_backend "${HTTP_OF[$target]}")"
                    read -ra b <<<"$before"
                    read -ra a <<<"$after"
                    for ((k = 0; k < ${#a[@]}; k += 3)); do
                        nd="${a[k]}"
                        dq=$((a[k + 1] - b[k + 1]))
                        dt=$((a[k + 2] - b[k + 2]))
                        SERVED["q|$key|$nd"]=$((${SERVED["q|$key|$nd"]:-0} + dq))
                        SERVED["t|$key|$nd"]=$((${SERVED["t|$key|$nd"]:-0} + dt))
                        if [ "$target" = split_on ]; then
                            ON_TOTAL["q|$nd"]=$((${ON_TOTAL["q|$nd"]:-0} + dq))
                            ON_TOTAL["t|$nd"]=$((${ON_TOTAL["t|$nd"]:-0} + dt))
                        fi
                        share+=" $nd=$dq/$dt"
                    done
                fi
                log "[$n/$total] round $round: $wl -c $c -> $target: $RESULT_MSG${share:+ (queries/transactions:$share)}"
            done
        done
    done
done

# Server-side cross-check: PostgreSQL flushes its statistics lazily (up to ~10 s after a
# connection goes idle), so wait before the final read.
sleep 11
XACT_END="$(xacts_by_node)"

# Which counter the shares use: switchyard_queries_total when the proxy counts it at all,
# otherwise switchyard_transactions_total.
SHARE_METRIC=t
for k in "${!SERVED[@]}"; do
    if [[ "$k" == q\|* ]] && [ "${SERVED[$k]}" -gt 0 ]; then SHARE_METRIC=q; break; fi
done
if [ "$SHARE_METRIC" = q ]; then
    SHARE_NAME="switchyard_queries_total"
else
    SHARE_NAME="switchyard_transactions_total"
fi

# share KEY: "x% / y% / z%" (primary / replica1 / replica2) of what the instance sent.
share() {
    local key="$1" node sum=0 out=""
    for node in "${NODES[@]}"; do sum=$((sum + ${SERVED["$SHARE_METRIC|$key|$node"]:-0})); done
    if [ "$sum" -eq 0 ]; then echo "-"; return; fi
    for node in "${NODES[@]}"; do
        out+="$(awk -v a="${SERVED["$SHARE_METRIC|$key|$node"]:-0}" -v s="$sum" 'BEGIN { printf "%.0f%%", 100 * a / s }') / "
    done
    echo "${out% / }"
}

echo
echo "# switchyard read/write split benchmark"
echo
print_machine
echo "## Setup"
echo
echo "- PostgreSQL primary + 2 streaming replicas (pg_basebackup -R -X stream), fsync=off,"
echo "  max_connections=300, shared_buffers=128MB, pgbench scale $BENCH_SCALE; all on the same $(nproc) CPUs."
echo "- Two switchyard instances, each with all three backends, transaction pooling, pool size 20"
echo "  per backend: \`split_off\` (read_write_split = false) and \`split_on\` (read_write_split = true,"
echo "  other routing settings at their defaults: primary_reads = fallback, balance = least_outstanding)."
echo "- \`direct\` is pgbench straight at the primary, for reference."
echo "- pgbench -n -T $BENCH_SECONDS -j 2; $ROUNDS interleaved round(s); median tps (excluding connection time)."
echo "- Share: what each backend served during the runs: $SHARE_NAME{backend} deltas in the"
echo "  instance's /metrics, summed over rounds."
if [ "$SHARE_METRIC" = t ]; then
    echo "  (switchyard_queries_total stayed at 0 on every backend, so transactions_total is used:"
    echo "  one per pooled transaction, i.e. one per pgbench -S transaction.)"
fi
echo
echo "## Results (median tps)"
echo
echo "| workload | clients | direct (primary) tps | split_off tps | split_on tps | split_on/split_off | split_on/direct | split_off share primary / replica1 / replica2 | split_on share primary / replica1 / replica2 |"
echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
for wl in "${WORKLOADS[@]}"; do
    for c in "${CLIENTS[@]}"; do
        cell "$wl|$c|direct"
        d="$CELL" dn="$CELL_NUM"
        cell "$wl|$c|split_off"
        o="$CELL" on="$CELL_NUM"
        cell "$wl|$c|split_on"
        s="$CELL" sn="$CELL_NUM"
        echo "| \`$wl\` | $c | $d | $o | $s | $(ratio "$sn" "$on") | $(ratio "$sn" "$dn") | $(share "$wl|$c|split_off") | $(share "$wl|$c|split_on") |"
    done
done
if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "### Spread over rounds (min-max tps)"
    echo
    echo "| workload | clients | direct | split_off | split_on |"
    echo "|---|---:|---:|---:|---:|"
    for wl in "${WORKLOADS[@]}"; do
        for c in "${CLIENTS[@]}"; do
            echo "| \`$wl\` | $c | $(spread "$wl|$c|direct") | $(spread "$wl|$c|split_off") | $(spread "$wl|$c|split_on") |"
        done
    done
fi
print_failures

echo
echo "## Cross-check against PostgreSQL's own counters"
echo
echo "Committed transactions in database bench per node over the whole benchmark (pg_stat_database"
echo "xact_commit; includes the direct and split_off runs, which only reach the primary), next to the"
echo "counters switchyard split_on reported for each node over its runs:"
echo
echo "| node | xact_commit delta (all targets) | split_on queries_total | split_on transactions_total |"
echo "|---|---:|---:|---:|"
read -ra xs <<<"$XACT_START"
read -ra xe <<<"$XACT_END"
for ((k = 0; k < ${#xs[@]}; k += 2)); do
    echo "| ${xs[k]} | $((xe[k + 1] - xs[k + 1])) | ${ON_TOTAL["q|${xs[k]}"]:-0} | ${ON_TOTAL["t|${xs[k]}"]:-0} |"
done
echo
echo "split_on routing decisions (switchyard_routed_total at the end):"
echo
echo '```'
metrics "$ON_HTTP" | grep '^switchyard_routed_total' || echo "(none)"
echo '```'

echo
echo "## switchyard processes"
echo
echo "- split_off: $(rss_report "$SY_PID_split_off")"
echo "- split_on: $(rss_report "$SY_PID_split_on")"
print_proxy_log_summary split_off
print_proxy_log_summary split_on
