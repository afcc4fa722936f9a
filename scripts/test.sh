#!/usr/bin/env bash
# Runs every test: the native suite (unit, gradient checks, parser, CLI accuracy) and the
# wasm build in headless Chromium. Installs what is missing first.
source "$(dirname "$0")/lib.sh"

ensure_base
ensure_wasm_target
ensure_wasm_bindgen
ensure_chromium
ensure_data

log "native tests"
cargo test --release

log "wasm tests in headless Chromium"
CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown --test web
