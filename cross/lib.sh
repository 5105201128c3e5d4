# Shared by cross/build-arm, cross/test-arm and cross/dns-check (sourced, not run).
# Installs what building and running the ARM targets here needs, idempotently, and sets the
# environment both scripts build with, so that the tests run against the binary that ships.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The two targets built here without Docker (see cross/README.md for why these two):
#   aarch64-unknown-linux-musl     static musl, linked by rust-lld (C and C++ compiled by clang)
#   armv7-unknown-linux-gnueabihf  static glibc 2.36 (Debian 12's), linked by arm-linux-gnueabihf-gcc
ARM_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)

# Static armv7: only for these scripts, not in .cargo/config.toml (which cross users also read).
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
# Shipped binaries are stripped whatever Cargo.toml's release profile says.
export CARGO_PROFILE_RELEASE_STRIP=true
# The C and C++ of the dependency tree (ring's C; FDK AAC's C++ with the default feature
# aac-encoder): compilers, archivers and flags per target, and the packages that hold them.
# shellcheck source=cross/toolchain.sh
source cross/toolchain.sh

note() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

ensure_arm_tools() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v qemu-arm-static >/dev/null || missing+=(qemu-user-static)
  command -v file >/dev/null || missing+=(file)
  if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    note "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  toolchain_install "${ARM_TARGETS[@]}"
  local target
  for target in "${ARM_TARGETS[@]}"; do toolchain_env "$target"; done
  local installed
  installed="$(rustup target list --installed)"
  for target in "${ARM_TARGETS[@]}"; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
  done
  local lld
  lld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
  [ -x "$lld" ] || { echo "rust-lld is missing from the toolchain ($lld)" >&2; return 1; }
}

# The qemu command that runs a binary of the given target.
qemu_for() {
  case "$1" in
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
    *) echo "no qemu for $1" >&2; return 1 ;;
  esac
}

binary_for() { echo "target/$1/release/v4l2rtmp"; }

# FDK AAC's licence asks that whoever gets the binary can get the library's complete source free of
# charge: put the exact fdk-aac-sys source archive the build used (cargo's registry cache, checked
# against Cargo.lock's sha256) and the licence beside the binary in DIR.
fdk_source_beside() {
  local dir=$1 version checksum crate
  version=$(awk '/^name = "fdk-aac-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
  [ -n "$version" ] || return 0
  checksum=$(awk '/^name = "fdk-aac-sys"$/ { getline; getline; getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"fdk-aac-sys-$version.crate" 2>/dev/null | head -n 1)
  [ -n "$crate" ] || { echo "fdk-aac-sys-$version.crate is not in cargo's registry cache" >&2; return 1; }
  [ "$(sha256sum "$crate" | cut -d' ' -f1)" = "$checksum" ] ||
    { echo "$crate does not match Cargo.lock's checksum $checksum" >&2; return 1; }
  cp "$crate" "$dir/"
  cp LICENSES/FDK-AAC.txt "$dir/"
  echo "FDK AAC: $dir/$(basename "$crate") (sha256 $checksum) and $dir/FDK-AAC.txt"
}
