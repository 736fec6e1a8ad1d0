// The launcher: publishes the cluster directory, starts the shards and the
// gateway as children through tact's subprocess transport, prints their
// output line by line with a prefix, and restarts a node that exits while
// the cluster runs.

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>

#include <sys/stat.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/delegated.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "aof.hpp"
#include "identity.hpp"
#include "kv.hpp"
#include "pki.hpp"
#include "tact/transports/frames.hpp"
#include "tact/runtime/errc.hpp"

namespace kv {

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// -- directory --------------------------------------------------------------------------

// Where each shard serves, for the nodes that ask; a shard is listed from
// its registration until its node goes away.
class directory : public caf::event_based_actor {
public:
  // `check`: what proves a registration (none with --insecure).
  directory(caf::actor_config& cfg, uint32_t shards,
            std::shared_ptr<credential_check> check)
    : caf::event_based_actor(cfg), table_(shards), owners_(shards),
      check_(std::move(check)) {
  }

  caf::behavior make_behavior() override {
    set_down_handler([this](caf::down_msg& msg) { on_down(msg); });
    return {
      [this](table_atom) {
        subscribe();
        return table_;
      },
      [this](challenge_atom) -> std::string {
        if (!check_ || !current_sender())
          return {};
        return check_->challenge(current_sender()->address());
      },
      [this](register_atom, uint32_t id, std::string& addr,
             const std::string& cert,
             const std::string& sig) -> caf::result<std::vector<std::string>> {
        if (id >= table_.size())
          return caf::make_error(caf::sec::invalid_argument,
                                 "no shard " + std::to_string(id));
        if (!current_sender())
          return caf::make_error(caf::sec::invalid_argument,
                                 "an anonymous registration");
        if (check_) {
          auto err = check_->verify(current_sender()->address(), id,
                                    claim_text(id, "register at " + addr),
                                    cert, sig);
          if (err) {
            say("launcher: refused a registration as shard %u: %s", id,
                tact::describe(err).c_str());
            return err;
          }
        }
        owners_[id] = current_sender()->address();
        monitor(current_sender());
        set(id, addr);
        subscribe();
        return table_;
      },
    };
  }

private:
  void subscribe() {
    auto who = caf::actor_cast<caf::actor>(current_sender());
    if (!who || subscribers_.count(who.address()) > 0)
      return;
    monitor(who);
    subscribers_.emplace(who.address(), who);
  }

  void set(uint32_t id, const std::string& addr) {
    table_[id] = addr;
    for (auto& [addr_of, who] : subscribers_)
      send(who, update_atom::value, id, addr);
  }

  void on_down(const caf::down_msg& msg) {
    subscribers_.erase(msg.source);
    for (uint32_t id = 0; id < owners_.size(); ++id) {
      if (owners_[id] && owners_[id] == msg.source) {
        owners_[id] = nullptr;
        set(id, {});
      }
    }
  }

  std::vector<std::string> table_;
  std::vector<caf::actor_addr> owners_;
  std::map<caf::actor_addr, caf::actor> subscribers_;
  std::shared_ptr<credential_check> check_;
};

// -- one node's output --------------------------------------------------------------

// The protocol of one child: its stdout and stderr (merged) cut into
// lines and printed with the node's name; its exit goes to the supervisor.
class node_output final : public tact::subprocess_protocol {
public:
  node_output(std::string name, size_t index, caf::actor supervisor)
    : name_(std::move(name)),
      index_(index),
      supervisor_(std::move(supervisor)),
      lines_(tact::line_framing{"\n", 64 * 1024}) {
  }

  void connection_made(tact::transport& t) override { t_ = t; }

  void pipe_data_received(int, tact::bytes data) override {
    lines_.feed(std::move(data));
    for (;;) {
      auto line = lines_.next();
      if (!line) {
        // A line over 64 KiB: print what there is and start afresh.
        print(lines_.take_rest());
        lines_ = tact::frame_decoder{tact::line_framing{"\n", 64 * 1024}};
        return;
      }
      if (!*line)
        return;
      print(**line);
    }
  }

  void pipe_connection_lost(int, const caf::error&) override {
    if (auto rest = lines_.finish(); rest && *rest)
      print(**rest);
  }

