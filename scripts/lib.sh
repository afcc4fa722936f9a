# Shared by play.sh and test.sh: each `ensure_*` installs one prerequisite if it is missing
# and does nothing when it is already there, so both commands are safe to run again.
# shellcheck shell=bash

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The guide builder, pinned like the wasm-bindgen CLI.
MDBOOK_VERSION=0.4.52
# The fuzzing driver (it runs the targets in fuzz/ on nightly).
CARGO_FUZZ_VERSION=0.13.2
cd "$ROOT"
# .cargo/config.toml's flags for wasm, for the builds whose RUSTFLAGS add to them (setting
# RUSTFLAGS replaces the config's).
WASM_RUSTFLAGS="-C target-feature=+simd128 -C llvm-args=-inline-threshold=100"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_command() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is required but not installed ($2)" >&2; exit 1; }
}

ensure_base() {
  ensure_command cargo "install Rust with rustup"
  ensure_command node "install Node.js 20 or newer"
  ensure_command npm "install npm with Node.js"
}

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

# The CLI must match the wasm-bindgen version in Cargo.lock exactly.
ensure_wasm_bindgen() {
  local want have
  want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)"
  have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
  if [ "$have" != "$want" ]; then
    log "installing wasm-bindgen-cli $want (a few minutes, once)"
    # Its own lock file first; a registry that lacks one of the versions it pins (a mirror a
    # little behind crates.io) gets the newest compatible ones instead.
    cargo install wasm-bindgen-cli --version "$want" --locked \
      || { log "a crate locked by wasm-bindgen-cli is not in the registry: resolving afresh"
           cargo install wasm-bindgen-cli --version "$want"; }
  fi
}

# The threaded wasm module is built with nightly and its standard library's source.
ensure_nightly() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (for the threaded wasm module)"
    rustup toolchain install nightly --profile minimal --component rust-src
  elif ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    log "adding rust-src to nightly (for the threaded wasm module)"
    rustup component add rust-src --toolchain nightly
  fi
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    log "installing Chromium and ChromeDriver from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

# Mesa's lavapipe, a Vulkan driver that runs on the CPU: the GPU backend's tests need an
# adapter, and a machine without a GPU has none otherwise.
ensure_vulkan() {
  if ! dpkg -s libvulkan1 mesa-vulkan-drivers >/dev/null 2>&1; then
    log "installing Vulkan and Mesa's CPU driver (lavapipe) from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >/dev/null
  fi
  # Vulkan's loader warns without one.
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
}

ensure_data() {
  node scripts/fetch-mnist.mjs data/mnist
}

ensure_npm_packages() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing npm packages"
    npm ci --no-audit --no-fund --silent
  fi
}

# The page's five wasm modules and their bindings, generated into pkg/ (not committed): the CPU
# one in pkg/; in pkg/threads/ the same built with threads, which the worker loads on a
# cross-origin-isolated page; in pkg/gpu/ the one with the WebGPU backend, which it loads
# only where the browser has a WebGPU adapter, so that the CPU path stays small; and in
# pkg/tools/ the CPU one with ONNX export and sweep planning, which it loads when first used;
# and in pkg/relaxed/ the CPU one with relaxed SIMD, which it loads where the browser has it.
build_web() {
  log "building the wasm modules"
  build_wasm pkg target --no-default-features
  build_wasm pkg/gpu target --no-default-features --features webgpu
  build_wasm pkg/tools target --no-default-features --features tools
  build_wasm_relaxed
  build_wasm_threads
}

# The CPU module with relaxed SIMD, whose product micro-kernel fuses its multiply-adds; the
# worker loads it where the browser validates relaxed SIMD (see www/worker.js). Its own
# target folder keeps the flags from invalidating the other builds.
build_wasm_relaxed() {
  RUSTFLAGS="$WASM_RUSTFLAGS -C target-feature=+relaxed-simd" build_wasm pkg/relaxed target/relaxed --no-default-features
}

