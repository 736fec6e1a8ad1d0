// kv_cluster: a sharded key-value service made of actors on several node
// processes, reached with the Redis protocol (see kv.hpp for how keys are
// placed and copied, docs/distributed.md for running it on several
// machines).
//
//   kv_cluster --shards 3 --port 6380
//       the launcher: publishes the cluster directory, starts the shards
//       and the gateway as child processes, prefixes and relays their
//       output, restarts a node that dies; prints `listening on
//       tcp://HOST:PORT` once the gateway serves (port 0: any free port).
//       --host NAME          address every node binds and is reached at
//                            (default 127.0.0.1)
//       --cluster-port P     the directory's port (default: any)
//       --remote-shards I,J  shards started by hand elsewhere (--join)
//       --timeout-ms MS      how long the gateway waits for a shard
//       --stop-grace-ms MS   how long a node may take to end after SIGTERM
//                            before it is killed (default 5000)
//       --threads N          CAF worker threads per node (default 1)
//       --requirepass-file F the gateway wants AUTH (or HELLO 2 AUTH) with
//                            the password on F's first line, as Redis's
//                            requirepass
//       --client-output-limit HARD,SOFT,SECONDS  a client that leaves
//                            more than HARD bytes of answers unread, or
//                            more than SOFT for SECONDS, is disconnected
//                            (Redis's client-output-buffer-limit; default
//                            67108864,16777216,10; 0 turns a limit off)
//       --max-query-bytes N  the bytes of commands read and not yet run
//                            that all clients may hold together; past it,
//                            the client holding the most is disconnected
//                            (default 268435456)
//       --max-keys-in-flight N  the arguments of the commands in flight to
//                            the shards from all clients together; past
//                            it, clients wait (default 131072; a command
//                            takes at most 65536 keys)
//       --ca F --cert F --key F   the cluster's CA and this node's
//                            certificate and key (PEM), for nodes on
//                            several machines; without them the launcher
//                            makes a CA for the run and a certificate per
//                            node, in a private directory removed at exit
//       --insecure           plain BASP links: no authentication, no
//                            encryption
//       --data-dir DIR       where the shards keep their logs (default
//                            ./kv_cluster-data); a launcher started again
//                            with the same DIR gets every logged write back
//       --fsync always|everysec|no   when a shard's log reaches the disk:
//                            before the write is acknowledged, once a
//                            second (default), or when the kernel flushes
//       --appendonly no      no logs: a key is lost when both its holders
//                            are down at once
//
//   kv_cluster --role shard --id I --shards N --join HOST:PORT [--host NAME]
//              [--node-port P] (--ca F --cert F --key F | --insecure)
//              [--data-dir DIR] [--fsync POLICY] [--appendonly yes|no]
//   kv_cluster --role gateway --shards N --join HOST:PORT --port P [--host NAME]
//              (--ca F --cert F --key F | --insecure)
//       one node, joining the cluster whose directory is at HOST:PORT.
//
//   kv_cluster --role check --join HOST:PORT (--ca F --cert F --key F | --insecure)
//       asks a node's port for its actor once, as a node would: prints
//       `reached HOST:PORT` and exits 0, or the reason and exits 1 (to
//       check certificates, or that a stranger is kept out).
//       --claim-shard I [--claim fetch --from J]  then claims, with its
//       certificate, to be shard I: registers with the directory at
//       HOST:PORT (as serving at 127.0.0.1:1), or asks shard J there for
//       shard I's entries; prints `claim accepted` or `claim refused` and
//       why (a certificate proves which shards a node is: identity.hpp).
//
// Exits 0 on SIGINT or SIGTERM, after stopping its children.

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <openssl/crypto.h>

#include "kv.hpp"

namespace kv {

long args::number(const std::string& name, long fallback) const {
  auto i = values.find(name);
  if (i == values.end())
    return fallback;
  char* end = nullptr;
  auto n = std::strtol(i->second.c_str(), &end, 10);
  if (i->second.empty() || *end != '\0') {
    std::fprintf(stderr, "kv_cluster: --%s wants a number, not '%s'\n",
                 name.c_str(), i->second.c_str());
    std::exit(2);
  }
  return n;
}

bool parse_args(int argc, char** argv, args& out) {
  for (int i = 1; i < argc; ++i) {
    std::string word = argv[i];
    if (word.size() < 3 || word.compare(0, 2, "--") != 0)
      return false;
    auto name = word.substr(2);
    if (i + 1 < argc && std::string{argv[i + 1]}.compare(0, 2, "--") != 0)
      out.values[name] = argv[++i];
    else
      out.values[name] = "";
  }
  return true;
}

bool split_address(const std::string& addr, std::string& host,
                   uint16_t& port) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size())
    return false;
  host = addr.substr(0, colon);
  if (host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  auto n = std::strtoul(addr.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || n == 0 || n > 65535)
    return false;
  port = static_cast<uint16_t>(n);
  return true;
}

void say(const char* fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  // One call per line, so lines from several threads do not interleave.
  std::printf("%s\n", line);
  std::fflush(stdout);
}

} // namespace kv

int main(int argc, char** argv) {
  // Before the first use of OpenSSL (the node loads its certificate before
  // it creates the runtime): see runtime_options::cluster_tls.
  OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
  kv::args a;
  if (!kv::parse_args(argc, argv, a)) {
    std::fprintf(stderr,
                 "usage: %s --shards N --port PORT [--host NAME] "
                 "[--cluster-port P] [--remote-shards I,J] [--timeout-ms MS] "
                 "[--stop-grace-ms MS]\n"
                 "       %s --role shard --id I --shards N --join HOST:PORT "
                 "[--host NAME] [--node-port P]\n"
                 "       %s --role gateway --shards N --join HOST:PORT "
                 "--port PORT [--host NAME]\n"
                 "       %s --role check --join HOST:PORT "
                 "(--ca F --cert F --key F | --insecure)\n",
                 argv[0], argv[0], argv[0], argv[0]);
    return 2;
  }
  auto role = a.get("role", "launcher");
  if (role == "launcher")
    return kv::run_launcher(a);
  if (role == "shard")
    return kv::run_shard(a);
  if (role == "gateway")
    return kv::run_gateway(a);
  if (role == "check")
    return kv::run_check(a);
  std::fprintf(stderr, "kv_cluster: unknown role '%s'\n", role.c_str());
  return 2;
}
