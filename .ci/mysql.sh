#!/usr/bin/env bash
# Throwaway MariaDB (or MySQL) server for the dataflow_lab test suite, as .ci/pg.sh is for PostgreSQL.
#
# Sourced by .ci/run, which calls mysql_start / mysql_stop.  Developers can reuse it:
#
#   eval "$(bash .ci/mysql.sh start)"        # start; prints `export ...` lines
#   python3 -m pytest -k mysql
#   bash .ci/mysql.sh stop "$DATAFLOW_TEST_MYSQL_DATA"
#
# mysql_start exports:
#   DATAFLOW_TEST_MYSQL_URL    mysql://root@127.0.0.1:PORT/dataflow_test
#   DATAFLOW_TEST_MYSQL_URL2   mysql://root@127.0.0.1:PORT/dataflow_test2
#   DATAFLOW_TEST_MYSQL_DATA   the server's data directory
#   DATAFLOW_TEST_MYSQL_PORT   TCP port (127.0.0.1 only)
#   DATAFLOW_TEST_MYSQL_LOG    the server's error log
#   DATAFLOW_REQUIRE_MYSQL=1
#
# The server runs as a non-root OS user (mysql, else dfl_ci), with its own data directory under
# /tmp, strict SQL mode, utf8mb4 and UTC; fsync is off (a test server). Diagnostics go to stderr;
# only the export lines go to stdout.
#
# Optional environment overrides:
#   DATAFLOW_MYSQL_PORT_BASE   first port to try (default 53306)

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

_MY_CI_MARKER=".dataflow_ci_mysql"
_MY_CI_DIR="${_MY_CI_DIR:-}"

_my_log() { printf '[mysql.sh] %s\n' "$*" >&2; }

# The server binary and its companions (mariadbd, else mysqld).
_my_server() {
    local b
    for b in mariadbd mysqld; do
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
        if [[ -x "/usr/sbin/$b" ]]; then printf '/usr/sbin/%s\n' "$b"; return 0; fi
    done
    return 1
}

_my_install_db() {
    local b
    for b in mariadb-install-db mysql_install_db; do
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    done
    return 1
}

_my_client() {
    local b
    for b in mariadb mysql; do
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    done
    return 1
}

_my_os_user() { _ci_os_user mysql; }

_my_port_busy() { ! _ci_port_free "$1"; }

_my_rm_dir() { _ci_rm_marked "$1" "$_MY_CI_MARKER"; }

