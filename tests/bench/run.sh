#!/bin/sh
# Runs tact's echo_server and the reference servers side by side and writes
# docs/performance.md and docs/performance.png.
#   ./tests/bench/run.sh              (from the repository root, as root)
#   ./tests/bench/run.sh --quick      (one short repetition; report in /tmp)
# Installs what it needs (uvloop, matplotlib and perf from Debian), builds a
# Release tree in build-bench/, and takes about 25 minutes on 2 cores.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="python3-uvloop python3-matplotlib linux-perf ${TACT_EXTRA_PACKAGES:-}" \
  sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target echo_server echo_behavior epoll_echo echo_load \
  echo_bulk idle_conns
exec /usr/bin/python3 tests/bench/run.py --build build-bench "$@"
