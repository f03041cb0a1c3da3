#!/usr/bin/env bash
# Installs what switchyard's tests, demo and benchmarks need, when missing:
#   - PostgreSQL server + client + contrib (initdb, postgres, pg_ctl, pg_basebackup, psql,
#     pgbench, pg_stat_statements) from the distribution's packages
#   - pgbouncer (only with --bench)
#   - the client drivers the tests run (skip with --no-drivers): a Python venv in ./.venv
#     with psycopg 3 and asyncpg; a JDK and pgjdbc (Debian's libpostgresql-jdbc-java);
#     Node.js with node-postgres and postgres.js (npm ci in tests/node, versions locked)
# Idempotent and non-interactive; works as root, or as a user with sudo.
#
# Usage: scripts/deps.sh [--bench] [--no-drivers]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH=0
DRIVERS=1
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        --no-drivers | --no-python) DRIVERS=0 ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
            exit 0
            ;;
        *)
            echo "deps.sh: unknown option: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

export DEBIAN_FRONTEND=noninteractive

log() { echo "deps: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo env DEBIAN_FRONTEND=noninteractive)
    fi
fi

as_root() {
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        log "need root for: $* (run as root or install sudo)"
        return 1
    fi
    "${SUDO[@]}" "$@"
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these yourself: $*"
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# The directory with PostgreSQL's server binaries, or nothing. Same search order as
# switchyard::localpg::PgBinaries::find.
pg_bindir() {
    local d p
    for d in "${SWITCHYARD_PG_BINDIR:-}" \
        "$(p=$(command -v initdb 2>/dev/null) && dirname "$(readlink -f "$p")")" \
        "$(command -v pg_config >/dev/null 2>&1 && pg_config --bindir 2>/dev/null)" \
        $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -t/ -k5,5 -V -r); do
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ] &&
            [ -x "$d/pg_ctl" ] && [ -x "$d/pg_basebackup" ]; then
            echo "$d"
            return 0
        fi
    done
    return 0
}

have_tool() { # name: in the bindir or on PATH
    local bindir
    bindir=$(pg_bindir)
    { [ -n "$bindir" ] && [ -x "$bindir/$1" ]; } || command -v "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- PostgreSQL
pg_complete() {
    [ -n "$(pg_bindir)" ] && have_tool psql && have_tool pgbench
}

if pg_complete; then
    log "PostgreSQL: $(pg_bindir) ($("$(pg_bindir)/postgres" --version))"
else
    apt_install postgresql postgresql-contrib postgresql-client
    # Debian's package creates a cluster and (outside containers) starts it on 5432. We
    # only ever run our own throwaway clusters: stop the one we just caused to exist and
    # keep it from starting at boot. Its data is left alone.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name port status _; do
            if [ "$status" = "online" ]; then
                log "stopping the packaged cluster $ver/$name (port $port)"
                as_root pg_ctlcluster "$ver" "$name" stop || true
            fi
            if [ -f "/etc/postgresql/$ver/$name/start.conf" ]; then
                echo manual | as_root tee "/etc/postgresql/$ver/$name/start.conf" >/dev/null
            fi
        done
    fi
    if ! pg_complete; then
        log "PostgreSQL binaries still not found after installing; set SWITCHYARD_PG_BINDIR"
        exit 1
    fi
    log "PostgreSQL: $(pg_bindir) ($("$(pg_bindir)/postgres" --version))"
fi

# PostgreSQL refuses to run as root; as root the harness runs it as the `postgres` user.
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null 2>&1; then
    log "creating the postgres OS user"
    useradd --system --user-group --home-dir /var/lib/postgresql --create-home \
        --shell /bin/sh postgres
fi

# ---------------------------------------------------------------- pgbouncer
if [ "$BENCH" -eq 1 ]; then
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        log "pgbouncer: present"
    else
        apt_install pgbouncer
        # The benchmark runs its own pgbouncer; don't leave the packaged service running.
        if [ -d /run/systemd/system ]; then
            as_root systemctl disable --now pgbouncer >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            as_root service pgbouncer stop >/dev/null 2>&1 || true
        fi
    fi
fi

# ---------------------------------------------------------------- Python venv
if [ "$DRIVERS" -eq 1 ]; then
    VENV=.venv
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
        log "python venv: $VENV (psycopg, asyncpg present)"
    else
        if ! command -v python3 >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            rm -rf "$VENV"
            if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
                rm -rf "$VENV"
                apt_install python3-venv
                python3 -m venv "$VENV"
            fi
        fi
        log "pip install psycopg[binary] asyncpg into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            'psycopg[binary]>=3.1' asyncpg
        "$VENV/bin/python" -c 'import psycopg, asyncpg'
        log "python venv: $VENV ready"
    fi
fi

# ---------------------------------------------------------------- Java + pgjdbc
PGJDBC_JAR=/usr/share/java/postgresql.jar
if [ "$DRIVERS" -eq 1 ]; then
    missing=()
    command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
    [ -f "$PGJDBC_JAR" ] || missing+=(libpostgresql-jdbc-java)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    log "java: $(java -version 2>&1 | head -1); pgjdbc: $PGJDBC_JAR"
fi

# ---------------------------------------------------------------- Node.js drivers
if [ "$DRIVERS" -eq 1 ]; then
    # NodeSource's nodejs package bundles npm (and conflicts with Debian's npm package).
    command -v node >/dev/null 2>&1 || apt_install nodejs
    command -v npm >/dev/null 2>&1 || apt_install npm
    if [ ! -f tests/node/node_modules/.package-lock.json ] ||
        ! cmp -s tests/node/package-lock.json tests/node/node_modules/.sy-installed-lock; then
        log "npm ci (tests/node: pg, postgres)"
        (cd tests/node && npm ci --no-audit --no-fund --loglevel=error </dev/null &&
            cp package-lock.json node_modules/.sy-installed-lock)
    fi
    log "node: $(node --version) (tests/node: pg, postgres)"
fi

log "ok"
