#!/usr/bin/env bash
# Relais developer entry point, for a fresh Debian 12 machine.
#   tools/dev.sh deps    install the Debian packages Relais builds and tests with
#   tools/dev.sh build   Release build in build/
#   tools/dev.sh run     deps + build, then start relaisd with the built-in config (./var)
#   tools/dev.sh test    deps + Release and ASan/UBSan builds, every test in both; the ring and
#                        engine tests under TSan; each libFuzzer target for 15 CPU seconds
#   tools/dev.sh fuzz [S]  the long mode: each libFuzzer target for S CPU seconds (default
#                        3600), JOBS at a time; new inputs stay in build-fuzz/<target>_corpus
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-$(nproc)}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

BUILD_PACKAGES=(build-essential cmake ninja-build pkg-config liburing-dev android-libboringssl-dev
  libmimalloc-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev libc-ares-dev
  libtomlplusplus-dev libpsl-dev publicsuffix nlohmann-json3-dev libcrypt-dev libre2-dev)
TEST_PACKAGES=(python3 swaks clang libclang-rt-14-dev gnuplot-nox dnsmasq-base python3-dkim
  python3-nacl python3-spf python3-dnslib libopendkim-dev strace openssl testssl.sh sasl2-bin libsasl2-modules
  libnet-ssleay-perl)
# The libraries of Exim (a test client, unpacked by tools/fetch-exim.sh, never installed) and
# nss_wrapper, which gives it its user.
TEST_PACKAGES+=(libgnutls-dane0 libidn12 libdb5.3 libnsl2 libpcre2-8-0 libnss-wrapper)

deps() {
  local missing=()
  for p in "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

build() {  # build DIR TYPE
  local dir=$1 type=$2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DRELAIS_WERROR=ON >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

fuzz() {  # fuzz CPU-SECONDS: any crash fails the run and leaves its input in build-fuzz/.
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DRELAIS_FUZZ=ON -DRELAIS_FUZZ_SECONDS="$1" -DRELAIS_WERROR=ON >/dev/null
  cmake --build build-fuzz -j "$JOBS" --target relais_fuzzers
  ctest --test-dir build-fuzz -L '^fuzz$' --output-on-failure -j "$2"
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build build Release ;;
  run)
    deps
    build build Release
    mkdir -p var
    echo "dev.sh: starting relaisd on 127.0.0.1:2525 (spool ./var/spool); Ctrl-C stops it"
    exec ./build/tools/relaisd/relaisd
    ;;
  test)
    deps
    # Peers of the integration tests, never started as services: Postfix's smtp-sink (next hop
    # of the relay tests), Prometheus (promtool and a real scraper of the metrics test).
    tools/apt-install-no-start.sh postfix prometheus
    # Exim as a real SMTP client (interop tests); unpacked, never installed (it conflicts
    # with Postfix).
    tools/fetch-exim.sh build/peers/exim
    build build Release
    ctest --test-dir build --output-on-failure -j "$JOBS"
    # The same tests under AddressSanitizer and UndefinedBehaviorSanitizer.
    build build-asan Asan
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --test-dir build-asan --output-on-failure -j "$JOBS"
    # What crosses threads (SPSC rings, the MSG_RING mesh, the engine) under ThreadSanitizer.
    cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Tsan -DRELAIS_WERROR=ON >/dev/null
    cmake --build build-tsan -j "$JOBS" --target relais_ring_test relais_uring_test
    TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan -L tsan --output-on-failure
    # Every parser of outside bytes, fuzzed briefly (the long mode is `dev.sh fuzz`).
    fuzz 15 1
    ;;
  fuzz)
    deps
    fuzz "${2:-3600}" "$JOBS"
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
