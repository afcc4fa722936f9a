#!/usr/bin/env bash
# The browser benchmark: ferrograd against TensorFlow.js 4.22 and jax-js 0.1.25 in the same
# headless Chromium. Prints a markdown table and writes bench/results/results.{json,md}.
# Arguments go to bench/run.mjs (e.g. --quick, --seconds 2, --only ferrograd, --config-limit 30).
# Also prints the native figures.
source "$(dirname "$0")/lib.sh"

ensure_web_setup
# Installs the peers pinned in bench/package.json when they are missing or the pins changed.
if [ ! -f bench/node_modules/.package-lock.json ] || [ bench/package.json -nt bench/node_modules/.package-lock.json ]; then
  log "installing TensorFlow.js and jax-js for the benchmark"
  npm --prefix bench install --no-audit --no-fund --silent
fi
build_web
cargo build --release --quiet
log "native"
target/release/ferrograd bench
log "browser"
node bench/run.mjs "$@"
