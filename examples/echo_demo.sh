#!/bin/sh
# The demo: tact's echo server on TCP, on a Unix socket and on UDP, and the
# echo client talking to each.
#   ./examples/echo_demo.sh     (from the repository root)
# Installs missing Debian packages first (needs root on a fresh machine).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh cmake/deps.sh
build="${TACT_BUILD_DIR:-build}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target echo_server echo_client >/dev/null

dir=$(mktemp -d)
out="$dir/server.out"
"$build/examples/echo_server" tcp://127.0.0.1:0 "unix://$dir/echo.sock" \
  udp://127.0.0.1:0 >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  [ "$(wc -l <"$out")" -ge 3 ] && break
  sleep 0.1
done
echo "== echo_server $(tr '\n' ' ' <"$out")"
tcp=$(grep -o 'tcp://[^ ]*' "$out")
unix=$(grep -o 'unix://[^ ]*' "$out")
udp=$(grep -o 'udp://[^ ]*' "$out")

echo "== echo_client $tcp"
"$build/examples/echo_client" "$tcp" --message "hello over TCP"
echo "== echo_client $unix"
"$build/examples/echo_client" "$unix" --message "hello over a Unix socket"
echo "== echo_client $udp"
"$build/examples/echo_client" "$udp" --message "hello over UDP"

echo "== SIGTERM to echo_server"
kill -TERM $server
wait $server && echo "echo_server exited with status 0"
