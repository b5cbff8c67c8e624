#!/usr/bin/env bash
# Soak test: the release gateway in its own process, in front of a backend that fails on
# purpose, under mixed traffic (small calls, the VPS sample, refused requests, streams) for
# SOAK_SECONDS (default 600). It checks that no response was lost or malformed, that every
# error was mapped, and that the gateway's RSS and open descriptors stayed flat; it prints the
# figures and exits non-zero when a check fails. The driver is benches/soak.rs.
#
#   bench/soak.sh                      # ten minutes
#   SOAK_SECONDS=60 bench/soak.sh      # one minute
#   SOAK_CLIENTS=32 SOAK_RESTART_SECONDS=0 bench/soak.sh
#   SOAK_SECONDS=60 SOAK_PROFILE=debug bench/soak.sh   # CI: the debug gateway, no release build
set -euo pipefail
cd "$(dirname "$0")/.."

export SOAK_SECONDS="${SOAK_SECONDS:-600}"
if [ "${SOAK_PROFILE:-release}" = release ]; then
  cargo build --release --locked --bin protogate
  export PROTOGATE_BIN="${PROTOGATE_BIN:-$PWD/target/release/protogate}"
fi
# The driver itself needs no optimisation: the gateway under test is the release build.
exec cargo test --locked --bench soak -- --ignored --exact soak --nocapture --test-threads=1
