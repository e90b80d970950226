#!/usr/bin/env bash
# Agent memory (issue 3, "Speed"): RSS of the node agent alone, idle and with
# COUNT pods running, plus the per-container shims ("our own processes").
# Goal: agent RSS <= 40 MB, plus <= 1 MB per pod of our processes.
#
# The node runs as a separate `navarch agent` joined to a
# `navarch server --disable-agent`, so its RSS is its own. Needs root (real
# containers). Loopback only; bounded in time.
#
#   bench/agent-rss.sh            (COUNT=100 by default; SKIP_BUILD=1 uses the
#                                  existing target/release/navarch)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${COUNT:-100}"
TMP="$(mktemp -d /tmp/navarch-agent-rss.XXXXXX)"
SERVER_PID=""
AGENT_PID=""
BIN="$ROOT/target/release/navarch"
cleanup() {
    if [[ -n "$AGENT_PID" ]]; then kill -KILL "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
    # The containers outlive the agent: remove them, their mounts and cgroups.
    "$BIN" reset --data-dir "$TMP/agent" >/dev/null 2>&1 || true
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; sleep 1; kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    for m in $(awk -v t="$TMP" '$2 ~ "^"t {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$TMP" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
kc() { KUBECONFIG="$TMP/server/kubeconfig" kubectl "$@"; }

scripts/setup.sh >/dev/null
scripts/build-test-image.sh >/dev/null
if [[ "${SKIP_BUILD:-0}" == "0" ]]; then
    cargo build --release -q -p navarch --bin navarch
fi

PORT=$(free_port)
APORT=$(free_port)
mkdir -p "$TMP/server" "$TMP/agent/images"
cp target/test-images/busybox.tar "$TMP/agent/images/"
"$BIN" server --data-dir "$TMP/server" --https-port "$PORT" --bind-address 127.0.0.1 \
    --disable-agent --log warn 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 300); do
    [[ -s "$TMP/server/node-token" ]] && kc get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.2
done
"$BIN" agent --server "https://127.0.0.1:$PORT" --token "$(cat "$TMP/server/node-token")" \
    --node-name rss-bench --agent-port "$APORT" --pod-network=none \
    --data-dir "$TMP/agent" --log warn 2>"$TMP/agent.log" &
AGENT_PID=$!
for _ in $(seq 300); do
    kc get node rss-bench -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break
    sleep 0.2
done
sleep 5
IDLE_KB=$(rss_kb "$AGENT_PID")

echo "machine $(nproc) cores, $(uname -r), runc $(runc --version | head -1 | awk '{print $3}')"
echo "agent_rss_mb_idle $(mb "$IDLE_KB")"

# COUNT pods, created at once, each one container sleeping.
for i in $(seq "$COUNT"); do
    cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: rss-$i, labels: {bench: rss}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: navarch.test/busybox:1.35
    imagePullPolicy: Never
    command: ["sleep", "3600"]
EOF
done >"$TMP/pods.yaml"
kc create -f "$TMP/pods.yaml" >/dev/null
deadline=$((SECONDS + 600))
while :; do
    running=$(kc get pods -l bench=rss --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l)
    [[ "$running" -ge "$COUNT" ]] && break
    if [[ $SECONDS -gt $deadline ]]; then echo "only $running/$COUNT pods Running after 600 s" >&2; exit 1; fi
    sleep 1
done
# Let the agent settle (status writes, relists, one resync).
sleep 20
AGENT_KB=$(rss_kb "$AGENT_PID")
AGENT_PSS_KB=$(pss_kb "$AGENT_PID")
PEAK_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT_PID/status")

# The shims of this agent's containers: `navarch internal-shim --bundle <TMP>/agent/...`.
SHIM_PIDS=$(pgrep -f "internal-shim --bundle $TMP/agent/" || true)
SHIMS=0; SHIM_RSS=0; SHIM_PSS=0
for p in $SHIM_PIDS; do
    SHIMS=$((SHIMS + 1))
    SHIM_RSS=$((SHIM_RSS + $(rss_kb "$p")))
    SHIM_PSS=$((SHIM_PSS + $(pss_kb "$p")))
done

echo "pods_running $COUNT"
echo "agent_rss_mb $(mb "$AGENT_KB")  goal<=40 $(awk -v k="$AGENT_KB" 'BEGIN{print (k/1024<=40)?"ok":"MISSED"}')"
echo "agent_pss_mb $(mb "$AGENT_PSS_KB")"
echo "agent_peak_rss_mb $(mb "$PEAK_KB")"
echo "agent_rss_growth_per_pod_kb $(awk -v a="$AGENT_KB" -v b="$IDLE_KB" -v n="$COUNT" 'BEGIN{printf "%.0f", (a-b)/n}')"
echo "shims $SHIMS"
echo "shim_rss_mb_total $(mb "$SHIM_RSS")  per_shim_kb $(awk -v t="$SHIM_RSS" -v n="$SHIMS" 'BEGIN{printf "%.0f", (n>0)?t/n:0}')"
echo "shim_pss_mb_total $(mb "$SHIM_PSS")  per_shim_kb $(awk -v t="$SHIM_PSS" -v n="$SHIMS" 'BEGIN{printf "%.0f", (n>0)?t/n:0}')"
# Goal: agent + all shims <= 40 MB + 1 MB per pod (RSS, which over-counts the
# pages the shims share with each other; PSS splits them).
awk -v a="$AGENT_KB" -v s="$SHIM_RSS" -v n="$COUNT" 'BEGIN{
    t=(a+s)/1024; g=40+n; printf "ours_rss_mb_total %.1f  goal<=%d %s\n", t, g, (t<=g)?"ok":"MISSED"}'
awk -v a="$AGENT_PSS_KB" -v s="$SHIM_PSS" -v n="$COUNT" 'BEGIN{
    t=(a+s)/1024; g=40+n; printf "ours_pss_mb_total %.1f  goal<=%d %s\n", t, g, (t<=g)?"ok":"MISSED"}'
# HOLD=SECONDS keeps everything up that long for a closer look (/proc/<pid>/smaps).
if [[ -n "${HOLD:-}" ]]; then echo "agent pid $AGENT_PID, holding ${HOLD}s"; sleep "$HOLD"; fi
