#!/bin/sh
# Builds the libFuzzer targets (tests/fuzz) with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer, replays the regression inputs, then runs
# each target for a bounded time on its committed seed corpus.
#   ./tests/fuzz.sh                        (FUZZ_SECONDS=60 per target)
#   FUZZ_SECONDS=600 ./tests/fuzz.sh tls   (one target, ten minutes)
# Installs missing Debian packages first (clang and its runtime). A crash,
# a sanitizer report or a hang fails the run and leaves the input in
# $build/artifacts/; add it to tests/fuzz/regressions/TARGET/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="clang libclang-rt-14-dev" sh cmake/deps.sh
build="${TACT_BUILD_DIR:-build}-fuzz"
seconds="${FUZZ_SECONDS:-60}"
targets="${*:-url frames tls resp}"
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" \
  -DTACT_BUILD_TESTS=OFF -DTACT_BUILD_EXAMPLES=OFF -DTACT_BUILD_FUZZERS=ON \
  -DTACT_SANITIZE=address,undefined
cmake --build "$build" -j2
mkdir -p "$build/artifacts"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="suppressions=$root/tests/sanitizers/ubsan.supp:print_stacktrace=1:halt_on_error=1"
for t in $targets; do
  bin="$build/tests/fuzz/fuzz_$t"
  regressions="tests/fuzz/regressions/$t"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "== fuzz_$t: regressions"
    "$bin" "$regressions"/*
  fi
  echo "== fuzz_$t: $seconds s"
  work=$(mktemp -d)
  # New inputs go to the scratch directory; the committed seeds are read.
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
    "$work" "tests/fuzz/corpus/$t"
  rm -rf "$work"
done
