#!/usr/bin/env bash
# Fuzzes the readers of outside input (the IDX stream fed in random chunks, the model spec
# reader and model builder, the checkpoint reader) for longer than the test command does:
# `scripts/fuzz.sh` runs each target for 10 million inputs, `scripts/fuzz.sh N` for N.
# Crashes land in fuzz/artifacts/<target>/ with the input that caused them.
source "$(dirname "$0")/lib.sh"

fuzz "${1:-10000000}"
