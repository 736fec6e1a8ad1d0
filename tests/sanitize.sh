#!/bin/sh
# Builds tact and runs the whole test suite twice more: under
# AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer.
# Any report fails the test that produced it.
#   ./tests/sanitize.sh                 (from the repository root)
#   ./tests/sanitize.sh address         (only the ASan+UBSan run)
#   ./tests/sanitize.sh thread          (only the TSan run)
# Installs missing Debian packages first (needs root on a fresh machine).
# Reports that come from CAF's own (uninstrumented) libraries are kept out
# by the commented files in tests/sanitizers/; none names tact's code.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh cmake/deps.sh
supp="$root/tests/sanitizers"
runs="${1:-address thread}"
for run in $runs; do
  case "$run" in
    address) flags="address,undefined" ;;
    thread) flags="thread" ;;
    *) echo "unknown run '$run' (address or thread)" >&2; exit 2 ;;
  esac
  build="${TACT_BUILD_DIR:-build}-$run"
  echo "== $run: $flags in $build"
  start=$(date +%s)
  # -O1 and line tables only: half the compile time of -O2 -g under the
  # sanitizers, and stack traces still name every line.
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
        -DCMAKE_C_FLAGS_DEBUG="-O1 -g1" -DTACT_BUILD_BENCH=OFF \
        -DTACT_SANITIZE="$flags"
  cmake --build "$build" -j2
  (
    cd "$build"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
    export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="suppressions=$supp/ubsan.supp:print_stacktrace=1:halt_on_error=1"
    export TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=1:second_deadlock_stack=1:print_suppressions=0"
    # Freed memory waits in ASan's quarantine (256 MiB by default): the
    # examples' RSS bounds are looser here; the normal run keeps the strict
    # ones (32 and 64 MiB).
    export TACT_E2E_RSS_LIMIT_MIB=512
    # And the echo server's exit after SIGTERM may take longer than 1 s.
    export TACT_E2E_EXIT_LIMIT_S=10
    ctest --output-on-failure -j2 --timeout 900
  )
  echo "== $run: passed in $(( $(date +%s) - start )) s"
done
