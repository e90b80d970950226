#!/bin/sh
# scheduler_perf-style benchmark of navarch's scheduler core (in-process, no API
# server): 5,000 nodes, 1,000 init pods, 10,000 measured pods, plain and with
# required pod anti-affinity. Prints pods/s beside kube-scheduler's CI thresholds.
# Usage: bench/scheduler/run.sh [--nodes N] [--pods P] [--init I] [--mode all|plain|anti|anti-upstream]
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -q -p navarch-scheduler --example scheduler_perf
# Each mode in its own process so that peak RSS is per scenario.
if [ "$#" -gt 0 ]; then
    exec target/release/examples/scheduler_perf "$@"
fi
for mode in plain anti anti-upstream; do
    target/release/examples/scheduler_perf --mode "$mode"
done
