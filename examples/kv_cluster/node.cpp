// What every node of kv_cluster does: its runtime, joining the directory,
// dying with its launcher, ending itself.

#include <atomic>
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <thread>

#include <sys/prctl.h>
#include <unistd.h>

#include "kv.hpp"
#include "tact/runtime/errc.hpp"

namespace kv {

tact::runtime_options node_options(const args& a) {
  tact::runtime_options opts;
  opts.distributed = true;
  opts.handle_signals = true;
  // The cluster's links: TLS with the cluster's certificates, or (only
  // when asked) plain BASP.
  if (a.has("ca") || a.has("cert") || a.has("key"))
    opts.cluster_tls = tact::cluster_tls_options{a.get("ca"), a.get("cert"),
                                                 a.get("key"), {}};
  opts.allow_insecure_distribution = a.has("insecure");
  auto threads = static_cast<size_t>(std::max(1L, a.number("threads", 1)));
  opts.configure = [threads](caf::actor_system_config& cfg) {
    announce(cfg);
    // A node's actors are few and quick; what costs is handing messages
    // between threads. CAF's work-sharing scheduler wakes a sleeping
    // worker when work comes, where work stealing polls: on a few cores
    // shared by several nodes, one worker per node that sleeps until
    // woken gave 1.8 times the requests per second of the default (two
    // polling workers per node) with 40 % less CPU (docs/distributed.md).
    cfg.set("scheduler.policy", caf::atom("sharing"));
    cfg.set("scheduler.max-threads", threads);
  };
  return opts;
}

caf::actor join_directory(tact::runtime& rt, const args& a,
                          const char* role) {
  auto addr = a.get("join");
  std::string host;
  uint16_t port = 0;
  if (!split_address(addr, host, port)) {
    std::fprintf(stderr, "kv_cluster %s: --join wants HOST:PORT, not '%s'\n",
                 role, addr.c_str());
    return {};
  }
  caf::expected<caf::actor> dir = caf::sec::invalid_argument;
  for (int attempt = 0; attempt < 100; ++attempt) {
    dir = rt.remote_actor(host, port);
    if (dir)
      return *dir;
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
  std::fprintf(stderr, "kv_cluster %s: no directory at %s: %s\n", role,
               addr.c_str(), tact::describe(dir.error()).c_str());
  return {};
}

int run_check(const args& a) {
  std::string host;
  uint16_t port = 0;
  if (!split_address(a.get("join"), host, port)) {
    std::fprintf(stderr, "kv_cluster check: --join wants HOST:PORT\n");
    return 2;
  }
  auto opts = node_options(a);
  opts.handle_signals = false;
  tact::runtime rt{opts};
  auto hdl = rt.remote_actor(host, port);
  if (!hdl) {
    say("refused by %s: %s", a.get("join").c_str(),
        tact::describe(hdl.error()).c_str());
    return 1;
  }
  say("reached %s", a.get("join").c_str());
  return 0;
}

void die_with_parent(const args& a) {
  if (!a.has("supervised"))
    return;
  auto parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  // The launcher may have died before the call.
  if (getppid() != parent)
    kill(getpid(), SIGTERM);
}

} // namespace kv
