#!/usr/bin/env bash
# Service path overhead (issue 5, "Speed": <= 10% throughput loss through a
# ClusterIP against the pod IP directly). Starts `navarch server` with its local
# node and the (default) bridge pod network, runs one busybox httpd pod behind a
# ClusterIP Service, and drives both addresses from the host with wrk, in
# alternating rounds in the same invocation (the same machine state for both).
# busybox httpd closes every connection, so every request is a new TCP
# connection through the nftables DNAT: the proxy's worst case.
# Needs root. Loopback/bridge only; bounded in time.
#
#   bench/service.sh     (ROUNDS=7, SECS=3, CONNS=16; SKIP_BUILD=1 reuses target/release)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-7}"; SECS="${SECS:-3}"; CONNS="${CONNS:-16}"
TMP="$(mktemp -d /tmp/navarch-svc.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; sleep 1; kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    target/release/navarch reset --data-dir "$TMP/data" >/dev/null 2>&1 || true
    for m in $(awk -v t="$TMP" '$2 ~ "^"t {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$TMP" 2>/dev/null || true
}
trap cleanup EXIT

scripts/setup.sh >/dev/null
scripts/build-test-image.sh >/dev/null
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
if [[ "${SKIP_BUILD:-0}" == "0" ]]; then
    cargo build --release -q -p navarch --bins
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
APORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/data/images"
cp target/test-images/busybox.tar "$TMP/data/images/"
target/release/navarch server --data-dir "$TMP/data" --https-port "$PORT" --bind-address 127.0.0.1 \
    --agent-port "$APORT" --log warn 2>"$TMP/server.log" &
SERVER_PID=$!
export KUBECONFIG="$TMP/data/kubeconfig"
for _ in $(seq 150); do
    if kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$TMP/server.log"; exit 1; fi
    sleep 0.2
done
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: navarch.test/busybox:1.35
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www"]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
YAML
kubectl wait --for=condition=Ready pod/web --timeout=60s >/dev/null
POD_IP=$(kubectl get pod web -o jsonpath='{.status.podIP}')
SVC_IP=$(kubectl get svc web -o jsonpath='{.spec.clusterIP}')
for _ in $(seq 50); do curl -fs "http://$SVC_IP/" >/dev/null && break; sleep 0.2; done
echo "machine $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pod $POD_IP service $SVC_IP; wrk -t2 -c$CONNS -d${SECS}s, $ROUNDS alternating rounds"

rps() { wrk -t2 -c"$CONNS" -d"${SECS}s" "http://$1/" | awk '/Requests\/sec/ {print $2}'; }
: >"$TMP/pod"; : >"$TMP/svc"; : >"$TMP/loss"
# Each round measures both paths back to back, in alternating order (so a drift in
# the machine's load does not favour one path), and yields one paired loss figure.
for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then p=$(rps "$POD_IP"); s=$(rps "$SVC_IP"); else s=$(rps "$SVC_IP"); p=$(rps "$POD_IP"); fi
    l=$(awk -v p="$p" -v s="$s" 'BEGIN {printf "%.1f", (p - s) / p * 100}')
    echo "round $r: pod_ip ${p} req/s, cluster_ip ${s} req/s, loss ${l}%"
    echo "$p" >>"$TMP/pod"; echo "$s" >>"$TMP/svc"; echo "$l" >>"$TMP/loss"
done
median() { sort -g "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
best() { sort -g "$1" | tail -1; }
P=$(median "$TMP/pod"); S=$(median "$TMP/svc"); PB=$(best "$TMP/pod"); SB=$(best "$TMP/svc")
L=$(median "$TMP/loss")
echo "pod_ip_rps_median $P  best $PB"
echo "cluster_ip_rps_median $S  best $SB"
# The median of the paired per-round losses is the figure against the goal; the
# ratio of the best rounds is printed beside it.
awk -v l="$L" -v pb="$PB" -v sb="$SB" 'BEGIN {
    printf "service_path_loss_pct_best %.1f\n", (pb - sb) / pb * 100
    printf "service_path_loss_pct_paired_median %.1f  goal<=10 %s\n", l, (l <= 10 ? "ok" : "MISSED")
}'
