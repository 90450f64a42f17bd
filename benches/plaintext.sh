#!/usr/bin/env bash
# benches/plaintext.sh — wrk load on GET /plaintext ("Hello, World!").
#
# Builds the release binary, starts miohttpd pinned to core 1, runs `wrk -t1 -c100 -d10s`
# pinned to core 0 against 127.0.0.1 several times, prints requests/s per run and the median.
# With --pipeline N it then repeats the runs with N requests pipelined per connection write
# (benches/pipeline.lua). Installs wrk with apt-get if it is missing. The server is stopped by
# PID on any exit.
#
#   benches/plaintext.sh [--runs 3] [--duration 10s] [--connections 100] [--threads 1]
#                        [--pipeline 16] [--bin PATH (skip the build)]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=3
duration=10s
connections=100
threads=1
pipeline=
bin=
server_core=1
client_core=0

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --pipeline) pipeline=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "plaintext.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "plaintext.sh: --runs wants a positive integer" >&2; exit 2; }
[[ -z $pipeline || $pipeline =~ ^[1-9][0-9]*$ ]] || { echo "plaintext.sh: --pipeline wants a positive integer" >&2; exit 2; }

if ! command -v wrk >/dev/null 2>&1; then
    echo "plaintext.sh: installing wrk" >&2
    as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

# Pin only where there are two cores to split; otherwise say so and run unpinned.
pin_server=() pin_client=() client_cores=any
if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
    pin_server=(taskset -c "$server_core")
    pin_client=(taskset -c "$client_core")
    client_cores=$client_core
else
    echo "plaintext.sh: warning: fewer than 2 cores or no taskset; running unpinned" >&2
fi

if [[ -z $bin ]]; then
    cargo build --release --quiet --bin miohttpd
    bin=target/release/miohttpd
fi

# shellcheck source=scripts/lib/server.sh
source scripts/lib/server.sh
trap server_stop EXIT
trap 'exit 130' INT TERM

server_start "${pin_server[@]}" "$bin" || { echo "plaintext.sh: $bin did not start" >&2; exit 1; }
url=$SERVER_URL
echo "plaintext.sh: $bin pid $SERVER_PID on $url (cores $(sed -n 's/^Cpus_allowed_list:\s*//p' "/proc/$SERVER_PID/status")); wrk on cores $client_cores"

# Sanity first: a wrong answer fast is not a result.
body=$(curl -sS --max-time 5 "$url/plaintext" 2>&1 || true)
if [[ $body != "Hello, World!" ]]; then
    echo "plaintext.sh: GET /plaintext answered '$body', want 'Hello, World!'" >&2
    exit 1
fi

# run_series LABEL [SCRIPT DEPTH]: $runs wrk runs, each Requests/sec, then the median.
# wrk takes script arguments after the URL: wrk [opts] -s SCRIPT URL -- ARGS.
run_series() {
    local label=$1
    local cmd=(wrk -t"$threads" -c"$connections" -d"$duration")
    if (($# > 1)); then cmd+=(-s "$2" "$url/plaintext" -- "$3"); else cmd+=("$url/plaintext"); fi
    local rates=() out rate
    echo
    echo "== $label: ${cmd[*]}"
    for i in $(seq "$runs"); do
        out=$("${pin_client[@]}" "${cmd[@]}" 2>&1) || {
            echo "$out" >&2
            echo "plaintext.sh: wrk failed" >&2
            exit 1
        }
        rate=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        [[ -n $rate ]] || { echo "$out" >&2; echo "plaintext.sh: no Requests/sec in wrk output" >&2; exit 1; }
        # Errors make a rate meaningless: show them beside the number.
        local notes
        notes=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | sed 's/^ *//' | paste -sd ';' - || true)
        printf 'run %d/%d: %12.0f req/s%s\n' "$i" "$runs" "$rate" "${notes:+   ($notes)}"
        rates+=("$rate")
    done
    printf '%s\n' "${rates[@]}" | sort -g | awk -v label="$label" '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s median: %.0f req/s (min %.0f, max %.0f, %d runs)\n", label, m, v[1], v[NR], NR
        }'
}

run_series "plaintext"
if [[ -n $pipeline ]]; then
    run_series "plaintext pipelined x$pipeline" benches/pipeline.lua "$pipeline"
fi
