#!/usr/bin/env bash
# End-to-end scheduler benchmark with hollow nodes (issue 4, "Speed").
#
#   bench/hollow/run.sh
#
# Builds release binaries, starts `navarch server --disable-agent` on a
# temporary data dir on 127.0.0.1, and runs the `hollow` driver
# (bench/loadgen/src/bin/hollow.rs): NODES hollow nodes (Node objects with
# Leases renewed by the driver), PODS bare pods with requests (plain, then with
# required pod anti-affinity), then a Deployment of REPLICAS replicas; the
# driver is every hollow kubelet (one pod watch, status patches to Running and
# Ready). Prints `name value` lines, goals annotated `goal>=X ok|MISSED`.
#
# Knobs (environment): NODES (5000), PODS (10000), REPLICAS (1000),
# PHASES (plain,anti,deploy), CONTROLLERS (1; 0 runs the server with
# --disable-controllers, as upstream's scheduler_perf runs no controller manager,
# and drops the deploy phase), SCHEDULER (separate: the scheduler runs as its own
# process, `crates/scheduler/examples/standalone.rs`, so its RSS is measured
# alone; inproc: inside `navarch server` as shipped, RSS is the whole server's),
# LEASE_RENEW_SECS (20), PHASE_TIMEOUT_SECS (120), SKIP_BUILD (0), KEEP (0: 1
# keeps the temp dir with the server log), PERF (0: 1 records `perf` CPU profiles
# of the server and scheduler into the temp dir; implies KEEP=1; PERF_ARGS, default
# `-F 199 -g`, e.g. `-F 49 --call-graph dwarf`), BIN_DIR (unset: a directory holding
# navarch, hollow and standalone binaries to run instead of target/release's; skips
# the build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

NODES="${NODES:-5000}"
PODS="${PODS:-10000}"
REPLICAS="${REPLICAS:-1000}"
CONTROLLERS="${CONTROLLERS:-1}"
if [[ "$CONTROLLERS" == "1" ]]; then
    PHASES="${PHASES:-plain,anti,deploy}"
else
    PHASES="${PHASES:-plain,anti}" # a Deployment needs the controllers
fi
SCHEDULER="${SCHEDULER:-separate}"
LEASE_RENEW_SECS="${LEASE_RENEW_SECS:-20}"
PHASE_TIMEOUT_SECS="${PHASE_TIMEOUT_SECS:-120}"

TMP="$(mktemp -d /tmp/navarch-hollow.XXXXXX)"
RESULTS="$TMP/results"
SERVER_PID=""
SCHED_PID=""
: >"$RESULTS"

stop() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$SCHED_PID"
    stop "$SERVER_PID"
    if [[ "${KEEP:-0}" == "1" || "${PERF:-0}" == "1" ]]; then echo "# kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

log() { echo "# $*" >&2; }

ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

if [[ "${SKIP_BUILD:-0}" == "0" && -z "${BIN_DIR:-}" ]]; then
    log "building release binaries"
    cargo build --release -q -p navarch -p navarch-loadgen
    cargo build --release -q -p navarch-scheduler --example standalone
fi
# BIN_DIR: take navarch, hollow and standalone from one directory instead (e.g. a
# copy of an earlier build, to compare two builds under the same conditions).
if [[ -n "${BIN_DIR:-}" ]]; then
    NAVARCH="$BIN_DIR/navarch"; HOLLOW="$BIN_DIR/hollow"; STANDALONE="$BIN_DIR/standalone"
else
    NAVARCH="$ROOT/target/release/navarch"
    HOLLOW="$ROOT/target/release/hollow"
    STANDALONE="$ROOT/target/release/examples/standalone"
fi

PORT=""
for _ in $(seq 50); do
    # Below the ephemeral range (32768-60999): an outgoing connection can hold any port in it.
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[[ -n "$PORT" ]] || { echo "no free port" >&2; exit 1; }
ADDR="127.0.0.1:$PORT"
DATA="$TMP/data"

SERVER_ARGS=(server --data-dir "$DATA" --https-port "$PORT" --bind-address 127.0.0.1
    --disable-agent --log warn)
# Room for a /24 podCIDR per hollow node (the default 10.42.0.0/16 has 256):
# node IPAM allocates them while the nodes register.
if "$NAVARCH" server --help 2>/dev/null | grep -q -- --cluster-cidr; then
    SERVER_ARGS+=(--cluster-cidr "${CLUSTER_CIDR:-10.128.0.0/9}" --node-cidr-mask-size 24)
fi
WAIT_ARGS=(--wait-pod-cidrs)
if [[ "$CONTROLLERS" != "1" ]]; then
    # scheduler_perf's setup: API server and scheduler only.
    SERVER_ARGS+=(--disable-controllers)
    WAIT_ARGS=()
