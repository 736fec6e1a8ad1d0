#!/bin/sh
# Builds tact and runs the whole test suite under CTest.
#   ./tests/run.sh              (from the repository root)
# Installs missing Debian packages first (needs root on a fresh machine).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh cmake/deps.sh
build="${TACT_BUILD_DIR:-build}"
# Warnings fail the build here, so that none creeps in unseen.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTACT_WARNINGS_AS_ERRORS=ON
cmake --build "$build" -j2
cd "$build"
ctest --output-on-failure -j2 --timeout 300
