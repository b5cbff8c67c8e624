#!/usr/bin/env bash
# The README's first command: builds the release binary and runs the gateway on its built-in VPS
# demo (127.0.0.1:8080). Building needs protoc (the protovalidate crate behind --validate
# compiles its .proto in a build script); it is installed with apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null 2>&1; then
  sudo_if_needed=()
  [[ $(id -u) -eq 0 ]] || sudo_if_needed=(sudo)
  "${sudo_if_needed[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq protobuf-compiler >/dev/null
fi
exec cargo run --release -- demo "$@"
