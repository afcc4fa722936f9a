#!/usr/bin/env bash
# Builds ferrograd and trains the default model on the bundled MNIST sample in the terminal.
# Extra arguments go to `ferrograd train`, e.g. `scripts/play.sh --epochs 2 --optimizer sgd`.
source "$(dirname "$0")/lib.sh"

ensure_base
ensure_data
log "building"
cargo build --release --quiet
log "training (Flatten, Dense 128 relu, Dense 10; Adam 1e-3; batch 64)"
exec target/release/ferrograd train --data data/mnist "$@"
