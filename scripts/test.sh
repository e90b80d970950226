#!/usr/bin/env bash
# Run navarch's whole test suite (unit tests and end-to-end tests that start a real
# server and drive the real kubectl and the Python client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets --no-fail-fast -- --test-threads=2
