#!/usr/bin/env bash
# scripts/test.sh — the project's one test command (the README and .ci/run both call it).
#
# Installs what the black-box tests need when it is missing — curl, strace, redis-server and
# Chromium (Debian packages) and Python's `requests` (pip) — then runs `cargo test --workspace
# --all-targets --no-fail-fast` (every failure shows in one run; --workspace adds
# tools/loadbench's tests) and the doctests, passing any arguments through to the first:
#   scripts/test.sh            scripts/test.sh -- --nocapture
#   scripts/test.sh --test md5
# Quiet and fast when everything is already present; safe to run any number of times.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# apt-get as root, or through sudo when a developer runs this as themselves.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` only when something must actually be installed: it is the slow part.
    if ((apt_updated == 0)); then
        as_root apt-get update -qq >/dev/null
        apt_updated=1
    fi
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
# tests/syscalls.rs checks the server's own syscall count against strace's.
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-requests)
# tests/redis.rs starts its own redis-server (Debian's) on an ephemeral loopback port.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# tests/browser.rs runs Debian's Chromium from this path: a large package, installed once.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]}" >&2
    apt_install "${missing[@]}"
fi

if ! python3 -c 'import requests' >/dev/null 2>&1; then
    echo "test.sh: installing Python requests" >&2
    # pip first (the machine's python3 is a pyenv CPython); Debian's package for a system
    # python3 that refuses pip installs (PEP 668, "externally managed").
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install --quiet requests >/dev/null 2>&1 ||
        apt_install python3-requests
    python3 -c 'import requests' || {
        echo "test.sh: could not make Python 'requests' importable" >&2
        exit 1
    }
fi

# --workspace: the bench harness (tools/loadbench) has unit tests of its own; the root package
# alone is the default member, so without it they would never run.
cargo test --workspace --all-targets --no-fail-fast "$@"
# --all-targets leaves out doctests; the public API's examples must still compile.
if (($# == 0)); then
    cargo test --workspace --doc --quiet
fi