# mysql_start: initialise a data directory, start the server, create the test databases.
mysql_start() {
    local server install client user dir port base i ok
    server="$(_my_server)" || { _my_log "ERROR: no mariadbd/mysqld (apt-get install mariadb-server)"; return 1; }
    install="$(_my_install_db)" || { _my_log "ERROR: no mariadb-install-db"; return 1; }
    client="$(_my_client)" || { _my_log "ERROR: no mariadb/mysql client"; return 1; }
    user="$(_my_os_user)" || { _my_log "ERROR: cannot determine/create a non-root OS user"; return 1; }

    dir="$(mktemp -d /tmp/dataflow-mysql.XXXXXX)" || return 1
    _MY_CI_DIR="$dir"
    : >"$dir/$_MY_CI_MARKER"
    mkdir -p "$dir/data" "$dir/tmp"
    if [[ "$(id -un)" != "$user" ]]; then chown -R "$user" "$dir" || { _my_rm_dir "$dir"; return 1; }; fi
    chmod 700 "$dir"

    _my_log "$install as $user in $dir/data"
    if ! "$install" --no-defaults --user="$user" --datadir="$dir/data" --auth-root-authentication-method=normal \
            --skip-test-db >"$dir/install.log" 2>&1; then
        cat "$dir/install.log" >&2
        _my_log "ERROR: $install failed"
        _my_rm_dir "$dir"; _MY_CI_DIR=""
        return 1
    fi

    base="${DATAFLOW_MYSQL_PORT_BASE:-53306}"
    port="$base"
    while _my_port_busy "$port"; do
        port=$((port + 1))
        if (( port > base + 200 )); then _my_log "ERROR: no free port in $base..$((base + 200))"; _my_rm_dir "$dir"; return 1; fi
    done
    # The settings, in a file a restart (fault tests) can reuse: --defaults-file="$dir/my.cnf".
    cat >"$dir/my.cnf" <<CNF
[mysqld]
user = $user
datadir = $dir/data
tmpdir = $dir/tmp
socket = $dir/mysqld.sock
pid-file = $dir/mysqld.pid
log-error = $dir/error.log
bind-address = 127.0.0.1
port = $port
skip-name-resolve
sql-mode = STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
default-time-zone = +00:00
max-connections = 300
innodb-flush-log-at-trx-commit = 0
innodb-doublewrite = 0
innodb-flush-method = nosync
innodb-buffer-pool-size = 128M
innodb-log-file-size = 64M
innodb-lock-wait-timeout = 10
max-allowed-packet = 64M
local-infile = 1
skip-log-bin
performance-schema = 0
innodb-file-per-table = 0
CNF
    chown "$user" "$dir/my.cnf" 2>/dev/null || true
    _my_log "starting $server on 127.0.0.1:$port"
    (cd "$dir" && "$server" --defaults-file="$dir/my.cnf" >>"$dir/error.log" 2>&1 &)
    ok=0
    for ((i = 0; i < 120; i++)); do
        if "$client" --no-defaults --socket="$dir/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.5
    done
    if [[ $ok -ne 1 ]]; then
        _my_log "ERROR: server not ready after 60 s; log:"
        tail -n 40 "$dir/error.log" >&2 2>/dev/null || true
        mysql_stop "$dir/data"
        return 1
    fi
    # root over TCP from 127.0.0.1, no password (a throwaway server); two test databases.
    if ! "$client" --no-defaults --socket="$dir/mysqld.sock" -uroot >&2 <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE dataflow_test CHARACTER SET utf8mb4;
CREATE DATABASE dataflow_test2 CHARACTER SET utf8mb4;
FLUSH PRIVILEGES;
SQL
    then
        _my_log "ERROR: creating the test databases failed"
        mysql_stop "$dir/data"
        return 1
    fi

    export DATAFLOW_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/dataflow_test"
    export DATAFLOW_TEST_MYSQL_URL2="mysql://root@127.0.0.1:$port/dataflow_test2"
    export DATAFLOW_TEST_MYSQL_DATA="$dir/data"
    export DATAFLOW_TEST_MYSQL_PORT="$port"
    export DATAFLOW_TEST_MYSQL_LOG="$dir/error.log"
    export DATAFLOW_REQUIRE_MYSQL=1
    _my_log "MariaDB ready: $DATAFLOW_TEST_MYSQL_URL (data $dir/data, user $user)"
}

# mysql_stop [DATADIR]: stop the server (SIGTERM, then SIGKILL) and remove its temp dir.
mysql_stop() {
    local data="${1:-${DATAFLOW_TEST_MYSQL_DATA:-}}"
    if [[ -z "$data" && -n "${_MY_CI_DIR:-}" ]]; then data="$_MY_CI_DIR/data"; fi
    if [[ -z "$data" ]]; then _my_log "mysql_stop: no data directory given"; return 1; fi
    data="${data%/}"
    local dir pid i
    dir="$(dirname "$data")"
    if [[ -f "$dir/mysqld.pid" ]]; then
        pid="$(head -n 1 "$dir/mysqld.pid" 2>/dev/null || true)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            _my_log "stopping MariaDB ($pid, $data)"
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            if kill -0 "$pid" 2>/dev/null; then _my_log "killing $pid"; kill -9 "$pid" 2>/dev/null || true; sleep 1; fi
        fi
    fi
    if [[ -e "$dir/$_MY_CI_MARKER" ]]; then
        _my_rm_dir "$dir"
    else
        _my_log "mysql_stop: $dir was not created by mysql.sh; not removing it"
    fi
    if [[ "${DATAFLOW_TEST_MYSQL_DATA:-}" == "$data" ]]; then
        unset DATAFLOW_TEST_MYSQL_URL DATAFLOW_TEST_MYSQL_URL2 DATAFLOW_TEST_MYSQL_DATA \
            DATAFLOW_TEST_MYSQL_PORT DATAFLOW_TEST_MYSQL_LOG
    fi
    if [[ "${_MY_CI_DIR:-}" == "$dir" ]]; then _MY_CI_DIR=""; fi
    return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _ci_main mysql_start mysql_stop "DATAFLOW_TEST_MYSQL_URL DATAFLOW_TEST_MYSQL_URL2 DATAFLOW_TEST_MYSQL_DATA \
        DATAFLOW_TEST_MYSQL_PORT DATAFLOW_TEST_MYSQL_LOG DATAFLOW_REQUIRE_MYSQL" "$@"
fi
