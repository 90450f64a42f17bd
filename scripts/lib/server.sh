# shellcheck shell=bash
# scripts/lib/server.sh — sourced, not run: start a miohttpd on a free loopback port and stop it
# by its PID. Shared by the drivers and checks that need a live server.
#
#   source scripts/lib/server.sh
#   server_start [taskset -c 1] target/release/miohttpd [FLAGS...]   # sets SERVER_PID, SERVER_URL
#   ...
#   server_stop                                                       # TERM, then KILL after 5 s
#
# server_start returns non-zero with a message on stderr when the server exits or prints no
# listening line within 10 s. Callers should `trap server_stop EXIT`.

SERVER_PID=
SERVER_URL=
SERVER_LOG=

server_start() {
    SERVER_LOG=$(mktemp)
    # A taskset prefix execs the server, so $! is the server's own PID.
    "$@" --listen 127.0.0.1:0 >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    SERVER_URL=
    local _
    for _ in $(seq 100); do
        SERVER_URL=$(sed -n 's#^miohttpd listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$#\1#p' "$SERVER_LOG" | head -1)
        [[ -n $SERVER_URL ]] && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited early: $(cat "$SERVER_LOG")" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "no 'miohttpd listening on http://127.0.0.1:PORT' line within 10 s: $(cat "$SERVER_LOG")" >&2
    return 1
}

server_stop() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local _
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
    if [[ -n $SERVER_LOG ]]; then
        rm -f "$SERVER_LOG"
        SERVER_LOG=
    fi
}