# Threads share one wasm memory, which needs the standard library rebuilt with atomics
# (nightly's build-std) and the memory imported and shared. Its own target folder keeps these
# flags from invalidating the other builds. Cargo.toml's size profile for dependencies would
# reach the rebuilt standard library here too (its expf, its allocator), so this build keeps
# every dependency at opt-level 3.
build_wasm_threads() {
  RUSTFLAGS="$WASM_RUSTFLAGS -C target-feature=+atomics,+bulk-memory,+mutable-globals \
    -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=1073741824 \
    -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
    -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base" \
    build_wasm pkg/threads target/threads +nightly -Z build-std=panic_abort,std --config 'profile.wasm.package."*".opt-level=3' \
      --no-default-features --features threads
}

# build_wasm OUT TARGET_DIR [+TOOLCHAIN] [CARGO_ARGS...]
build_wasm() {
  local out="$1" target_dir="$2" toolchain=()
  shift 2
  if [[ "${1:-}" == +* ]]; then toolchain=("$1"); shift; fi
  cargo "${toolchain[@]}" build --lib --target wasm32-unknown-unknown --profile wasm --target-dir "$target_dir" --quiet "$@"
  wasm-bindgen --target web --no-typescript --out-dir "$out" "$target_dir/wasm32-unknown-unknown/wasm/ferrograd.wasm"
  # The features rustc's wasm32 target enables, plus SIMD and threads. wasm-opt comes from
  # npm's binaryen (Debian's version 108 breaks wasm-bindgen's externref table); it takes
  # about 15% off each module. By default it inlines every function that has one caller,
  # whatever its size; the limit keeps apart what the source keeps out of line (see
  # src/autograd/backward.rs): the browser optimises big functions slowly.
  node_modules/.bin/wasm-opt -O3 --enable-simd --enable-relaxed-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-threads \
    --one-caller-inline-max-function-size=200 \
    "$out/ferrograd_bg.wasm" -o "$out/ferrograd_bg.wasm"
  # The generated bindings are a third of their size minified (32 KB to 13 for the CPU module).
  node_modules/.bin/esbuild "$out/ferrograd.js" --minify --format=esm --log-level=warning \
    --outfile="$out/ferrograd.js" --allow-overwrite
}

# What the ONNX export test runs its checks with.
ensure_python_packages() {
  if ! python3 -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
    log "installing onnx and onnxruntime from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  fi
}

ensure_cargo_fuzz() {
  ensure_nightly
  if [ "$(cargo fuzz --version 2>/dev/null | awk '{ print $2 }')" != "$CARGO_FUZZ_VERSION" ]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION (a minute or two, once)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
  fi
}

# Each fuzz target for `runs` inputs (a count, not a time, so that a busy machine runs the
# same check), starting from its hand-made seeds in fuzz/seeds/. What the fuzzer finds new
# goes to fuzz/corpus/ (ignored by git); a crash stops it with the input in fuzz/artifacts/.
# A single allocation over 320 MB fails the run: every budget is below that.
fuzz() {
  local runs=$1 target
  ensure_cargo_fuzz
  for target in idx_stream spec checkpoint; do
    log "fuzzing $target ($runs inputs)"
    mkdir -p "fuzz/corpus/$target"
    cargo +nightly fuzz run --sanitizer address "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -runs="$runs" -malloc_limit_mb=320 -rss_limit_mb=2048 -timeout=60 -print_final_stats=1
  done
}

# Everything that building the page and driving it in headless Chromium needs.
ensure_web_setup() {
  ensure_base
  ensure_wasm_target
  ensure_nightly
  ensure_wasm_bindgen
  ensure_chromium
  ensure_npm_packages
  ensure_data
}

ensure_mdbook() {
  if ! command -v mdbook >/dev/null || [ "$(mdbook --version)" != "mdbook v$MDBOOK_VERSION" ]; then
    log "installing mdbook $MDBOOK_VERSION (the guide's builder)"
    cargo install mdbook --version "$MDBOOK_VERSION" --locked --no-default-features --features search --quiet
  fi
}

# The guide into book/ (beside index.html, so its live examples find www/ and the data), with
# the crate's rustdoc reference in book/api/.
build_guide() {
  ensure_mdbook
  log "building the guide"
  RUST_LOG=warn mdbook build guide --dest-dir ../book
  cargo doc --no-deps --lib --quiet
  rm -rf book/api
  cp -r target/doc book/api
}