  void process_exited() override {
    caf::anon_send(supervisor_, exited_atom::value, index_,
                   t_.get_returncode().value_or(-1));
  }

private:
  void print(const tact::bytes& line) {
    std::string text{line.begin(), line.end()};
    if (!text.empty() && text.back() == '\r')
      text.pop_back();
    // The gateway's address is the cluster's: printed as the launcher's.
    if (text.compare(0, 13, "listening on ") == 0) {
      say("%s", text.c_str());
      caf::anon_send(supervisor_, ready_atom::value, index_, text.substr(13));
      return;
    }
    say("[%s] %s", name_.c_str(), text.c_str());
  }

  std::string name_;
  size_t index_;
  caf::actor supervisor_;
  tact::transport t_;
  tact::frame_decoder lines_;
};

// -- supervisor -----------------------------------------------------------------------

struct node_spec {
  std::string name;
  std::vector<std::string> argv;
  tact::transport process;
  bool running = false;
  clock_type::time_point started;
  std::chrono::milliseconds backoff{250};
};

class supervisor : public caf::event_based_actor {
public:
  supervisor(caf::actor_config& cfg, tact::runtime* rt,
             std::vector<node_spec> nodes, std::chrono::milliseconds grace)
    : caf::event_based_actor(cfg), rt_(rt), nodes_(std::move(nodes)),
      grace_(grace) {
  }

  caf::behavior make_behavior() override {
    return {
      [this](start_atom) {
        for (size_t i = 0; i < nodes_.size(); ++i)
          start(i);
      },
      [this](retry_atom, size_t i) {
        if (!stopping_ && !nodes_[i].running)
          start(i);
      },
      [this](ready_atom, size_t i, const std::string& url) {
        // A restarted gateway comes back on the same port.
        auto colon = url.rfind(':');
        auto& argv = nodes_[i].argv;
        auto at = std::find(argv.begin(), argv.end(), "--port");
        if (colon != std::string::npos && at != argv.end()
            && at + 1 != argv.end())
          *(at + 1) = url.substr(colon + 1);
      },
      [this](exited_atom, size_t i, int code) { on_node_exit(i, code); },
      [this](stop_atom) -> caf::result<bool> {
        stopping_ = true;
        for (auto& n : nodes_)
          if (n.running)
            (void) n.process.terminate();
        if (running() == 0)
          return true;
        stopped_ = make_response_promise<bool>();
        delayed_send(this, grace_, stop_atom::value, true);
        return caf::delegated<bool>{};
      },
      [this](stop_atom, bool) {
        // Nodes that ignored SIGTERM: the stop is not clean.
        for (auto& n : nodes_) {
          if (n.running) {
            say("launcher: %s (pid %d) ignored SIGTERM; killing it",
                n.name.c_str(), n.process.get_pid());
            (void) n.process.kill();
            clean_ = false;
          }
        }
      },
    };
  }

private:
  size_t running() const {
    size_t n = 0;
    for (auto& nd : nodes_)
      n += nd.running ? 1 : 0;
    return n;
  }

  void start(size_t i) {
    auto& n = nodes_[i];
    tact::subprocess_options opts;
    opts.std_in = tact::subprocess_stdio::devnull;
    opts.std_err = tact::subprocess_stdio::stdout_merge;
    auto self = caf::actor{this};
    auto name = n.name;
    auto proc = rt_->subprocess_exec(
      [name, i, self] { return std::make_unique<node_output>(name, i, self); },
      n.argv, opts);
    if (!proc) {
      say("launcher: cannot start %s: %s", n.name.c_str(),
          tact::describe(proc.error()).c_str());
      retry_later(i);
      return;
    }
    n.process = *proc;
    n.running = true;
    n.started = clock_type::now();
    say("launcher: started %s (pid %d)", n.name.c_str(), n.process.get_pid());
  }

  void on_node_exit(size_t i, int code) {
    auto& n = nodes_[i];
    n.running = false;
    std::string how = code < 0 ? "killed by signal " + std::to_string(-code)
                               : "exited with status " + std::to_string(code);
    if (stopping_) {
      say("launcher: %s (pid %d) %s", n.name.c_str(), n.process.get_pid(),
          how.c_str());
      if (running() == 0 && stopped_.pending())
        stopped_.deliver(clean_);
      return;
    }
    // A node that dies soon after its start waits longer each time.
    if (clock_type::now() - n.started < 2s)
      n.backoff = std::min<std::chrono::milliseconds>(n.backoff * 2, 5s);
    else
      n.backoff = 250ms;
    say("launcher: %s (pid %d) %s; restarting in %lld ms", n.name.c_str(),
        n.process.get_pid(), how.c_str(),
        static_cast<long long>(n.backoff.count()));
    retry_later(i);
  }

  void retry_later(size_t i) {
    delayed_send(this, nodes_[i].backoff, retry_atom::value, i);
  }

