#!/usr/bin/env bash
# Runs PostgreSQL's own regression suite (pg_regress, parallel schedule) on a throwaway
# primary: directly, then through switchyard in transaction pooling and in session pooling
# mode, (split) in transaction pooling in front of the primary and two streaming replicas
# with reads split, and (tls) in transaction pooling with every client on TLS (`[tls] mode =
# "require"`, pg_regress and psql with sslmode=require). A test that passes directly must pass
# through the proxy; the script exits 1 when one does not, and prints which.
#
# The suite's SQL and expected files are not in Debian's binary packages: they are taken from
# the source package of the installed server version (`apt-get source`, with a deb-src entry
# used for that download only), or from PG_REGRESS_SRC (a PostgreSQL source tree). The C
# functions some tests load (regress.so) are built with the server headers
# (postgresql-server-dev-<major>, installed when missing).
#
# Usage: scripts/regress.sh [MODE...]     MODE: direct, transaction, session, split, tls
#                                          (default: all)
# Output and diffs: target/regress/<mode>/ (regression.out, regression.diffs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODES=("$@")
[ ${#MODES[@]} -eq 0 ] && MODES=(direct transaction session split tls)
for m in "${MODES[@]}"; do
    case "$m" in
        direct | transaction | session | split | tls) ;;
        *)
            echo "regress.sh: unknown mode: $m (direct, transaction, session, split, tls)" >&2
            exit 2
            ;;
    esac
done

./scripts/deps.sh --no-drivers </dev/null
cargo build --release --bins </dev/null
LOG_TAG=regress
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
SY_BIN=$ROOT/target/release/switchyard

# ---------------------------------------------------------------- tools and sources
VERSION=$PG_VERSION
MAJOR=$PG_MAJOR
PG_REGRESS=$(dirname "$BINDIR")/lib/pgxs/src/test/regress/pg_regress
[ -x "$PG_REGRESS" ] || die "pg_regress not found at $PG_REGRESS"

WORK=$ROOT/target/regress
mkdir -p "$WORK"
chmod 755 "$ROOT/target" "$WORK"

fetch_sources() {
    local dir=$WORK/source pkgver
    if [ -n "${PG_REGRESS_SRC:-}" ]; then
        SRC=$PG_REGRESS_SRC/src/test/regress
        return
    fi
    pkgver=$(dpkg-query -W -f='${Version}' "postgresql-$MAJOR" 2>/dev/null || true)
    [ -n "$pkgver" ] || die "postgresql-$MAJOR is not a Debian package here: set PG_REGRESS_SRC"
    # A download is reused only for the server package it was fetched for: after a server
    # upgrade the old tests' expected output (and psql's behaviour they record) differ.
    if [ "$(cat "$dir/fetched-for" 2>/dev/null)" = "$pkgver" ]; then
        SRC=$(find "$dir" -maxdepth 5 -type d -path '*/src/test/regress' | head -1 || true)
        [ -n "$SRC" ] && [ -f "$SRC/parallel_schedule" ] && return
    fi
    log "fetching the postgresql-$MAJOR $pkgver source package (regression tests)"
    rm -rf "$dir" && mkdir -p "$dir/lists/partial" "$dir/download"
    # deb-src entries for the distribution's own mirrors, in a private list and state dir:
    # the system's apt configuration is left as it was.
    local suites
    suites=$(. /etc/os-release && echo "$VERSION_CODENAME")
    {
        echo "deb-src http://deb.debian.org/debian $suites main"
        echo "deb-src http://deb.debian.org/debian $suites-updates main"
        echo "deb-src http://deb.debian.org/debian-security $suites-security main"
    } >"$dir/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$dir/lists" -o "APT::Sandbox::User=root")
    "${SUDO[@]}" apt-get "${apt_opts[@]}" update -qq </dev/null
    # The exact version first (its expected output matches the server); else the newest of
    # that major the mirrors still serve (a security update's source can be missing).
    local v versions
    versions=$(apt-cache "${apt_opts[@]}" showsrc "postgresql-$MAJOR" 2>/dev/null |
        awk '/^Version:/ { print $2 }' | sort -rV | grep -vxF "$pkgver" || true)
    for v in "$pkgver" $versions; do
        (cd "$dir/download" && "${SUDO[@]}" apt-get "${apt_opts[@]}" source --download-only -qq \
            "postgresql-$MAJOR=$v" </dev/null >/dev/null 2>&1) && break
        log "source of postgresql-$MAJOR $v not available"
        rm -f "$dir/download/"*
    done
    local tarball
    tarball=$(find "$dir/download" -name "postgresql-${MAJOR}_*.orig.tar.*" | head -1)
    [ -n "$tarball" ] || die "could not download the postgresql-$MAJOR source package"
    tar -xf "$tarball" -C "$dir" --wildcards '*/src/test/regress/*' '*/contrib/spi/*'
    SRC=$(find "$dir" -maxdepth 5 -type d -path '*/src/test/regress' | head -1)
    [ -f "$SRC/parallel_schedule" ] || die "no regression tests in $tarball"
    echo "$pkgver" >"$dir/fetched-for"
    rm -rf "$WORK/lib"
}

