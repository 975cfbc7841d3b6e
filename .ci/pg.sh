#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the dataflow_lab test suite.
#
# Sourced by .ci/run, which calls pg_start / pg_stop.  Developers can reuse it:
#
#   eval "$(bash .ci/pg.sh start)"          # start; prints `export ...` lines
#   python3 -m pytest
#   bash .ci/pg.sh stop "$DATAFLOW_TEST_PG_DATA"
#
# or:  source .ci/pg.sh; pg_start; ...; pg_stop
#
# pg_start exports:
#   DATAFLOW_TEST_POSTGRES_URL   postgresql://postgres@127.0.0.1:PORT/dataflow_test
#   DATAFLOW_TEST_POSTGRES_URL2  postgresql://postgres@127.0.0.1:PORT/dataflow_test2
#   DATAFLOW_TEST_PG_DATA        the cluster's data directory
#   DATAFLOW_TEST_PG_CTL         full path of pg_ctl
#   DATAFLOW_TEST_PG_USER        OS user that owns/runs the cluster
#   DATAFLOW_TEST_PG_PORT        TCP port (127.0.0.1 only)
#   DATAFLOW_TEST_PG_LOG         server log file (pg_ctl -l)
#   DATAFLOW_REQUIRE_POSTGRES=1
#
# The port, socket dir and other settings are also written to the cluster's
# postgresql.conf, so a plain `pg_ctl -D "$DATAFLOW_TEST_PG_DATA" -l "$DATAFLOW_TEST_PG_LOG" start`
# (e.g. by fault-injection tests, run as $DATAFLOW_TEST_PG_USER) comes back on the same port.
#
# All diagnostics go to stderr; only the export lines go to stdout.
#
# Optional environment overrides:
#   DATAFLOW_PG_BINDIR     directory holding initdb/pg_ctl (default: highest
#                          /usr/lib/postgresql/*/bin, else the one of `initdb` on PATH)
#   DATAFLOW_PG_PORT_BASE  first port to try (default 54329)

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Marker file identifying a temp dir created by pg_start (pg_stop only deletes such dirs).
_PG_CI_MARKER=".dataflow_ci_pg"
_PG_CI_DIR="${_PG_CI_DIR:-}"

_pg_log() { printf '[pg.sh] %s\n' "$*" >&2; }

# Directory with initdb/pg_ctl/createdb/pg_isready.
_pg_bindir() {
    local d cand
    if [[ -n "${DATAFLOW_PG_BINDIR:-}" && -x "${DATAFLOW_PG_BINDIR}/initdb" ]]; then
        printf '%s\n' "$DATAFLOW_PG_BINDIR"; return 0
    fi
    cand=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && cand+="$d"$'\n'
    done
    if [[ -n "$cand" ]]; then
        printf '%s' "$cand" | sort -V | tail -n 1; return 0
    fi
    if d="$(command -v initdb 2>/dev/null)"; then
        d="$(dirname "$(readlink -f "$d")")"
        if [[ -x "$d/pg_ctl" ]]; then printf '%s\n' "$d"; return 0; fi
    fi
    return 1
}

# OS user to run the server as (initdb/postgres refuse to run as root).
_pg_os_user() { _ci_os_user postgres; }

# _pg_as USER DIR CMD ARGS...: run CMD as USER with cwd DIR (no shell re-parsing of args).
_pg_as() {
    local user="$1" dir="$2"; shift 2
    (
        cd "$dir" || exit 1
        if [[ "$(id -un)" == "$user" ]]; then
            "$@"
        elif command -v runuser >/dev/null 2>&1; then
            runuser -u "$user" -- "$@"
        else
            su "$user" -s /bin/bash -c "$(printf '%q ' "$@")"
        fi
    )
}

# True if something already uses 127.0.0.1:PORT.
_pg_port_busy() {
    local port="$1" bindir="$2" rc=0
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2 >/dev/null 2>&1 || rc=$?
    # 0 = accepting, 1 = rejecting (e.g. starting up): a server is there.
    if [[ $rc -eq 0 || $rc -eq 1 ]]; then return 0; fi
    if command -v python3 >/dev/null 2>&1; then
        _ci_port_free "$port" && return 1 || return 0
    fi
    # Fallback: can we connect to it?
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    return 1
}