  tact::runtime* rt_;
  std::vector<node_spec> nodes_;
  bool stopping_ = false;
  bool clean_ = true;
  // How long a node may take to end after SIGTERM.
  std::chrono::milliseconds grace_;
  caf::typed_response_promise<bool> stopped_;
};

std::string own_executable() {
  char buf[4096];
  auto n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return "kv_cluster";
  return std::string(buf, static_cast<size_t>(n));
}

} // namespace

int run_launcher(const args& a) {
  auto shards = a.number("shards", 3);
  auto port = a.number("port", 6380);
  auto host = a.get("host", "127.0.0.1");
  if (shards < 1 || shards > 1024 || port < 0 || port > 65535) {
    std::fprintf(stderr, "kv_cluster: --shards 1..1024 and --port 0..65535\n");
    return 2;
  }
  fsync_policy policy;
  auto appendonly = a.get("appendonly", "yes");
  if ((appendonly != "yes" && appendonly != "no")
      || !parse_fsync(a.get("fsync", "everysec"), policy)) {
    std::fprintf(stderr, "kv_cluster: --appendonly yes|no and --fsync "
                         "always|everysec|no\n");
    return 2;
  }
  std::vector<bool> remote(static_cast<size_t>(shards), false);
  {
    auto list = a.get("remote-shards");
    size_t pos = 0;
    while (pos < list.size()) {
      auto comma = list.find(',', pos);
      auto item = list.substr(pos, comma == std::string::npos ? comma
                                                               : comma - pos);
      auto id = std::atol(item.c_str());
      if (item.empty() || id < 0 || id >= shards) {
        std::fprintf(stderr, "kv_cluster: --remote-shards: no shard '%s'\n",
                     item.c_str());
        return 2;
      }
      remote[static_cast<size_t>(id)] = true;
      if (comma == std::string::npos)
        break;
      pos = comma + 1;
    }
  }
  // The cluster's links are mutually authenticated TLS: with the CA and
  // certificates given (nodes on several machines), or with a CA made now
  // for this run (removed at the end). --insecure: plain BASP, which
  // admits whoever connects.
  auto opts = a;
  std::optional<cluster_pki> pki;
  std::vector<std::string> tls_args;
  auto identity = [&](const std::string& name) {
    if (!pki)
      return tls_args;
    for (auto& n : pki->nodes)
      if (n.name == name)
        return std::vector<std::string>{"--ca", pki->ca_file, "--cert",
                                        n.cert_file, "--key", n.key_file};
    return tls_args;
  };
  if (a.has("insecure")) {
    tls_args = {"--insecure"};
    say("launcher: --insecure: the cluster's links are plain BASP (no "
        "authentication, no encryption)");
  } else if (a.has("ca") || a.has("cert") || a.has("key")) {
    tls_args = {"--ca", a.get("ca"), "--cert", a.get("cert"), "--key",
                a.get("key")};
  } else {
    std::vector<std::string> names{"directory", "gateway"};
    for (long id = 0; id < shards; ++id)
      names.push_back("shard-" + std::to_string(id));
    std::string error;
    pki = make_cluster_pki(names, error);
    if (!pki) {
      std::fprintf(stderr, "kv_cluster: %s\n", error.c_str());
      return 1;
    }
    say("launcher: the cluster's CA and certificates are in %s (removed "
        "at exit)", pki->dir.c_str());
    auto mine = identity("directory");
    opts.values["ca"] = mine[1];
    opts.values["cert"] = mine[3];
    opts.values["key"] = mine[5];
  }
  // Removed however the launcher returns.
  std::shared_ptr<void> pki_guard{nullptr, [&pki](void*) {
    if (pki)
      remove_cluster_pki(*pki);
  }};
  std::shared_ptr<credential_check> check;
  if (!a.has("insecure")) {
    std::string error;
    check = credential_check::load(opts.get("ca"), error);
    if (!check) {
      std::fprintf(stderr, "kv_cluster: %s\n", error.c_str());
      return 1;
    }
  }
  tact::runtime rt{node_options(opts)};
  auto dir = rt.system().spawn<directory>(static_cast<uint32_t>(shards),
                                          std::move(check));
  auto dir_port = rt.publish(
    dir, static_cast<uint16_t>(a.number("cluster-port", 0)), host);
  if (!dir_port) {
    std::fprintf(stderr, "kv_cluster: cannot publish the directory on %s: %s\n",
                 host.c_str(), tact::describe(dir_port.error()).c_str());
    caf::anon_send_exit(dir, caf::exit_reason::user_shutdown);
    return 1;
  }
  auto join = join_address(host, *dir_port);
  say("launcher: cluster directory on %s (%ld shards); links: %s", join.c_str(),
      shards,
      a.has("insecure") ? "plain BASP (insecure)"
                        : "TLS 1.3, certificates from the cluster's CA "
                          "required both ways");
  // Each shard's log: in --data-dir, which a launcher started again later
  // gives to its shards again.
  std::vector<std::string> log_args{"--appendonly",
                                    a.get("appendonly", "yes")};
  if (log_args[1] == "yes") {
    auto data = a.get("data-dir", "kv_cluster-data");
    if (::mkdir(data.c_str(), 0700) != 0 && errno != EEXIST) {
      std::fprintf(stderr, "kv_cluster: cannot make %s: %s\n", data.c_str(),
                   std::strerror(errno));
      return 1;
    }
    // Absolute, for shards started elsewhere (a remote shard's hint).
    char* full = ::realpath(data.c_str(), nullptr);
    if (full) {
      data = full;
      std::free(full);
    }
    log_args.insert(log_args.end(), {"--data-dir", data, "--fsync",
                                     a.get("fsync", "everysec")});
    say("launcher: the shards log their writes in %s (fsync %s)",
        data.c_str(), a.get("fsync", "everysec").c_str());
  } else {
    say("launcher: --appendonly no: the shards keep no log; what they hold "
        "is lost when a key's two holders are down together");
  }
  auto exe = own_executable();
  std::vector<node_spec> nodes;
  for (long id = 0; id < shards; ++id) {
    auto tls = identity("shard-" + std::to_string(id));
    tls.insert(tls.end(), log_args.begin(), log_args.end());
    if (remote[static_cast<size_t>(id)]) {
      std::string hint;
      for (auto& w : tls)
        hint += " " + w;
      say("launcher: shard %ld is to join from elsewhere: kv_cluster --role "
          "shard --id %ld --shards %ld --join %s --host NAME [--node-port P]%s",
          id, id, shards, join.c_str(), hint.c_str());
      continue;
    }
    std::vector<std::string> argv{exe, "--role", "shard", "--id",
                                  std::to_string(id), "--shards",
                                  std::to_string(shards), "--join", join,
                                  "--host", host, "--threads",
                                  a.get("threads", "1"), "--supervised"};
    argv.insert(argv.end(), tls.begin(), tls.end());
    nodes.push_back({"shard " + std::to_string(id), std::move(argv)});
  }
  std::vector<std::string> gateway_argv{
    exe, "--role", "gateway", "--shards", std::to_string(shards), "--join",
    join, "--host", host, "--port", std::to_string(port), "--timeout-ms",
    a.get("timeout-ms", "3000"), "--threads", a.get("threads", "1"),
    "--supervised"};
  if (a.has("requirepass-file")) {
    gateway_argv.push_back("--requirepass-file");
    gateway_argv.push_back(a.get("requirepass-file"));
  }
  for (auto* option : {"client-output-limit", "max-query-bytes",
                       "max-keys-in-flight"}) {
    if (a.has(option)) {
      gateway_argv.push_back(std::string{"--"} + option);
      gateway_argv.push_back(a.get(option));
    }
  }
  gateway_argv.push_back("--appendonly");
  gateway_argv.push_back(a.get("appendonly", "yes"));
  auto gateway_tls = identity("gateway");
  gateway_argv.insert(gateway_argv.end(), gateway_tls.begin(),
                      gateway_tls.end());
  nodes.push_back({"gateway", std::move(gateway_argv)});
  auto grace = std::chrono::milliseconds{a.number("stop-grace-ms", 5000)};
  auto sup = rt.system().spawn<supervisor>(&rt, std::move(nodes), grace);
  caf::anon_send(sup, start_atom::value);
  auto sig = rt.wait_for_signal();
  say("launcher: signal %d, stopping the nodes", sig);
  // 0 only if every node ended on SIGTERM.
  int status = 1;
  {
    caf::scoped_actor self{rt.system()};
    self->request(sup, grace + 5s, stop_atom::value)
      .receive([&](bool clean) { status = clean ? 0 : 1; },
               [](caf::error& err) {
                 say("launcher: nodes did not stop: %s",
                     tact::describe(err).c_str());
               });
  }
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(dir, caf::exit_reason::user_shutdown);
  rt.shutdown(std::chrono::milliseconds{200});
  return status;
}

} // namespace kv
