#!/usr/bin/env bash
# scripts/soak.sh — bounded soak of the release server: builds it, starts it on a free loopback
# port with two streamed commands, runs scripts/soak.py (a mix of uploads, comet waiters and
# notifies, SSE, streams, pipelined plaintext and abrupt hang-ups) for the duration, and fails
# on any unexpected error, wrong digest or answer, or RSS/fds not back near their start.
#
#   scripts/soak.sh                  # 10 minutes of load
#   scripts/soak.sh --minutes 1      # what CI runs
#   scripts/soak.sh --seconds 90 --csv /tmp/soak.csv -- --seed 7 --waiters 500
#   scripts/soak.sh --minutes 1 --workers 2 --kill-worker   # CI: two workers, one SIGKILLed
#   scripts/soak.sh --hosts 2 --redis-restart               # two hosts on one Redis, restarted
#
# --workers N runs the server as a supervisor and N workers (RSS and fds are summed over
# them, /metrics is read from the supervisor's --admin-listen); --kill-worker SIGKILLs one
# worker halfway through the load and tells its clients' resets apart from real errors.
# --hosts N starts its own redis-server on a free loopback port (append-only, fsync always,
# in a fresh dir; stopped by PID at the end) and N servers with --redis on it; the load is
# spread over them, each publish goes to the next host, and waiters and subscribers must get
# every message with the id its publishing host answered. --redis-restart SIGKILLs Redis
# halfway through and starts it again on its data: publishes refused (503) meanwhile are
# counted, waiters and subscribers that stayed connected must miss nothing.
#
# MIOHTTPD_BIN=PATH soaks that binary instead of building this tree's release one.
# Arguments after `--` go to scripts/soak.py (`python3 scripts/soak.py --help` lists them).
# The RSS/fd samples go to target/soak/soak-STAMP.csv unless --csv says otherwise. The whole
# run is bounded: the driver runs under timeout(1), and the server and driver are stopped by
# PID on every exit path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

seconds=600
workers=1
kill_worker=
hosts=1
redis_restart=
csv=
driver_args=()
while (($#)); do
    case $1 in
    --minutes) seconds=$((${2:?--minutes N} * 60)); shift 2 ;;
    --seconds) seconds=${2:?--seconds N}; shift 2 ;;
    --csv) csv=${2:?--csv PATH}; shift 2 ;;
    --workers) workers=${2:?--workers N}; shift 2 ;;
    --kill-worker) kill_worker=1; shift ;;
    --hosts) hosts=${2:?--hosts N}; shift 2 ;;
    --redis-restart) redis_restart=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; driver_args=("$@"); break ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "soak.sh: the duration must be a positive whole number" >&2
    exit 2
fi
if ! [[ $workers =~ ^[0-9]+$ ]] || ((workers == 0)); then
    echo "soak.sh: --workers must be a positive whole number" >&2
    exit 2
fi
if ! [[ $hosts =~ ^[0-9]+$ ]] || ((hosts == 0)); then
    echo "soak.sh: --hosts must be a positive whole number" >&2
    exit 2
fi
if [[ -n $redis_restart ]] && ((hosts < 2)); then
    echo "soak.sh: --redis-restart needs --hosts 2 or more" >&2
    exit 2
fi
if [[ -n $kill_worker ]] && ((workers < 2)); then
    echo "soak.sh: --kill-worker needs --workers 2 or more" >&2
    exit 2
fi

# python3 (standard library only) the way scripts/test.sh installs it: apt-get as root or
# through sudo, `apt-get update` only when something is missing.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}
if ! command -v python3 >/dev/null 2>&1; then
    echo "soak.sh: installing python3" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi
if ((hosts > 1)) && ! command -v redis-server >/dev/null 2>&1; then
    echo "soak.sh: installing redis-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

# MIOHTTPD_BIN=PATH soaks that binary instead of building this tree's.
bin=${MIOHTTPD_BIN:-target/release/miohttpd}
[[ -n ${MIOHTTPD_BIN:-} ]] || cargo build --release --quiet

# The two commands the stream clients read; the driver is told what they print to check it.
ticks=20
flood_lines=1000000
mkdir -p target/soak
[[ -n $csv ]] || csv=target/soak/soak-$(date +%Y%m%d-%H%M%S).csv

# shellcheck source=scripts/lib/server.sh
source scripts/lib/server.sh

driver_pid=
server_log_copy=${csv%.csv}-server.log
host_pids=() host_logs=()
redis_dir= redis_pid=
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
    local rc=$? i
    if [[ -n $driver_pid ]]; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    [[ -n $SERVER_LOG && -f $SERVER_LOG ]] && cp "$SERVER_LOG" "$server_log_copy"
    server_stop
    # The other hosts (host 2 is host_pids[0]), through the same stop.
    for i in "${!host_pids[@]}"; do
        SERVER_PID=${host_pids[$i]} SERVER_LOG=${host_logs[$i]}
        [[ -f $SERVER_LOG ]] && cp "$SERVER_LOG" "${server_log_copy%.log}-host$((i + 2)).log"
        server_stop
    done
    if [[ -n $redis_dir ]]; then
        # The running Redis: the one started here, or the driver's restart (the pidfile says).
        [[ -f $redis_dir/redis.pid ]] && redis_pid=$(cat "$redis_dir/redis.pid")
        if [[ -n $redis_pid ]]; then
            kill -TERM "$redis_pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$redis_pid" 2>/dev/null || true
        fi
        cp "$redis_dir/redis.log" "${csv%.csv}-redis.log" 2>/dev/null || true
        rm -rf "$redis_dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Redis for the hosts: a free loopback port (a race with another binder is retried), the
