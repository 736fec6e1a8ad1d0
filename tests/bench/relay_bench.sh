#!/bin/sh
# tact's relay beside haproxy (one thread, mode tcp) in front of the same
# epoll echo server: CPU per relayed new connection, and per 1 KiB request
# over kept connections. Rewrites the relay section of docs/performance.md.
#   ./tests/bench/relay_bench.sh              (from the repository root, as root)
#   ./tests/bench/relay_bench.sh --reps 1 --out /tmp/perf.md   (a quick look)
# Installs haproxy from Debian, builds a Release tree in build-bench/, and
# takes about 4 minutes with the default 5 repetitions.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="haproxy ${TACT_EXTRA_PACKAGES:-}" sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target relay epoll_echo echo_load churn_load
exec /usr/bin/python3 tests/bench/relay_bench.py --build build-bench "$@"
