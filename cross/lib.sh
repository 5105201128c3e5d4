# Shared by cross/build-arm, cross/test-arm and cross/dns-check (sourced, not run).
# Installs what building and running the ARM targets here needs, idempotently, and sets the
# environment both scripts build with, so that the tests run against the binary that ships.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The two targets built here without Docker (see cross/README.md for why these two):
#   aarch64-unknown-linux-musl     static musl, linked by rust-lld (no C cross compiler)
#   armv7-unknown-linux-gnueabihf  static glibc 2.36 (Debian 12's), linked by arm-linux-gnueabihf-gcc
ARM_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)

# Static armv7: only for these scripts, not in .cargo/config.toml (which cross users also read).
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
# Shipped binaries are stripped whatever Cargo.toml's release profile says.
export CARGO_PROFILE_RELEASE_STRIP=true
# ring and other cc-built C (none in the tree yet): clang for aarch64-musl needs an archiver that
# knows AArch64 objects; the host's GNU ar does not build their symbol index.
export AR_aarch64_unknown_linux_musl="${AR_aarch64_unknown_linux_musl:-llvm-ar}"

note() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

# True when the dependency tree contains C built by the cc crate (ring, for RTMPS): then clang
# and llvm-ar are needed for aarch64-musl.
tree_has_c() { grep -qE '^name = "(cc|cmake)"$' Cargo.lock 2>/dev/null; }

ensure_arm_tools() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v qemu-arm-static >/dev/null || missing+=(qemu-user-static)
  command -v arm-linux-gnueabihf-gcc >/dev/null || missing+=(gcc-arm-linux-gnueabihf)
  [ -f /usr/arm-linux-gnueabihf/lib/libc.a ] || missing+=(libc6-dev-armhf-cross)
  command -v file >/dev/null || missing+=(file)
  if tree_has_c; then
    command -v clang >/dev/null || missing+=(clang)
    command -v llvm-ar >/dev/null || missing+=(llvm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    note "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
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
