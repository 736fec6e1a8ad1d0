#!/bin/sh
# One 1 GiB file over HTTP/1.0 from tact's file_server, nginx and a plain C
# sendfile server, side by side; rewrites the sendfile section of
# docs/performance.md.
#   ./tests/bench/sendfile_bench.sh                  (from the repository root, as root)
#   ./tests/bench/sendfile_bench.sh --reps 1 --size-mib 256 --out /tmp/perf.md
# Installs nginx from Debian, builds a Release tree in build-bench/, and
# takes about 2 minutes on 2 cores.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="nginx ${TACT_EXTRA_PACKAGES:-}" sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target file_server sendfile_server sendfile_get
exec /usr/bin/python3 tests/bench/sendfile_bench.py --build build-bench "$@"