# Remove a temp dir made by pg_start (only if it carries our marker).
_pg_rm_dir() { _ci_rm_marked "$1" "$_PG_CI_MARKER"; }

pg_start() {
    local bindir user dir port base tries rc initlog
    bindir="$(_pg_bindir)" || { _pg_log "ERROR: no PostgreSQL binaries (initdb/pg_ctl) found"; return 1; }
    user="$(_pg_os_user)" || { _pg_log "ERROR: cannot determine/create a non-root OS user"; return 1; }

    # /tmp explicitly: must be reachable by $user, and the socket path must stay short.
    dir="$(mktemp -d /tmp/dataflow-pg.XXXXXX)" || return 1
    _PG_CI_DIR="$dir"
    : >"$dir/$_PG_CI_MARKER"
    if [[ "$(id -un)" != "$user" ]]; then
        chown "$user" "$dir" || { _pg_rm_dir "$dir"; return 1; }
    fi
    chmod 700 "$dir"

    _pg_log "initdb ($bindir) as $user in $dir/data"
    initlog="$dir/initdb.log"
    if ! _pg_as "$user" "$dir" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
            -E UTF8 --locale=C.UTF-8 --no-sync >"$initlog" 2>&1; then
        _pg_log "initdb with --locale=C.UTF-8 failed; retrying with --no-locale"
        rm -rf -- "$dir/data"
        if ! _pg_as "$user" "$dir" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
                -E UTF8 --no-locale --no-sync >>"$initlog" 2>&1; then
            cat "$initlog" >&2
            _pg_log "ERROR: initdb failed"
            _pg_rm_dir "$dir"; _PG_CI_DIR=""
            return 1
        fi
    fi

    base="${DATAFLOW_PG_PORT_BASE:-54329}"
    port="$base"
    tries=0
    while :; do
        if (( port > base + 200 )); then
            _pg_log "ERROR: no free port in $base..$((base + 200))"
            _pg_rm_dir "$dir"; _PG_CI_DIR=""
            return 1
        fi
        if _pg_port_busy "$port" "$bindir"; then
            port=$((port + 1)); continue
        fi
        # Settings in postgresql.conf too, so restarts without -o keep them.
        # (A later line overrides an earlier one; rewrite on each attempt.)
        {
            printf '\n# --- dataflow_lab CI (.ci/pg.sh) ---\n'
            printf "listen_addresses = '127.0.0.1'\n"
            printf 'port = %s\n' "$port"
            printf "unix_socket_directories = '%s'\n" "$dir"
            printf 'max_prepared_transactions = 20\n'
            printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
            printf 'deadlock_timeout = 50ms\nmax_connections = 200\n'
        } >>"$dir/data/postgresql.conf"
        _pg_log "starting server on 127.0.0.1:$port"
        rc=0
        _pg_as "$user" "$dir" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_prepared_transactions=20 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c deadlock_timeout=50ms -c max_connections=200" \
            start >&2 || rc=$?
        if [[ $rc -eq 0 ]]; then break; fi
        tries=$((tries + 1))
        _pg_log "pg_ctl start failed (rc=$rc) on port $port; server log:"
        tail -n 20 "$dir/log" >&2 2>/dev/null || true
        # Make sure nothing half-started is left before retrying.
        _pg_as "$user" "$dir" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        if (( tries >= 5 )); then
            _pg_log "ERROR: could not start PostgreSQL"
            _pg_rm_dir "$dir"; _PG_CI_DIR=""
            return 1
        fi
        port=$((port + 1))
    done

    # Double-check readiness (30 s).
    local i ok=0
    for ((i = 0; i < 60; i++)); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.5
    done
    if [[ $ok -ne 1 ]]; then
        _pg_log "ERROR: server not ready after 30 s; log:"
        tail -n 50 "$dir/log" >&2 2>/dev/null || true
        pg_stop "$dir/data"
        return 1
    fi

    local db
    for db in dataflow_test dataflow_test2; do
        if ! "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" >&2; then
            _pg_log "ERROR: createdb $db failed"
            pg_stop "$dir/data"
            return 1
        fi
    done

    export DATAFLOW_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/dataflow_test"
    export DATAFLOW_TEST_POSTGRES_URL2="postgresql://postgres@127.0.0.1:$port/dataflow_test2"
    export DATAFLOW_TEST_PG_DATA="$dir/data"
    export DATAFLOW_TEST_PG_CTL="$bindir/pg_ctl"
    export DATAFLOW_TEST_PG_USER="$user"
    export DATAFLOW_TEST_PG_PORT="$port"
    export DATAFLOW_TEST_PG_LOG="$dir/log"
    export DATAFLOW_REQUIRE_POSTGRES=1
    _pg_log "PostgreSQL ready: $DATAFLOW_TEST_POSTGRES_URL (data $dir/data, user $user)"
}

