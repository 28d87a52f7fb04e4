#!/usr/bin/env bash
# Cross-builds the callbox binary for a Raspberry Pi with Debian's cross compilers: no
# container engine needed (cross.toml is the containerised alternative).
#
#   image/cross-build.sh [--install-deps] [TARGET] [-- extra cargo args]
#
# TARGET: aarch64-unknown-linux-gnu (default; Pi 3/4/5, Zero 2 W on a 64-bit OS),
#         armv7-unknown-linux-gnueabihf (32-bit OS), aarch64-unknown-linux-musl (static,
#         built without the speaker feature). Prints the binary's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
export CROSS_CONFIG=cross.toml

install=0
if [[ "${1:-}" == "--install-deps" ]]; then install=1; shift; fi
target="${1:-aarch64-unknown-linux-gnu}"
shift || true
[[ "${1:-}" == "--" ]] && shift

case "$target" in
    aarch64-unknown-linux-gnu) arch=arm64 triple=aarch64-linux-gnu gcc=gcc-aarch64-linux-gnu libc=libc6-dev-arm64-cross ;;
    armv7-unknown-linux-gnueabihf) arch=armhf triple=arm-linux-gnueabihf gcc=gcc-arm-linux-gnueabihf libc=libc6-dev-armhf-cross ;;
    aarch64-unknown-linux-musl) arch=arm64 triple=aarch64-linux-gnu gcc=gcc-aarch64-linux-gnu libc=libc6-dev-arm64-cross ;;
    *) echo "unsupported target $target" >&2; exit 2 ;;
esac

if ((install)); then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=("$gcc" "$libc" pkg-config)
    [[ "$target" == *-gnu* ]] && pkgs+=("libasound2-dev:$arch")
    dpkg --print-foreign-architectures | grep -qx "$arch" || dpkg --add-architecture "$arch"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${pkgs[@]}"
fi
rustup target add "$target" >/dev/null

upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=$(echo "$target" | tr '-' '_')
export "CARGO_TARGET_${upper}_LINKER=${triple}-gcc"
extra=()
if [[ "$target" == *-musl ]]; then
    extra+=(--no-default-features)
else
    # alsa-sys finds the target's libasound through pkg-config (edge-platform.md §1a).
    export PKG_CONFIG_ALLOW_CROSS=1
    export "PKG_CONFIG_LIBDIR_${lower}=/usr/lib/${triple}/pkgconfig:/usr/share/pkgconfig"
fi
cargo build --locked --release --target "$target" ${extra[@]+"${extra[@]}"} "$@" >&2
echo "target/$target/release/callbox"
