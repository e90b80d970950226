#!/usr/bin/env bash
# Exec round trip (issue 5, "Speed": exec round trip <= 50 ms).
# Starts `navarch server` with its local node on a temporary data dir, runs a
# busybox pod, then times, in the same invocation:
#   - exec-rtt (official Rust client `kube`, WebSocket): exec of `true` to its
#     exit status, and a line echoed through an interactive `cat` session;
#   - `kubectl exec rtt -- true` (whole command, including kubectl's start);
#   - bare `runc exec` of `true` in the same container (the floor).
# Needs root. Loopback only; bounded in time.
#
#   bench/exec.sh            (COUNT=100 by default; SKIP_BUILD=1 reuses target/release)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${COUNT:-100}"
TMP="$(mktemp -d /tmp/navarch-exec.XXXXXX)"
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
if [[ "${SKIP_BUILD:-0}" == "0" ]]; then
    cargo build --release -q -p navarch --bins --example exec-rtt
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
APORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/data/images"
cp target/test-images/busybox.tar "$TMP/data/images/"
# exec does not need the pod network; `none` lets this run beside a bridge node
target/release/navarch server --data-dir "$TMP/data" --https-port "$PORT" --bind-address 127.0.0.1 \
    --agent-port "$APORT" --pod-network none --log warn 2>"$TMP/server.log" &
SERVER_PID=$!
export KUBECONFIG="$TMP/data/kubeconfig"
for _ in $(seq 150); do
    if kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then break; fi
    sleep 0.2
done
kubectl run rtt --image=navarch.test/busybox:1.35 --restart=Never -- sleep 3600 >/dev/null
kubectl wait --for=condition=Ready pod/rtt --timeout=60s >/dev/null
echo "machine $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

timeout 300 target/release/examples/exec-rtt --kubeconfig "$KUBECONFIG" --pod rtt --count "$COUNT" | tee "$TMP/rtt"

ms_stats() { # name file-of-microseconds
    sort -n "$2" >"$2.sorted"
    local n; n=$(wc -l <"$2.sorted")
    awk -v n="$n" -v name="$1" '
        {v[NR]=$1}
        END {
            p50=v[int((n-1)*0.5+0.5)+1]; p99=v[int((n-1)*0.99+0.5)+1];
            printf "%s_p50_ms %.2f\n%s_p99_ms %.2f\n", name, p50/1000, name, p99/1000
        }' "$2.sorted"
}

: >"$TMP/kubectl.us"
failures=0
for _ in $(seq "$COUNT"); do
    s=$(date +%s%N)
    if kubectl exec rtt -- true 2>>"$TMP/kubectl.err"; then
        e=$(date +%s%N); echo $(( (e - s) / 1000 )) >>"$TMP/kubectl.us"
    else
        failures=$((failures + 1))
    fi
done
ms_stats kubectl_exec_true "$TMP/kubectl.us" | tee -a "$TMP/rtt"
echo "kubectl_exec_failures $failures of $COUNT"
if [[ -s "$TMP/kubectl.err" ]]; then sed 's/^/  kubectl: /' "$TMP/kubectl.err" | sort | uniq -c | head -5; fi

CID=$(kubectl get pod rtt -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|.*://||')
RUNC_ROOT=$(dirname "$(find /run/navarch -maxdepth 4 -type d -name "$CID" -path '*/runc/*' | head -1)")
: >"$TMP/runc.us"
for _ in $(seq "$COUNT"); do
    s=$(date +%s%N); runc --root "$RUNC_ROOT" exec "$CID" true; e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) >>"$TMP/runc.us"
done
ms_stats runc_exec_true "$TMP/runc.us" | tee -a "$TMP/rtt"

awk '
    /^exec_true_p50_ms/ {a=$2} /^runc_exec_true_p50_ms/ {r=$2} /^exec_echo_p99_ms/ {e=$2} /^exec_true_p99_ms/ {t=$2}
    END {
        printf "ratio_exec_true_p50_over_runc_exec_p50 %.2f\n", a/r
        printf "exec_true_p99_ms %s  goal<=50 %s\n", t, (t<=50?"ok":"MISSED")
        printf "exec_echo_p99_ms %s  goal<=50 %s\n", e, (e<=50?"ok":"MISSED")
    }' "$TMP/rtt"
