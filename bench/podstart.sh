#!/usr/bin/env bash
# Pod start latency (issue 3, "Speed"): API create -> Running seen by a watch, 100
# pods one after another and 100 at once, with the busybox test image present;
# against a bare `runc run` of the same rootfs in the same invocation.
# Needs root (real containers). Loopback only; bounded in time.
#
#   bench/podstart.sh            (COUNT=100 by default)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${COUNT:-100}"
TMP="$(mktemp -d /tmp/navarch-podstart.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; sleep 1; kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    runc --root "$TMP/runc" list -q 2>/dev/null | xargs -r -n1 runc --root "$TMP/runc" delete -f 2>/dev/null || true
    for m in $(awk -v t="$TMP" '$2 ~ "^"t {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$TMP" 2>/dev/null || true
}
trap cleanup EXIT

scripts/setup.sh >/dev/null
scripts/build-test-image.sh >/dev/null
if [[ "${SKIP_BUILD:-0}" == "0" ]]; then
    cargo build --release -q -p navarch -p navarch-loadgen --bins
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
APORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/data/images"
cp target/test-images/busybox.tar "$TMP/data/images/"
target/release/navarch server --data-dir "$TMP/data" --https-port "$PORT" --bind-address 127.0.0.1 \
    --agent-port "$APORT" --log warn 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    if KUBECONFIG="$TMP/data/kubeconfig" kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then break; fi
    sleep 0.2
done
echo "machine $(nproc) cores, $(uname -r), runc $(runc --version | head -1 | awk '{print $3}')"
timeout 600 target/release/podstart --addr "127.0.0.1:$PORT" --pki "$TMP/data/pki" --count "$COUNT" | tee "$TMP/pods"
RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status)
echo "server_rss_mb_after $(awk -v k="$RSS_KB" 'BEGIN{printf "%.1f", k/1024}')"

# Baseline: bare runc run of the same rootfs (unpacked busybox), `true` each time.
mkdir -p "$TMP/bundle/rootfs/bin"
busybox_bin=$(command -v busybox || echo /bin/busybox)
cp "$busybox_bin" "$TMP/bundle/rootfs/bin/busybox"
ln -sf busybox "$TMP/bundle/rootfs/bin/true"; ln -sf busybox "$TMP/bundle/rootfs/bin/sh"
(cd "$TMP/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json)
: >"$TMP/runc.ms"
for i in $(seq "$COUNT"); do
    s=$(date +%s%N)
    runc --root "$TMP/runc" run --bundle "$TMP/bundle" "b$i" </dev/null >/dev/null 2>&1 || true
    e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) >>"$TMP/runc.ms"
done
sort -n "$TMP/runc.ms" >"$TMP/runc.sorted"
p50=$(awk -v n="$COUNT" 'NR==int((n+1)*0.5){printf "%.1f", $1/1000}' "$TMP/runc.sorted")
p99=$(awk -v n="$COUNT" 'NR==int(n*0.99+0.5){printf "%.1f", $1/1000}' "$TMP/runc.sorted")
echo "runc_run_p50_ms $p50"
echo "runc_run_p99_ms $p99"
seq50=$(awk '/pod_start_seq_p50_ms/ {print $2}' "$TMP/pods")
seq99=$(awk '/pod_start_seq_p99_ms/ {print $2}' "$TMP/pods")
awk -v a="$seq50" -v b="$p50" 'BEGIN{printf "ratio_pod_p50_over_runc_p50 %.2f  goal<=3 %s\n", a/b, (a/b<=3)?"ok":"MISSED"}'
awk -v a="$seq50" 'BEGIN{printf "pod_start_seq_p50_ms %s  goal<=150 %s\n", a, (a<=150)?"ok":"MISSED"}'
awk -v a="$seq99" 'BEGIN{printf "pod_start_seq_p99_ms %s  goal<=400 %s\n", a, (a<=400)?"ok":"MISSED"}'
