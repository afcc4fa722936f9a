#!/usr/bin/env bash
# Runs every test: the native suite (unit, gradient checks, parser, playground engine, CLI
# accuracy, the GPU kernels and training against the CPU through Vulkan), a short fuzzing run
# of the input readers, the wasm build in headless Chromium, and the page, the guide and the
# embeds in headless Chromium.
# Installs what is missing first. Page screenshots land in test-results/.
source "$(dirname "$0")/lib.sh"

ensure_web_setup
ensure_python_packages
ensure_vulkan

log "native tests"
cargo test --release
# A short run of each fuzz target (scripts/fuzz.sh runs longer ones).
fuzz 200000

log "wasm tests in headless Chromium (the GPU kernels on its WebGPU, over SwiftShader)"
# Optimised, as the page's modules are: the SIMD128 product kernel is tested as it ships, and
# the training steps the tests take run in seconds, not minutes.
CHROMEDRIVER=/usr/bin/chromedriver cargo test --release --target wasm32-unknown-unknown --no-default-features --features webgpu --test web --test web_gpu
# The same CPU tests on the relaxed-SIMD build (pkg/relaxed/), whose product kernel fuses its
# multiply-adds: within the same tolerances. Its own target folder, as build_web keeps it.
RUSTFLAGS="$WASM_RUSTFLAGS -C target-feature=+relaxed-simd" CHROMEDRIVER=/usr/bin/chromedriver \
  cargo test --release --target wasm32-unknown-unknown --no-default-features --test web --target-dir target/relaxed

build_web
build_guide
log "page tests in headless Chromium"
node --test --test-concurrency=1 tests/page/
