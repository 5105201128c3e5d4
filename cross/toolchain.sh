# The C and C++ toolchain of each target v4l2rtmp is built for on a Debian host without Docker
# (sourced, not run: by cross/lib.sh, tests/vm/run and the tests/vm/*/host scripts). The C and C++
# inside the dependency tree are ring's C (TLS) and, with the feature aac-encoder (on by default),
# the Fraunhofer FDK AAC library's C++, which fdk-aac-sys compiles with $CC_<target> (the driver
# picks C++ for the .cpp files) and $CFLAGS_<target> (the cc crate's CXXFLAGS are not used), and
# links with -lstdc++. See cross/README.md and bench/aac/REPORT.md ("Static cross-builds").
#
#   toolchain_packages TRIPLE...  the Debian packages (arch-qualified) those targets need
#   toolchain_install TRIPLE...   installs the missing ones (adds the arm64 dpkg architecture
#                                 for musl-dev:arm64 first); needs root or sudo
#   toolchain_env TRIPLE          exports CC_/AR_/CFLAGS_ for TRIPLE, each only if unset, and
#                                 fails naming what to install when a package is missing
#
# Per target (a build script's empty libstdc++.a stands in for the C++ runtime on musl: build.rs):
#   x86_64-unknown-linux-gnu      the host's gcc and g++ (cc1plus, libstdc++), as cargo finds them
#   x86_64-unknown-linux-musl     musl-gcc (musl-tools) with g++'s cc1plus; -nostdinc++ keeps the
#                                 host's glibc-configured C++ headers out (FDK includes C headers
#                                 only, which come from musl)
#   aarch64-unknown-linux-musl    clang (.cargo/config.toml) with musl's arm64 headers
#                                 (musl-dev:arm64) and nothing else: -nostdinc -nostdinc++, or
#                                 clang takes a glibc cross toolchain's C++ headers; llvm-ar
#   armv7-unknown-linux-gnueabihf arm-linux-gnueabihf-gcc and -g++ (cc1plus and the libstdc++.a
#                                 that -lstdc++ finds; nothing is taken from it)
# -fno-exceptions -fno-rtti everywhere: FDK then refers to nothing of the C++ runtime, only libc.

toolchain_packages() {
  local triple
  for triple in "$@"; do
    case $triple in
      x86_64-unknown-linux-gnu) echo gcc g++ ;;
      x86_64-unknown-linux-musl) echo musl-tools musl-dev g++ ;;
      aarch64-unknown-linux-musl) echo clang llvm musl-dev:arm64 ;;
      armv7-unknown-linux-gnueabihf) echo gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
      *) echo "toolchain.sh: no C/C++ toolchain known for $triple" >&2; return 1 ;;
    esac
  done | tr ' ' '\n' | sort -u
}

# The packages of toolchain_packages not installed.
toolchain_missing() {
  local packages package
  packages=$(toolchain_packages "$@") || return 1
  for package in $packages; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'ok installed' || echo "$package"
  done
}

toolchain_install() {
  local missing sudo=()
  missing=$(toolchain_missing "$@") || return 1
  [ -n "$missing" ] || return 0
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if grep -q ':arm64$' <<<"$missing" && ! dpkg --print-foreign-architectures | grep -qx arm64 &&
     [ "$(dpkg --print-architecture)" != arm64 ]; then
    echo "toolchain.sh: dpkg --add-architecture arm64 (for musl's arm64 headers)"
    "${sudo[@]}" dpkg --add-architecture arm64
  fi
  echo "toolchain.sh: installing" $missing
  "${sudo[@]}" apt-get update -qq
  # shellcheck disable=SC2086 # one package a word
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $missing >/dev/null
}

toolchain_env() {
  local triple=$1 missing
  missing=$(toolchain_missing "$triple") || return 1
  if [ -n "$missing" ]; then
    echo "missing for $triple's C/C++:" $missing "(scripts/install-test-deps or cross/build-arm installs them)" >&2
    return 1
  fi
  local no_cxx_runtime="-fno-exceptions -fno-rtti"
  case $triple in
    x86_64-unknown-linux-musl)
      export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
      export CFLAGS_x86_64_unknown_linux_musl="${CFLAGS_x86_64_unknown_linux_musl:--nostdinc++ $no_cxx_runtime}" ;;
    aarch64-unknown-linux-musl)
      export AR_aarch64_unknown_linux_musl="${AR_aarch64_unknown_linux_musl:-llvm-ar}"
      export CFLAGS_aarch64_unknown_linux_musl="${CFLAGS_aarch64_unknown_linux_musl:--nostdinc -nostdinc++ -isystem /usr/include/aarch64-linux-musl $no_cxx_runtime}" ;;
    armv7-unknown-linux-gnueabihf)
      export CFLAGS_armv7_unknown_linux_gnueabihf="${CFLAGS_armv7_unknown_linux_gnueabihf:-$no_cxx_runtime}" ;;
    x86_64-unknown-linux-gnu) ;;
  esac
}
