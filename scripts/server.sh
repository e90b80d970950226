#!/usr/bin/env bash
# Build navarch and start the cluster: API server on the embedded store, data in
# ${NAVARCH_DATA_DIR:-/var/lib/navarch}, admin kubeconfig written there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p navarch
exec target/release/navarch server --data-dir "${NAVARCH_DATA_DIR:-/var/lib/navarch}" "$@"
