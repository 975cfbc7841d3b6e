#!/usr/bin/env bash
# What .ci/pg.sh and .ci/mysql.sh share: the non-root OS user a throwaway server runs as, a free-port
# probe, removal of a temp dir only when it carries the script's marker, and the `start | stop DATADIR`
# command line that prints the started server's `export ...` lines. Sourced, never run.

# _ci_os_user PREFERRED: the user to run a server as. Not root (initdb and mariadbd refuse it): the
# caller itself when it is not root, else PREFERRED when it exists, else dfl_ci (created on demand).
_ci_os_user() {
    if [[ "$(id -u)" -ne 0 ]]; then id -un; return 0; fi
    if id -u "$1" >/dev/null 2>&1; then printf '%s\n' "$1"; return 0; fi
    if ! id -u dfl_ci >/dev/null 2>&1; then
        printf '[ci] creating OS user dfl_ci\n' >&2
        useradd --system --no-create-home --shell /bin/bash dfl_ci >&2 || return 1
    fi
    printf 'dfl_ci\n'
}

# _ci_port_free PORT: true when nothing listens on 127.0.0.1:PORT (a bind succeeds).
_ci_port_free() {
    python3 - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
PY
}

# _ci_rm_marked DIR MARKER: remove DIR, but only a directory this tooling made (it holds MARKER).
_ci_rm_marked() {
    if [[ -n "$1" && -d "$1" && -e "$1/$2" ]]; then rm -rf -- "$1"; fi
}

# _ci_main START_FN STOP_FN "VAR ..." ARGS...: the command line of a server script run directly.
# `start` runs START_FN and prints an `export` line for each VAR; `stop DATADIR` runs STOP_FN.
_ci_main() {
    local start_fn="$1" stop_fn="$2" vars="$3" v
    shift 3
    set -euo pipefail
    case "${1:-}" in
        start)
            "$start_fn"
            for v in $vars; do printf 'export %s=%q\n' "$v" "${!v}"; done
            ;;
        stop)
            "$stop_fn" "${2:-}"
            ;;
        *)
            printf 'usage: bash %s start | stop DATADIR\n' "$0" >&2
            exit 2
            ;;
    esac
}
