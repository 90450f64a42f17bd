#!/usr/bin/env bash
# scripts/static-build.sh — build the fully static miohttpd binary and prove it works.
#
#   1. cargo build --release --target <host triple> with RUSTFLAGS=-C target-feature=+crt-static,
#      into its own target dir (target/static) so the normal target/ is not rebuilt each time;
#   2. checks the binary needs no shared library: no PT_INTERP program header, no DT_NEEDED
#      entry, and `file` / `ldd` agree;
#   3. starts it on 127.0.0.1:0, checks GET /plaintext and POST /md5 with curl, stops it by PID;
#   4. prints the path and size (bytes and KiB).
# Idempotent: a second run only re-checks (cargo has nothing to rebuild).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
[[ -e /usr/lib/x86_64-linux-gnu/libc.a || -e /usr/lib/libc.a ]] || need+=(libc6-dev)
if ((${#need[@]})); then
    echo "static-build: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

host=$(rustc -vV | sed -n 's/^host: //p')
target_dir=target/static
bin=$target_dir/$host/release/miohttpd

# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which must
# stay dynamic host programs.
echo "static-build: cargo build --release --target $host (crt-static) -> $bin"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$host" --target-dir "$target_dir" --bin miohttpd

fail() {
    echo "static-build: FAIL: $*" >&2
    exit 1
}

# --- no dynamic linking -------------------------------------------------------------------
if readelf -lW "$bin" | grep -q 'INTERP'; then
    fail "$bin has a PT_INTERP header (needs a dynamic loader)"
fi
if readelf -dW "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    fail "$bin has DT_NEEDED entries: $(readelf -dW "$bin" | grep '(NEEDED)' | tr -s ' ')"
fi
file_says=$(file -b "$bin")
case $file_says in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) fail "file says: $file_says" ;;
esac
# ldd exits non-zero on a static binary; only its words matter here.
ldd_says=$(ldd "$bin" 2>&1 || true)
case $ldd_says in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) fail "ldd says: $ldd_says" ;;
esac
echo "static-build: no PT_INTERP, no DT_NEEDED; file: $(grep -o 'stati[a-z-]* linked' <<<"$file_says"); ldd: $(head -1 <<<"$ldd_says" | sed 's/^[[:space:]]*//')"

# --- smoke test: does the static binary serve? --------------------------------------------
# shellcheck source=scripts/lib/server.sh
source scripts/lib/server.sh
trap server_stop EXIT
server_start "$bin" || fail "the static binary did not start"
url=$SERVER_URL

got=$(curl -sS --max-time 10 "$url/plaintext")
[[ $got == "Hello, World!" ]] || fail "GET /plaintext answered '$got'"

body='The quick brown fox jumps over the lazy dog'
want=9e107d9d372bb6826bd81d3542a419d6 # MD5 of $body (RFC 1321 test-suite style vector)
got=$(curl -sS --max-time 10 --data-binary "$body" -H 'Content-Type: application/octet-stream' "$url/md5")
got=${got//[$'\r\n ']/}
[[ $got == "$want" ]] || fail "POST /md5 answered '$got', want $want"
echo "static-build: served GET /plaintext and POST /md5 correctly on $url"

server_stop
trap - EXIT

size=$(stat -c %s "$bin")
echo "static-build: OK $bin"
echo "static-build: size $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1024 }') KiB)"
