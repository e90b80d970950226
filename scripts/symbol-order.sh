#!/usr/bin/env bash
# Record which functions `navarch server` runs while it starts and idles, and write
# them to crates/navarch/link/symbol-order.txt.gz: the release link places them first
# and together (see crates/navarch/build.rs and docs/binary-layout.md).
#
#   scripts/symbol-order.sh            # as root: control plane, then server with its node
#
# Builds the release binary, runs it under valgrind's callgrind (which sees every
# function executed, however briefly, unlike a sampling profiler): first the control
# plane alone (`--disable-agent`, the set-up of bench/apiserver.sh's idle figure), then
# the default server with its local node. Each run waits for "ready", idles IDLE_SECS
# (default 40) and is stopped. Functions of the first run come first in the list.
# Without root, only the first run is done (the node needs root). Rerun it after large
# changes or a toolchain update (a stale list only loses the benefit; it never breaks
# the build) and commit the new list.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECS="${IDLE_SECS:-40}"
PORT="${PORT:-17600}"
OUT=crates/navarch/link/symbol-order.txt.gz

if ! command -v valgrind >/dev/null 2>&1; then
    echo "symbol-order: installing valgrind with apt-get"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi

cargo build --release -p navarch
TMP="$(mktemp -d /tmp/navarch-order.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
# A copy: a rebuild while valgrind runs must not change what it reads.
cp target/release/navarch "$TMP/navarch"

# run NAME [server args...]: one traced start + idle + stop.
run() {
    local name="$1"; shift
    local data="$TMP/$name-data" log="$TMP/$name.log"
    echo "symbol-order: tracing '$name' (start, ${IDLE_SECS} s idle, stop)"
    valgrind --tool=callgrind --demangle=no --dump-instr=no \
        --callgrind-out-file="$TMP/$name.cg.%p" \
        "$TMP/navarch" server --data-dir "$data" --https-port "$PORT" \
        --bind-address 127.0.0.1 --log info "$@" >"$log" 2>&1 &
    local pid=$!
    local i
    for i in $(seq 1 600); do
        grep -q "server ready" "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "symbol-order: server died" >&2; exit 1; }
        sleep 1
    done
    grep -q "server ready" "$log" || { cat "$log" >&2; echo "symbol-order: not ready after 600 s" >&2; exit 1; }
    sleep "$IDLE_SECS"
    kill -TERM "$pid"
    wait "$pid" || true
    "$TMP/navarch" reset --data-dir "$data" >/dev/null 2>&1 || true
}

run control-plane --disable-agent
if [ "$(id -u)" -eq 0 ]; then
    run with-node
else
    echo "symbol-order: not root, so the server with its node was not traced"
fi

# Function names in first-seen order (callgrind compresses names: `fn=(id) name` the
# first time, `fn=(id)` after), kept when they are the binary's own code.
nm --defined-only "$TMP/navarch" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$TMP/syms"
python3 - "$TMP/syms" "$TMP"/control-plane.cg.* $(ls "$TMP"/with-node.cg.* 2>/dev/null) >"$TMP/order" <<'EOF'
import re, sys
syms = set(open(sys.argv[1]).read().split())
seen, out = set(), []
pat = re.compile(r'^c?fn=\((\d+)\)(?: (.*))?$')
for path in sys.argv[2:]:
    names = {}
    for line in open(path, errors='replace'):
        m = pat.match(line.rstrip('\n'))
        if not m:
            continue
        if m.group(2):
            names[m.group(1)] = m.group(2)
        name = names.get(m.group(1))
        if name in syms and name not in seen:
            seen.add(name)
            out.append(name)
print('\n'.join(out))
EOF
gzip -9n <"$TMP/order" >"$OUT"
echo "symbol-order: $(wc -l <"$TMP/order") functions written to $OUT"
