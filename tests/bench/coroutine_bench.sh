#!/bin/sh
# The echo as a coroutine beside the echo as a class protocol: CPU and
# instructions per request, 1 KiB over 100 connections. Rewrites the
# coroutine section of docs/performance.md.
#   ./tests/bench/coroutine_bench.sh              (from the repository root, as root)
#   ./tests/bench/coroutine_bench.sh --reps 1 --out /tmp/perf.md   (a quick look)
# Installs valgrind from Debian, builds a Release tree in build-bench/, and
# takes about 6 minutes with the default 5 repetitions.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="valgrind ${TACT_EXTRA_PACKAGES:-}" sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target echo_server echo_load
exec /usr/bin/python3 tests/bench/coroutine_bench.py --build build-bench "$@"
