#!/bin/sh
# TLS echo: tact beside haproxy (TLS termination in front of the epoll echo
# server) and beside the floor (epoll and OpenSSL alone): CPU per request,
# per full and per resumed handshake, and bulk throughput on one
# connection. Rewrites the TLS section of docs/performance.md and its plot,
# docs/performance-tls.png.
#   ./tests/bench/tls_bench.sh              (from the repository root, as root)
#   ./tests/bench/tls_bench.sh --reps 1 --out /tmp/perf.md   (a quick look)
# Installs haproxy and matplotlib from Debian, builds a Release tree in
# build-bench/, and takes about 4 minutes with the default 3 repetitions.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
TACT_EXTRA_PACKAGES="haproxy python3-matplotlib ${TACT_EXTRA_PACKAGES:-}" sh cmake/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target echo_server epoll_echo tls_epoll_echo tls_load
exec /usr/bin/python3 tests/bench/tls_bench.py --build build-bench "$@"
