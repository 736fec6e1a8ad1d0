// What every node of kv_cluster does: its runtime, joining the directory,
// dying with its launcher, ending itself.

#include <atomic>
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <thread>

#include <sys/prctl.h>
#include <unistd.h>

#include <caf/scoped_actor.hpp>

#include "identity.hpp"
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
  if (!a.has("claim-shard"))
    return 0;
  // Claims to be a shard, with this node's certificate: registers with
  // the directory at a port that serves nothing, or (--claim fetch) asks
  // a shard for that shard's entries.
  auto shard = static_cast<uint32_t>(a.number("claim-shard", 0));
  std::unique_ptr<credentials> creds;
  if (!a.has("insecure")) {
    std::string error;
    creds = credentials::load(a.get("cert"), a.get("key"), error);
    if (!creds) {
      say("%s", error.c_str());
      return 2;
    }
  }
  caf::scoped_actor self{rt.system()};
  std::string nonce;
  bool ok = false;
  self->request(*hdl, std::chrono::seconds{5}, challenge_atom::value)
    .receive([&](std::string& x) { nonce = std::move(x); ok = true; },
             [&](caf::error& err) {
               say("no challenge: %s", tact::describe(err).c_str());
             });
  if (!ok)
    return 1;
  auto proof = [&](const std::string& purpose) {
    return creds ? creds->sign(claim_text(shard, purpose) + nonce)
                 : std::string{};
  };
  auto cert = creds ? creds->cert_pem() : std::string{};
  auto refused = [&](caf::error& err) {
    say("claim refused: %s", tact::describe(err).c_str());
    ok = false;
  };
  if (a.get("claim", "register") == "fetch") {
    auto from = a.number("from", 0);
    auto purpose = "fetch from shard-" + std::to_string(from);
    self->request(*hdl, std::chrono::seconds{5}, fetch_atom::value, shard,
                  cert, proof(purpose))
      .receive(
        [&](std::vector<entry>& entries) {
          say("claim accepted: fetched %zu entries as shard %u",
              entries.size(), shard);
        },
        refused);
  } else {
    std::string addr = "127.0.0.1:1";
    self->request(*hdl, std::chrono::seconds{5}, register_atom::value, shard,
                  addr, cert, proof("register at " + addr))
      .receive(
        [&](std::vector<std::string>&) {
          say("claim accepted: registered as shard %u", shard);
        },
        refused);
  }
  return ok ? 0 : 1;
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
