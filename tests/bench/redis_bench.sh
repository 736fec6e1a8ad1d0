#!/bin/sh
# redis-benchmark against kv_cluster's gateway and against redis-server, side
# by side; rewrites the kv_cluster section of docs/performance.md.
#   ./tests/bench/redis_bench.sh              (from the repository root, as root)
#   ./tests/bench/redis_bench.sh --reps 1 --out /tmp/perf.md   (a quick look)
# Installs redis-server and redis-tools from Debian, builds a Release tree in
# build-bench/, and takes about 12 minutes on 2 cores (6 servers, 3 repetitions).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="redis-server ${TACT_EXTRA_PACKAGES:-}" sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target kv_cluster
exec /usr/bin/python3 tests/bench/redis_bench.py --build build-bench "$@"
