#!/usr/bin/env bash
# API server benchmark (issue 2, "Speed"): one command, bounded in time, loopback only.
#
#   bench/apiserver.sh
#
# Builds release binaries, starts `navarch server` on a temporary data dir on
# 127.0.0.1, runs the load generator scenarios (bench/loadgen), measures RSS,
# stops the server, runs the raw store baseline, and prints every figure as a
# `name value` line, goals annotated `goal>=X ok` / `goal<=X MISSED`.
#
# Knobs (environment): CLIENTS (32), PHASE_SECS (10), WATCHERS (1000),
# WATCH_RATE (100), WATCH_SECS (10), WATCH_CREATORS (16: connections the watch step's
# creates are spread over, each one create at a time), WATCHERS_PER_CONN (1: watches sharing
# one HTTP/2 connection, as an informer's watches share client-go's), WATCH_READER (epoll: one
# thread reads every watch, HTTP/1.1; tasks: a task per watch through hyper, HTTP/2 unless
# PROTO_FLAG=--http1), FILL_TOTAL (100000), FILL_MAX_SECS (120),
# PROTO_FLAG ("" = HTTP/2, "--http1" = HTTP/1.1 keep-alive), SKIP_BUILD (0; 1 = use the built binaries),
# SERVER_ARGS (more `navarch server` flags, e.g. "--disable-scheduler --disable-controllers" for the
# API server alone: then each pod makes one watch event, not two),
# NAVARCH / LOADGEN (binaries to run; default target/release/{navarch,loadgen}: point them
# at copies to compare builds while others rebuild the shared target/),
# PHASES ("create get watch watchh2 floor fill store": the steps to run, e.g. PHASES=watch
# for the watch fan-out alone, PHASES="fill" for the memory figure alone; get needs create;
# watchh2 is the watch step over HTTP/2 with a task per watch; floor is the watch step's
# baseline, below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLIENTS="${CLIENTS:-32}"
PHASE_SECS="${PHASE_SECS:-10}"
WATCHERS="${WATCHERS:-1000}"
WATCH_RATE="${WATCH_RATE:-100}"
WATCH_SECS="${WATCH_SECS:-10}"
# Enough creators to hold WATCH_RATE while the fan-out keeps the server busy: with
# 4, each create had to finish within 40 ms on average, and a loaded server
# answered more slowly, so fewer pods than asked were created.
WATCH_CREATORS="${WATCH_CREATORS:-16}"
WATCHERS_PER_CONN="${WATCHERS_PER_CONN:-1}"
WATCH_READER="${WATCH_READER:-epoll}"
read -ra SERVER_EXTRA <<<"${SERVER_ARGS:-}"
FILL_TOTAL="${FILL_TOTAL:-100000}"
FILL_MAX_SECS="${FILL_MAX_SECS:-120}"
PROTO_FLAG="${PROTO_FLAG:-}"
PHASES=" ${PHASES:-create get watch watchh2 floor fill store} "
phase() { [[ "$PHASES" == *" $1 "* ]]; }

TMP="$(mktemp -d /tmp/navarch-bench.XXXXXX)"
RESULTS="$TMP/results"
SERVER_PID=""
: >"$RESULTS"

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

