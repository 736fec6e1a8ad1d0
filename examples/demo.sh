#!/bin/sh
# The demo: kv_cluster, a sharded key-value service made of actors on four
# node processes (three shards and a Redis-protocol gateway) under a
# launcher, driven with redis-cli. It writes keys, kills a shard with
# SIGKILL, watches the launcher restart it and the restarted shard fetch its
# keys back, then kills the shard that held the other copies and reads
# every key again; at last stops every process at once with SIGKILL and
# starts a new launcher on the shards' logs.
#   ./examples/demo.sh          (from the repository root)
# Installs missing Debian packages first (needs root on a fresh machine).
# The echo examples have their own script: examples/echo_demo.sh.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh cmake/deps.sh
build="${TACT_BUILD_DIR:-build}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target kv_cluster >/dev/null

dir=$(mktemp -d)
log="$dir/cluster.log"
"$build/examples/kv_cluster" --shards 3 --port 0 --data-dir "$dir/data" >"$log" 2>&1 &
launcher=$!
trap 'kill $launcher 2>/dev/null || true; rm -rf "$dir"' EXIT

# Waits until the log has COUNT lines matching PATTERN.
wait_for() {
  for _ in $(seq 300); do
    [ "$(grep -c -- "$1" "$log")" -ge "${2:-1}" ] && return 0
    sleep 0.1
  done
  echo "demo: no '$1' in the cluster's output after 30 s:" >&2
  cat "$log" >&2
  exit 1
}
# Prints the cluster's output from line FROM on, indented.
show_log() { tail -n "+$1" "$log" | sed 's/^/    /'; }
pid_of() { grep -o "started $1 (pid [0-9]*" "$log" | tail -1 | grep -o '[0-9]*$'; }

echo "== kv_cluster --shards 3 --port 0"
wait_for "listening on tcp://"
show_log 1
addr=$(grep -o 'listening on tcp://[^ ]*' "$log" | head -1 | sed 's|.*tcp://||')
host=${addr%:*}
port=${addr##*:}
cli() { redis-cli -h "$host" -p "$port" "$@"; }

keys=100
echo "== redis-cli: SET user:1 .. user:$keys (one pipelined stream), INCR visits x3"
written=$(seq "$keys" | sed 's/.*/SET user:& name-&/' | cli | grep -c '^OK$')
for _ in 1 2 3; do cli INCR visits >/dev/null; done
echo "    $written of $keys SETs answered OK"
echo "    GET user:42 -> $(cli GET user:42)   GET visits -> $(cli GET visits)   DBSIZE -> $(cli DBSIZE)"

victim=$(pid_of "shard 1")
from=$(($(wc -l <"$log") + 1))
echo "== kill -9 shard 1 (pid $victim)"
started=$(date +%s%N)
kill -9 "$victim"
echo "    while it is down, the other holders answer:"
echo "    SET during-outage yes -> $(cli SET during-outage yes)   GET user:7 -> $(cli GET user:7)"
wait_for "shard 1 serving" 2
restarted_ms=$((($(date +%s%N) - started) / 1000000))
wait_for "gateway: shard 1 at" 2
show_log "$from"

second=$(pid_of "shard 2")
from=$(($(wc -l <"$log") + 1))
echo "== kill -9 shard 2 (pid $second), which held the other copies of shard 1's keys"
kill -9 "$second"
wait_for "gateway: shard 2 is down"

echo "== reading every key back"
expected=$(seq "$keys" | sed 's/.*/name-&/')
got=$(seq "$keys" | sed 's/.*/GET user:&/' | cli)
intact=$(printf '%s\n' "$got" | grep -c '^name-' || true)
if [ "$got" != "$expected" ] || [ "$(cli GET visits)" != 3 ] \
   || [ "$(cli GET during-outage)" != yes ]; then
  echo "demo: keys lost or wrong after the restart" >&2
  show_log 1 >&2
  exit 1
fi
wait_for "shard 2 serving" 2
show_log "$from"

echo "== summary"
echo "    $keys keys and a counter written through the gateway with redis-cli"
echo "    shard 1 killed with SIGKILL; the launcher restarted it and it served again after ${restarted_ms} ms,"
echo "    with its keys from its own log and from shards 0 and 2"
echo "    shard 2 killed too: $intact of $keys keys, visits = 3 and during-outage = yes still read back"
echo "    DBSIZE -> $(cli DBSIZE)"
if grep -q "links: TLS 1.3, certificates from the cluster's CA required both ways" "$log"; then
  echo "    secure: every link between the nodes is TLS 1.3 with a certificate from the cluster's own CA"
  echo "    on both ends (made for this run); a process without one gets no actor from any node port"
else
  echo "demo: the cluster's links are not secured" >&2
  exit 1
fi

echo "== kill -9 of the launcher and every node at once, then a new launcher on the same --data-dir"
kill -9 "$launcher" $(pid_of "shard 0") $(pid_of "shard 1") $(pid_of "shard 2") $(pid_of gateway) 2>/dev/null || true
wait "$launcher" 2>/dev/null || true
rm -rf "$(grep -o 'certificates are in [^ ]*' "$log" | head -1 | sed 's/.* in //')"
log="$dir/cluster2.log"
"$build/examples/kv_cluster" --shards 3 --port 0 --data-dir "$dir/data" >"$log" 2>&1 &
launcher=$!
wait_for "listening on tcp://"
grep 'replayed' "$log" | sed 's/^/    /'
addr=$(grep -o 'listening on tcp://[^ ]*' "$log" | head -1 | sed 's|.*tcp://||')
port=${addr##*:}
got=$(seq "$keys" | sed 's/.*/GET user:&/' | cli)
if [ "$got" != "$expected" ] || [ "$(cli GET visits)" != 3 ]; then
  echo "demo: keys lost after the restart from the logs" >&2
  cat "$log" >&2
  exit 1
fi
echo "    every key read back from the shards' logs: DBSIZE -> $(cli DBSIZE), visits -> $(cli GET visits)"

echo "== SIGTERM to the launcher"
kill -TERM "$launcher"
wait "$launcher" && echo "kv_cluster exited with status 0"
