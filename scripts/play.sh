#!/usr/bin/env bash
# Builds everything and serves the playground on the bundled MNIST sample at
# http://127.0.0.1:8080/ (another port: `scripts/play.sh --port 9000`). Extra arguments go to
# `ferrograd serve`.
source "$(dirname "$0")/lib.sh"

ensure_base
ensure_wasm_target
ensure_nightly
ensure_wasm_bindgen
ensure_npm_packages
ensure_data
build_web
build_guide
log "building the CLI"
cargo build --release --quiet
exec target/release/ferrograd serve "$@"
