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
#
# --workers N runs the server as a supervisor and N workers (RSS and fds are summed over
# them, /metrics is read from the supervisor's --admin-listen); --kill-worker SIGKILLs one
# worker halfway through the load and tells its clients' resets apart from real errors.
#
# MIOHTTPD_BIN=PATH soaks that binary instead of building this tree's release one.
# Arguments after `--` go to scripts/soak.py (`python3 scripts/soak.py --help` lists them).
# The RSS/fd samples go to target/soak/soak-STAMP.csv unless --csv says otherwise. The whole
# run is bounded: the driver runs under timeout(1), and the server and driver are stopped by
# PID on every exit path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

seconds=600
workers=1
kill_worker=
csv=
driver_args=()
while (($#)); do
    case $1 in
    --minutes) seconds=$((${2:?--minutes N} * 60)); shift 2 ;;
    --seconds) seconds=${2:?--seconds N}; shift 2 ;;
    --csv) csv=${2:?--csv PATH}; shift 2 ;;
    --workers) workers=${2:?--workers N}; shift 2 ;;
    --kill-worker) kill_worker=1; shift ;;
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
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
    local rc=$?
    if [[ -n $driver_pid ]]; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    [[ -n $SERVER_LOG && -f $SERVER_LOG ]] && cp "$SERVER_LOG" "$server_log_copy"
    server_stop
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Defaults but two: a short channel TTL, so the channels made by vanishing waiters are
# dropped during the run, and frequent heartbeats, so idle event streams carry some.
# With workers, /metrics is the supervisor's, on its own admin listener.
worker_flags=()
((workers > 1)) && worker_flags=(--workers "$workers" --admin-listen 127.0.0.1:0)
server_start "$bin" \
    --exec ticks="for i in \$(seq $ticks); do echo tick \$i; sleep 0.05; done" \
    --exec flood="seq $flood_lines" \
    --comet-channel-ttl 5 --sse-heartbeat 5 "${worker_flags[@]}"
worker_args=()
if ((workers > 1)); then
    admin_url=
    for _ in $(seq 100); do
        admin_url=$(sed -n 's#^miohttpd admin listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$#\1#p' "$SERVER_LOG" | head -1)
        [[ -n $admin_url ]] && break
        sleep 0.1
    done
    [[ -n $admin_url ]] || { echo "soak.sh: no admin listening line: $(cat "$SERVER_LOG")" >&2; exit 1; }
    worker_args=(--workers "$workers" --metrics-url "$admin_url")
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

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "soak.sh: the server is gone (exited or crashed during the soak)" >&2
    status=1
fi
if grep -q 'panicked' "$SERVER_LOG"; then
    echo "soak.sh: the server log has panics:" >&2
    grep -m 5 'panicked' "$SERVER_LOG" >&2
    status=1
fi
echo "server log: $(wc -l <"$SERVER_LOG") lines, kept in $server_log_copy; samples in $csv"
((status == 124)) && echo "soak.sh: hard timeout ($hard_limit s) reached" >&2
exit "$status"