# pg_stop [DATADIR]: stop the cluster (fast, then immediate) and remove its temp dir.
# Default DATADIR: $DATAFLOW_TEST_PG_DATA, else the one pg_start is/was creating.
pg_stop() {
    local data="${1:-${DATAFLOW_TEST_PG_DATA:-}}"
    if [[ -z "$data" && -n "${_PG_CI_DIR:-}" ]]; then data="$_PG_CI_DIR/data"; fi
    if [[ -z "$data" ]]; then _pg_log "pg_stop: no data directory given"; return 1; fi
    data="${data%/}"
    local dir user pgctl="" ver pid
    dir="$(dirname "$data")"

    if [[ -f "$data/postmaster.pid" ]]; then
        user="$(stat -c %U "$data")"
        if [[ -r "$data/PG_VERSION" ]]; then
            ver="$(cat "$data/PG_VERSION")"
            [[ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]] && pgctl="/usr/lib/postgresql/$ver/bin/pg_ctl"
        fi
        if [[ -z "$pgctl" && -n "${DATAFLOW_TEST_PG_CTL:-}" && -x "${DATAFLOW_TEST_PG_CTL}" ]]; then
            pgctl="$DATAFLOW_TEST_PG_CTL"
        fi
        if [[ -z "$pgctl" ]]; then pgctl="$(_pg_bindir)/pg_ctl" || pgctl=""; fi
        if [[ -n "$pgctl" ]]; then
            _pg_log "stopping PostgreSQL ($data)"
            if ! _pg_as "$user" "$dir" "$pgctl" -D "$data" -m fast -w -t 30 stop >&2; then
                _pg_log "fast stop failed; trying immediate"
                _pg_as "$user" "$dir" "$pgctl" -D "$data" -m immediate -w -t 30 stop >&2 || true
            fi
        fi
        # Last resort: kill the postmaster recorded in the pid file.
        if [[ -f "$data/postmaster.pid" ]]; then
            pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                _pg_log "killing postmaster $pid"
                kill -9 "$pid" 2>/dev/null || true
                sleep 1
            fi
        fi
    fi

    if [[ -e "$dir/$_PG_CI_MARKER" ]]; then
        _pg_rm_dir "$dir"
    else
        _pg_log "pg_stop: $dir was not created by pg.sh; not removing it"
    fi
    if [[ "${DATAFLOW_TEST_PG_DATA:-}" == "$data" ]]; then
        unset DATAFLOW_TEST_POSTGRES_URL DATAFLOW_TEST_POSTGRES_URL2 DATAFLOW_TEST_PG_DATA \
            DATAFLOW_TEST_PG_CTL DATAFLOW_TEST_PG_USER DATAFLOW_TEST_PG_PORT DATAFLOW_TEST_PG_LOG
    fi
    if [[ "${_PG_CI_DIR:-}" == "$dir" ]]; then _PG_CI_DIR=""; fi
    return 0
}

# Run directly: `bash .ci/pg.sh start` / `bash .ci/pg.sh stop DATADIR`.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _ci_main pg_start pg_stop "DATAFLOW_TEST_POSTGRES_URL DATAFLOW_TEST_POSTGRES_URL2 DATAFLOW_TEST_PG_DATA \
        DATAFLOW_TEST_PG_CTL DATAFLOW_TEST_PG_USER DATAFLOW_TEST_PG_PORT DATAFLOW_TEST_PG_LOG \
        DATAFLOW_REQUIRE_POSTGRES" "$@"
fi
