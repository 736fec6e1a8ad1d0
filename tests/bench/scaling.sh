#!/bin/sh
# tact's echo with 1, 2, 4, ... loops beside a plain epoll echo with as
# many threads: requests per second, server CPU per request, and each loop
# thread's share. Servers on the first half of the CPUs, load clients on
# the rest. Rewrites the scaling section of docs/performance.md.
#   ./tests/bench/scaling.sh                      (from the repository root, as root)
#   ./tests/bench/scaling.sh --reps 1 --out -     (a quick look, no report)
# Builds a Release tree in build-bench/; about 20 s per loop count and
# repetition.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target echo_server echo_load churn_load epoll_echo
exec /usr/bin/python3 tests/bench/scaling.py --build build-bench "$@"