fi
case "$SCHEDULER" in
    separate) SERVER_ARGS+=(--disable-scheduler) ;;
    inproc) ;;
    *) echo "SCHEDULER must be separate or inproc" >&2; exit 1 ;;
esac

log "starting navarch server on https://$ADDR (scheduler: $SCHEDULER)"
"$NAVARCH" "${SERVER_ARGS[@]}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; echo "server died" >&2; exit 1; }
    if [[ -f "$DATA/kubeconfig" ]] && grep -q "ready" "$TMP/server.log" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
[[ -n "$ready" ]] || { cat "$TMP/server.log" >&2; echo "server not ready after 30 s" >&2; exit 1; }

RSS_ARGS=(--rss "server:$SERVER_PID")
if [[ "$SCHEDULER" == "separate" ]]; then
    MIMALLOC_ARENA_EAGER_COMMIT=0 "$STANDALONE" --kubeconfig "$DATA/kubeconfig" >"$TMP/scheduler.log" 2>&1 &
    SCHED_PID=$!
    RSS_ARGS+=(--rss "scheduler:$SCHED_PID")
fi
sleep 1

cpu_secs() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
SERVER_CPU0="$(cpu_secs "$SERVER_PID")"

PERF_PIDS=()
if [[ "${PERF:-0}" == "1" ]]; then
    # CPU profiles of the server (and scheduler) over the whole driver run.
    perf record -e cpu-clock ${PERF_ARGS:--F 199 -g} -p "$SERVER_PID" -o "$TMP/server.perf" >/dev/null 2>&1 &
    PERF_PIDS+=($!)
    if [[ -n "$SCHED_PID" ]]; then
        perf record -e cpu-clock ${PERF_ARGS:--F 199 -g} -p "$SCHED_PID" -o "$TMP/scheduler.perf" >/dev/null 2>&1 &
        PERF_PIDS+=($!)
    fi
fi

BOUND=$((PHASE_TIMEOUT_SECS * 4 + 300))
set +e
timeout --kill-after=5 "$BOUND" "$HOLLOW" --addr "$ADDR" --pki "$DATA/pki" \
    --nodes "$NODES" --pods "$PODS" --replicas "$REPLICAS" --phases "$PHASES" \
    --lease-renew-secs "$LEASE_RENEW_SECS" --phase-timeout-secs "$PHASE_TIMEOUT_SECS" \
    "${RSS_ARGS[@]}" "${WAIT_ARGS[@]}" | tee -a "$RESULTS"
DRIVER_RC=${PIPESTATUS[0]}
set -e
echo "driver_exit_status $DRIVER_RC" | tee -a "$RESULTS"
for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done

echo "server_cpu_secs $(awk -v a="$(cpu_secs "$SERVER_PID")" -v b="$SERVER_CPU0" 'BEGIN {printf "%.1f", a - b}')" | tee -a "$RESULTS"
if [[ -n "$SCHED_PID" ]]; then
    echo "scheduler_cpu_secs $(cpu_secs "$SCHED_PID")" | tee -a "$RESULTS"
fi
if grep -qiE "panic|error" "$TMP/server.log"; then
    log "server log has errors (first 5):"
    grep -iE "panic|error" "$TMP/server.log" | head -5 >&2
fi

echo
echo "== summary ($(nproc) CPUs, $(uname -r), $NODES hollow nodes, $PODS pods, scheduler $SCHEDULER, controllers $CONTROLLERS) =="
awk -v pods="$PODS" -v replicas="$REPLICAS" -v nodes="$NODES" '
BEGIN {
    goal["plain_bound_per_sec"] = ">=1000"
    goal["anti_bound_per_sec"] = ">=1000"
    goal["deploy_all_ready_secs"] = "<=10"
    goal["deploy_ready_replicas"] = ">=" replicas
    goal["plain_pods_bound"] = ">=" pods
    goal["anti_pods_bound"] = ">=" pods
    goal["nodes_registered"] = ">=" nodes
    goal["driver_exit_status"] = "<=0"
    goal["scheduler_rss_hwm_mb"] = "<=200"
}
{
    line = $1 " " $2
    if ($1 in goal) {
        g = goal[$1]; op = substr(g, 1, 2); t = substr(g, 3) + 0; v = $2 + 0
        ok = (op == ">=") ? (v >= t) : (v <= t)
        line = line "  goal" g " " (ok ? "ok" : "MISSED")
    }
    if ($1 ~ /_kube_scheduler_ref_per_sec$/) line = line "  (kube-scheduler scheduler_perf CI threshold at 5,000 nodes)"
    print line
}' "$RESULTS"