log() { echo "# $*" >&2; }
record() { echo "$1 $2" | tee -a "$RESULTS"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# RSS split (MB): anonymous (heap, stacks) and file-backed (mapped binary, libraries).
rss_split() { awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {printf "%.1f %.1f", a/1024, f/1024}' "/proc/$1/status"; }
record_rss() {
    local split
    record "$1" "$(awk -v k="$(rss_kb "$SERVER_PID")" 'BEGIN {printf "%.1f", k/1024}')"
    split="$(rss_split "$SERVER_PID")"
    record "$1_anon" "${split% *}"
    record "$1_file" "${split#* }"
}
# CPU time (user + system, clock ticks) and write syscalls of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
write_calls() { awk '/^syscw:/ {print $2}' "/proc/$1/io"; }

# Ulimit: 1,000 watch connections on each side.
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

if [[ "${SKIP_BUILD:-0}" == "0" ]]; then
    log "building release binaries"
    cargo build --release -q -p navarch -p navarch-loadgen
    cargo build --release -q -p navarch-store --example store_bench
fi
NAVARCH="${NAVARCH:-$ROOT/target/release/navarch}"
LOADGEN="${LOADGEN:-$ROOT/target/release/loadgen}"
STORE_BENCH="$ROOT/target/release/examples/store_bench"
WATCHFLOOR="${WATCHFLOOR:-$(dirname "$LOADGEN")/watchfloor}"

# A free loopback port.
PORT=""
for _ in $(seq 50); do
    # Below the ephemeral range (32768-60999): an outgoing connection can hold any port in it.
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[[ -n "$PORT" ]] || { echo "no free port" >&2; exit 1; }
ADDR="127.0.0.1:$PORT"
DATA="$TMP/data"

log "starting navarch server on https://$ADDR (data dir $DATA)"
# The control plane alone (API server, controllers, scheduler): the pods this
# benchmark creates are objects, not containers (bench/podstart.sh runs those).
"$NAVARCH" server --data-dir "$DATA" --https-port "$PORT" --bind-address 127.0.0.1 \
    --disable-agent --log warn "${SERVER_EXTRA[@]}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

LG=("$LOADGEN" --addr "$ADDR" --pki "$DATA/pki")
[[ -n "$PROTO_FLAG" ]] && LG+=("$PROTO_FLAG")

ready=""
for _ in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; echo "server died" >&2; exit 1; }
    if [[ -f "$DATA/pki/admin.key" ]] && grep -q "ready" "$TMP/server.log" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
[[ -n "$ready" ]] || { cat "$TMP/server.log" >&2; echo "server not ready after 30 s" >&2; exit 1; }

sleep 2
record_rss server_rss_idle_mb

# Run one loadgen command with a time bound, appending its figures.
lg() {
    local bound=$1; shift
    timeout --kill-after=5 "$bound" "${LG[@]}" "$@" | tee -a "$RESULTS"
}
val() { awk -v k="$1" '$1 == k {v = $2} END {print v}' "$RESULTS"; }
# record_ratio NAME A B [DECIMALS]: record NAME = A / B (figures already recorded), if both are.
record_ratio() {
    local a b
    a="$(val "$2")"
    b="$(val "$3")"
    [[ -n "$a" && -n "$b" ]] || return 0
    record "$1" "$(awk -v a="$a" -v b="$b" -v f="%.${4:-2}f" 'BEGIN {if (b > 0) printf f, a/b; else print "nan"}')"
}

lg 20 namespace bench
lg 20 namespace bench-watch
lg 20 namespace bench-watch-h2

CREATED=0
if phase create; then
    log "create: $CLIENTS clients, ${PHASE_SECS}s, ~500 B configmaps"
    lg $((PHASE_SECS + 30)) crud --op create --clients "$CLIENTS" --duration-secs "$PHASE_SECS" \
        --namespace bench --prefix cm- --label api_create
    CREATED="$(val api_create_ok)"
fi

if phase get && ((CREATED > 0)); then
    log "get: $CLIENTS clients, ${PHASE_SECS}s over $CREATED configmaps"
    lg $((PHASE_SECS + 30)) crud --op get --clients "$CLIENTS" --duration-secs "$PHASE_SECS" \
        --namespace bench --prefix cm- --existing "$CREATED" --label api_get
fi

# watch_step LABEL READER [PROTO]: the watch fan-out, its figures named LABEL_*.
watch_step() {
    local label=$1 reader=$2 proto=${3:-}
    log "watch ($label): $WATCHERS watches ($reader reader${proto:+, $proto}), $WATCH_RATE pods/s for ${WATCH_SECS}s"
    cpu0="$(cpu_ticks "$SERVER_PID")"
    writes0="$(write_calls "$SERVER_PID")"
    timeout --kill-after=5 $((WATCH_SECS + 90)) "${LG[@]}" ${proto:+"$proto"} watch \
        --watchers "$WATCHERS" --rate "$WATCH_RATE" \
        --creators "$WATCH_CREATORS" --watchers-per-conn "$WATCHERS_PER_CONN" \
        --reader "$reader" --duration-secs "$WATCH_SECS" \
        --namespace "bench-${label//_/-}" --prefix bw- | sed "s/^watch_/${label}_/" | tee -a "$RESULTS"
    # Server CPU seconds and write(v) calls over the whole watch step (opening
    # the watches, the creates, the fan-out): one write per event and watcher
    # when idle, fewer when a busy server joins waiting events.
    record "${label}_server_cpu_s" "$(awk -v a="$cpu0" -v b="$(cpu_ticks "$SERVER_PID")" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b - a) / hz}')"
    record "${label}_server_write_calls" "$(( $(write_calls "$SERVER_PID") - writes0 ))"
    # What the step leaves behind once the watchers are gone and the server is idle.
    sleep 2
    record_rss "server_rss_after_${label}_mb"
}

# The goal's figures: HTTP/1.1 watches (served by the watch hub thread), read
# by one thread (WATCH_READER=epoll), so that the reader's own scheduling on
# the shared cores stays out of the delays.
if phase watch; then
    watch_step watch "$WATCH_READER"
fi

REMAINING=$((FILL_TOTAL - CREATED))
if ! phase fill; then
    REMAINING=0
fi
if ((REMAINING > 0)); then
    log "fill: $REMAINING more configmaps (to $FILL_TOTAL), at most ${FILL_MAX_SECS}s"
    lg $((FILL_MAX_SECS + 30)) crud --op create --clients "$CLIENTS" --duration-secs "$FILL_MAX_SECS" \
        --max-requests "$REMAINING" --start-index "$CREATED" --namespace bench --prefix cm- --label fill
    TOTAL=$((CREATED + $(val fill_ok)))
else
    TOTAL=$CREATED
fi
if phase fill; then
    record configmaps_stored "$TOTAL"
    sleep 2
    record_rss server_rss_full_mb
fi

# The watch step over HTTP/2 with a task per watch (what Go clients speak;
# hyper writes these watches): reported beside the goal's figures. After the
# fill, so that the memory figure is the configmaps' alone.
if phase watchh2; then
    watch_step watch_h2 tasks
fi

log "stopping server"
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
SERVER_PID=""

if phase store; then
    log "store baseline (store_bench, 32 writers x 300 puts)"
    timeout --kill-after=5 120 "$STORE_BENCH" "$TMP/store-bench" --writers 32 --puts 300 | tee -a "$RESULTS"
    record_ratio api_create_to_store_put_ratio api_create_per_sec store_put_per_sec 3
fi

if phase floor; then
    # The watch step's baseline: the same fan-out (watches, event rate, about a pod
    # event's size, the same one-thread readers) from a bare TLS server with no API
    # server behind it, on the same two cores, with navarch stopped. floor_1x sends
    # WATCH_RATE events/s (as many as the API server alone delivers: one per pod),
    # floor_2x twice that (the default server also delivers the scheduler's status
    # patch of each pod).
    for x in 1 2; do
        log "watch baseline (watchfloor), $((x * WATCH_RATE)) events/s to $WATCHERS watches"
        timeout --kill-after=5 $((WATCH_SECS + 150)) "$WATCHFLOOR" --watchers "$WATCHERS" \
            --rate $((x * WATCH_RATE)) --duration-secs "$WATCH_SECS" --label "floor_${x}x" | tee -a "$RESULTS"
    done
    record_ratio watch_delay_max_to_floor_1x_ratio watch_delay_max_ms floor_1x_delay_max_ms
    record_ratio watch_server_cpu_to_floor_1x_ratio watch_server_cpu_s floor_1x_server_cpu_s
fi

# Summary with goals.
echo
echo "== summary ($(nproc) CPUs, $(uname -r), HTTPS ${PROTO_FLAG:-h2}, embedded store) =="
awk -v fill_total="$FILL_TOTAL" '
BEGIN {
    goal["api_create_per_sec"] = ">=3000"
    goal["api_get_per_sec"] = ">=20000"
    goal["api_create_p99_ms"] = "<=20"
    goal["watch_delay_p99_ms"] = "<=50"
    goal["watch_delay_max_ms"] = "<=50"
    goal["watch_missing_events"] = "<=0"
    goal["watch_create_per_sec"] = ">=95"
    goal["server_rss_idle_mb"] = "<=30"
    goal["server_rss_full_mb"] = "<=150"
    goal["configmaps_stored"] = ">=" fill_total
}
{
    line = $1 " " $2
    if ($1 in goal) {
        g = goal[$1]; op = substr(g, 1, 2); t = substr(g, 3) + 0; v = $2 + 0
        ok = (op == ">=") ? (v >= t) : (v <= t)
        line = line "  goal" g " " (ok ? "ok" : "MISSED")
    }
    print line
}' "$RESULTS"