# append-only file fsynced on every write so a SIGKILL loses nothing Redis acknowledged, no
# RDB snapshots; the restart (the driver's) runs the same command in the same dir.
redis_flags=()
redis_args=()
if ((hosts > 1)); then
    redis_dir=$(mktemp -d)
    for _ in 1 2 3 4 5; do
        redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis_cmd=(redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir"
            --save '' --appendonly yes --appendfsync always --pidfile "$redis_dir/redis.pid"
            --daemonize no)
        "${redis_cmd[@]}" >>"$redis_dir/redis.log" 2>&1 </dev/null &
        redis_pid=$!
        for _ in $(seq 50); do
            redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        # Stopped by PID from here on; disowned so bash does not report the driver's SIGKILL.
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && { disown "$redis_pid"; break; }
        kill -KILL "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=
    done
    [[ -n $redis_pid ]] || { echo "soak.sh: redis-server did not start: $(cat "$redis_dir/redis.log")" >&2; exit 1; }
    echo "redis-server pid $redis_pid on 127.0.0.1:$redis_port (dir $redis_dir)"
    redis_flags=(--redis "redis://127.0.0.1:$redis_port" --redis-prefix soak --admin-listen 127.0.0.1:0)
    redis_args=(--redis)
    if [[ -n $redis_restart ]]; then
        redis_args+=(--redis-restart-at $((seconds / 2)) --redis-pidfile "$redis_dir/redis.pid"
            --redis-log "$redis_dir/redis.log"
            --redis-command "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${redis_cmd[@]}")")
    fi
fi

# The admin listener's URL a server printed in its log.
admin_url_of() {
    local url= _
    for _ in $(seq 100); do
        url=$(sed -n 's#^miohttpd admin listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$#\1#p' "$1" | head -1)
        [[ -n $url ]] && break
        sleep 0.1
    done
    [[ -n $url ]] || { echo "soak.sh: no admin listening line: $(cat "$1")" >&2; return 1; }
    echo "$url"
}

# Defaults but two: a short channel TTL, so the channels made by vanishing waiters are
# dropped during the run, and frequent heartbeats, so idle event streams carry some.
# With workers, /metrics is the supervisor's, on its own admin listener.
worker_flags=()
((workers > 1)) && worker_flags=(--workers "$workers")
((workers > 1)) && ((hosts == 1)) && worker_flags+=(--admin-listen 127.0.0.1:0)
# Hosts after the first, started first and kept aside: server_start's variables end as the
# first host's, which the rest of this script (and the driver's --url/--pid) use.
host_args=()
for ((h = 2; h <= hosts; h++)); do
    server_start "$bin" \
        --exec ticks="for i in \$(seq $ticks); do echo tick \$i; sleep 0.05; done" \
        --exec flood="seq $flood_lines" \
        --comet-channel-ttl 5 --sse-heartbeat 5 "${worker_flags[@]}" "${redis_flags[@]}"
    host_pids+=("$SERVER_PID") host_logs+=("$SERVER_LOG")
    host_args+=(--host "$SERVER_URL,$SERVER_PID,$(admin_url_of "$SERVER_LOG")")
    echo "host $h: pid $SERVER_PID at $SERVER_URL"
    SERVER_PID= SERVER_LOG=
done
server_start "$bin" \
    --exec ticks="for i in \$(seq $ticks); do echo tick \$i; sleep 0.05; done" \
    --exec flood="seq $flood_lines" \
    --comet-channel-ttl 5 --sse-heartbeat 5 "${worker_flags[@]}" "${redis_flags[@]}"
((hosts > 1)) && echo "host 1: pid $SERVER_PID at $SERVER_URL"
worker_args=()
if ((workers > 1 || hosts > 1)); then
    admin_url=$(admin_url_of "$SERVER_LOG")
    worker_args=(--workers "$workers" --metrics-url "$admin_url" "${host_args[@]}" "${redis_args[@]}")
    [[ -n $kill_worker ]] && worker_args+=(--kill-worker-at $((seconds / 2)))
fi

# Load, then at most ~2 × the silence bound of draining, a settle and slack.
hard_limit=$((seconds + 300))
timeout --kill-after=10 "$hard_limit" python3 scripts/soak.py \
    --url "$SERVER_URL" --pid "$SERVER_PID" --seconds "$seconds" --csv "$csv" \
    --ticks "$ticks" --flood-lines "$flood_lines" "${worker_args[@]}" "${driver_args[@]}" &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=

for pid in "$SERVER_PID" "${host_pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "soak.sh: the server $pid is gone (exited or crashed during the soak)" >&2
        status=1
    fi
done
for log in "$SERVER_LOG" "${host_logs[@]}"; do
    if grep -q 'panicked' "$log"; then
        echo "soak.sh: a server log has panics:" >&2
        grep -m 5 'panicked' "$log" >&2
        status=1
    fi
done
echo "server log: $(wc -l <"$SERVER_LOG") lines, kept in $server_log_copy; samples in $csv"
((status == 124)) && echo "soak.sh: hard timeout ($hard_limit s) reached" >&2
exit "$status"