build_regress_so() {
    DLDIR=$WORK/lib
    [ -f "$DLDIR/regress.so" ] && return
    local inc=/usr/include/postgresql/$MAJOR/server
    if [ ! -f "$inc/postgres.h" ]; then
        # The installed server's own version: an unpinned install would upgrade the server
        # (and its expected output would no longer match the fetched tests).
        local pkgver
        pkgver=$(dpkg-query -W -f='${Version}' "postgresql-$MAJOR" 2>/dev/null || true)
        log "installing postgresql-server-dev-$MAJOR${pkgver:+=$pkgver} (headers for regress.so)"
        "${SUDO[@]}" apt-get update -qq </dev/null
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
            "postgresql-server-dev-$MAJOR${pkgver:+=$pkgver}" </dev/null
    fi
    [ -f "$inc/postgres.h" ] || die "server headers not found in $inc"
    mkdir -p "$DLDIR"
    # regress.so, and the contrib/spi modules the trigger tests load (as the suite's own
    # Makefile builds them).
    gcc -O2 -fPIC -shared -I"$inc" -o "$DLDIR/regress.so" "$SRC/regress.c"
    local spi m
    spi=$(cd "$SRC/../../../contrib/spi" && pwd)
    for m in refint autoinc; do
        gcc -O2 -fPIC -shared -I"$inc" -DREFINT_VERBOSE -o "$DLDIR/$m.so" "$spi/$m.c"
    done
    chmod -R a+rX "$DLDIR"
}

fetch_sources
build_regress_so
log "regression tests: $SRC (server $VERSION)"

start_primary
[[ " ${MODES[*]} " == *" split "* ]] && start_replicas 2
if [[ " ${MODES[*]} " == *" tls "* ]]; then
    command -v openssl >/dev/null || die "the tls mode needs openssl to make a certificate"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$RUN/tls-key.pem" -out "$RUN/tls-cert.pem" >"$RUN/openssl.log" 2>&1 ||
        { cat "$RUN/openssl.log" >&2; die "openssl could not make a certificate"; }
fi

# ---------------------------------------------------------------- runs
declare -A FAILED
for mode in "${MODES[@]}"; do
    out=$WORK/$mode
    rm -rf "$out" && mkdir -p "$out"
    chmod 777 "$out"
    rollback_prepared
    sslmode=prefer
    if [ "$mode" = direct ]; then
        PORT=$PG_PORT
    elif [ "$mode" = tls ]; then
        # Plain clients are refused: every connection of the run is encrypted.
        sslmode=require
        saved_extra=$PROXY_EXTRA_TOML
        PROXY_EXTRA_TOML+=$(printf '\n[tls]\ncert = "%s"\nkey = "%s"\nmode = "require"\n' \
            "$RUN/tls-cert.pem" "$RUN/tls-key.pem")
        PGSSLMODE=require start_proxy transaction "$out/switchyard.log"
        PROXY_EXTRA_TOML=$saved_extra
    else
        start_proxy "$mode" "$out/switchyard.log"
    fi
    log "pg_regress ($mode) on port $PORT"
    set +e
    (cd "$out" && as_pg env PGSSLMODE="$sslmode" "$PG_REGRESS" --inputdir="$SRC" --outputdir="$out" --bindir="$BINDIR" \
        --dlpath="$DLDIR" --schedule="$SRC/parallel_schedule" --host=127.0.0.1 --port="$PORT" \
        --user=postgres --max-connections=20) >"$out/pg_regress.log" 2>&1
    set -e
    split_ok=1
    if [ "$mode" = split ] && ! check_replica_transactions; then
        log "split: no transaction ran on a replica"
        split_ok=0
    fi
    if [ "$mode" = tls ]; then
        handshakes=$(curl -fsS "http://127.0.0.1:$SY_HTTP/metrics" |
            awk '/^switchyard_tls_handshakes_total\{result="ok",side="client"\}/ { print $2 }')
        log "tls: ${handshakes:-0} client TLS handshakes"
    fi
    [ "$mode" != direct ] && stop_proxy regression
    FAILED[$mode]=$(awk '/\.\.\. FAILED|\.\.\. failed/ { for (i = 1; i <= NF; i++) if ($i == "...") { print $(i - 1); break } }' \
        "$out/pg_regress.log" | sort | tr '\n' ' ')
    summary=$(grep -E '^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed)' "$out/pg_regress.log" || true)
    if [ -z "$summary" ]; then
        # pg_regress did not get to run the tests (setup failed): that is a failure too.
        FAILED[$mode]="(did-not-run) ${FAILED[$mode]}"
        summary=$(tail -3 "$out/pg_regress.log" | tr '\n' ' ')
    fi
    [ "$split_ok" = 1 ] || FAILED[$mode]="(no-replica-reads) ${FAILED[$mode]}"
    log "$mode: ${summary# } ${FAILED[$mode]:+(failed: ${FAILED[$mode]})}"
done

# ---------------------------------------------------------------- verdict
rc=0
if [ -n "${FAILED[direct]+set}" ]; then
    for mode in "${MODES[@]}"; do
        [ "$mode" = direct ] && continue
        extra=$(comm -13 <(tr ' ' '\n' <<<"${FAILED[direct]}" | sed '/^$/d' | sort) \
            <(tr ' ' '\n' <<<"${FAILED[$mode]}" | sed '/^$/d' | sort) | tr '\n' ' ')
        if [ -n "$extra" ]; then
            log "$mode: fails where PostgreSQL directly passes: $extra(diffs: $WORK/$mode/regression.diffs)"
            rc=1
        else
            log "$mode: same result as PostgreSQL directly"
        fi
    done
fi
exit $rc
