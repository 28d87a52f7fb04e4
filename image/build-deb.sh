#!/usr/bin/env bash
# Builds the arm64 .deb for owners who already run Raspberry Pi OS (bookworm or later:
# glibc >= 2.34). Cross-builds the binary first (image/cross-build.sh), then packages it
# with cargo-deb. Prints the .deb's path on the last line.
#
#   image/build-deb.sh [--install-deps] [TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
install=()
if [[ "${1:-}" == "--install-deps" ]]; then install=(--install-deps); shift; fi
target="${1:-aarch64-unknown-linux-gnu}"
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb >&2
image/cross-build.sh ${install[@]+"${install[@]}"} "$target" | tail -n 1 >/dev/null
cargo deb --no-build --no-strip --target "$target" 2>&1 | tail -n 1
