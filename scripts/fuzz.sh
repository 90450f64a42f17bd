#!/usr/bin/env bash
# scripts/fuzz.sh — coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the request-head path,
# the body decoders and one whole connection; see fuzz/README.md for targets and invariants.
#
#   scripts/fuzz.sh [--seconds N] [target...] [-- libFuzzer flags...]
#   scripts/fuzz.sh                        every target, 60 s each
#   scripts/fuzz.sh --seconds 600 head     ten minutes of `head`
#   scripts/fuzz.sh connection -- -max_len=20000
#
# Installs the nightly toolchain and cargo-fuzz when missing. Targets run one after another
# (one core each: the machine is shared). Each grows its corpus in fuzz/corpus/TARGET (not
# committed) from the seeds in fuzz/seeds/TARGET (committed); libFuzzer keeps any crashing,
# hanging (> 10 s) or memory-hungry input in fuzz/artifacts/TARGET/. Prints one summary line
# per target and exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

seconds=60
targets=()
extra=()
while (($#)); do
    case $1 in
    --seconds)
        seconds=${2:?--seconds needs a number}
        shift 2
        ;;
    --seconds=*)
        seconds=${1#--seconds=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    -*)
        echo "fuzz.sh: unknown option $1" >&2
        usage >&2
        exit 2
        ;;
    *)
        targets+=("$1")
        shift
        ;;
    esac
done
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: --seconds wants a positive whole number, not '$seconds'" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: installing the nightly toolchain (libFuzzer's instrumentation needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

known=$(cd fuzz && cargo +nightly fuzz list)
if ((${#targets[@]} == 0)); then
    mapfile -t targets <<<"$known"
fi
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$known"; then
        echo "fuzz.sh: no target '$target'; there are: $(echo $known)" >&2
        exit 2
    fi
done

# No sanitizer: the code under test is safe Rust (its only `unsafe` is in src/sys.rs, which
# no target reaches), and ASan would halve the executions for nothing. Debug assertions and
# overflow checks stay on (fuzz/Cargo.toml).
fuzz() {
    cargo +nightly fuzz "$1" --sanitizer none "${@:2}"
}
(cd fuzz && fuzz build)

summaries=()
failed=0
for target in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$target
    mkdir -p "$corpus" "$root/fuzz/artifacts/$target"
    log=$root/fuzz/artifacts/$target/last-run.log
    echo "fuzz.sh: $target for ${seconds}s (log: ${log#"$root"/})" >&2
    status=0
    # The first corpus directory is where libFuzzer adds what it finds; the seeds are read
    # only. -close_fd_mask=2 silences the target's stderr (the server logs every refused
    # request: gigabytes an hour), not libFuzzer's; a failure is replayed below to show it.
    (cd fuzz && fuzz run "$target" "$corpus" "$root/fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -close_fd_mask=2 "${extra[@]}") >"$log" 2>&1 || status=$?
    progress=$(grep -E '^#[0-9]+.*cov:' "$log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    files=$(find "$corpus" -type f | wc -l)
    if ((status == 0)); then
        verdict=ok
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        verdict="FAILED (exit $status): see ${log#"$root"/}"
        if [[ -n $artifact ]]; then
            verdict+="; input kept in ${artifact#"$root"/}"
            echo "fuzz.sh: replaying ${artifact#"$root"/} to show why:" >&2
            (cd fuzz && fuzz run "$target" "$artifact") 2>&1 |
                grep -E -A 3 '^thread .* panicked|ERROR: libFuzzer' | head -n 20 >&2 || true
            echo "fuzz.sh: minimise with: (cd fuzz && cargo +nightly fuzz tmin -s none $target ${artifact#"$root"/fuzz/})" >&2
        fi
    fi
    summaries+=("$target: ${seconds}s, ${runs:-?} runs, corpus $files files; last: ${progress:-none}; $verdict")
done
printf '%s\n' "${summaries[@]}"
exit "$failed"
