#!/usr/bin/env bash
# Makes (or reuses) the virtual environment holding every Python tool CI uses, pinned in
# ci/python-tools.txt, and prints its path. Nothing is installed into the system Python.
# Usage: venv=$(bash ci/venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${PROTOGATE_VENV:-$PWD/target/ci-venv}
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s ci/python-tools.txt "$stamp"; then
  echo "$venv"
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian's python3 splits venv out.
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --requirement ci/python-tools.txt >&2
cp ci/python-tools.txt "$stamp"
echo "$venv"
