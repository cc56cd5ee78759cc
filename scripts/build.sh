#!/usr/bin/env bash
# Configures and builds ibnorm into build/ (Release). Extra arguments go to cmake's configure.
# IBN_BUILD_TARGET=ibn_cli builds the command line alone (the main job needs no tests).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f build/Makefile ]; then generator=(-G Ninja); fi
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)" ${IBN_BUILD_TARGET:+--target "$IBN_BUILD_TARGET"}
