#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/debian-packages.txt that are not installed yet;
# with --peers, also scripts/peer-packages.txt (the Python tools the benchmarks time ibn against).
# Idempotent: with everything present it changes nothing and needs no network. Runs apt-get
# update at most once, and only when something is missing. Root runs apt-get directly; anyone
# else goes through sudo.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lists=("$here/debian-packages.txt")
if [ "${1:-}" = "--peers" ]; then lists+=("$here/peer-packages.txt"); elif [ $# -gt 0 ]; then
  echo "setup: unknown option '$1' (only --peers)" >&2; exit 2
fi
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "${lists[@]}" | grep -v '^$')

missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#wanted[@]} Debian packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Install from the current lists first; refresh them only if that fails (stale or empty lists).
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
