#!/usr/bin/env bash
# The browser benchmark: ferrograd against TensorFlow.js 4.22 in the same headless Chromium.
# Prints a markdown table and writes bench/results/results.{json,md}. Arguments go to
# bench/run.mjs (e.g. --seconds 2, --only ferrograd). Also prints the native figures.
source "$(dirname "$0")/lib.sh"

ensure_web_setup
if [ ! -f bench/node_modules/.package-lock.json ]; then
  log "installing TensorFlow.js for the benchmark"
  npm --prefix bench install --no-audit --no-fund --silent
fi
build_web
cargo build --release --quiet
log "native"
target/release/ferrograd bench
log "browser"
node bench/run.mjs "$@"
