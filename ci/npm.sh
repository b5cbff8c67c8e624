#!/usr/bin/env bash
# Installs (or reuses) the npm packages the client tests drive, pinned in ci/node/package.json
# and ci/node/package-lock.json, with `npm ci` into a folder under target/ (never globally), and
# prints the path of its node_modules. Installs Debian's nodejs and npm when node is missing.
# Usage: node_modules=$(bash ci/npm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${PROTOGATE_NODE_DIR:-$PWD/target/ci-node}
stamp="$dir/.installed"
if [ -f "$stamp" ] && cat ci/node/package.json ci/node/package-lock.json | cmp -s - "$stamp"; then
  echo "$dir/node_modules"
  exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
fi
rm -rf "$dir"
mkdir -p "$dir"
cp ci/node/package.json ci/node/package-lock.json "$dir/"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
cat ci/node/package.json ci/node/package-lock.json >"$stamp"
echo "$dir/node_modules"
