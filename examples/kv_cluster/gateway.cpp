// The gateway node: a tact TCP server speaking the Redis protocol (RESP).
// One session actor per connection parses commands and keeps the answers
// in order; one router actor (gateway_router.cpp) sends each command to the
// shards that hold its key, through remote actors, and turns the answers
// into RESP.

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/delegated.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "gateway.hpp"
#include "kv.hpp"
#include "tact/protocols/resp.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace kv {

namespace {

using namespace std::chrono_literals;
using gateway::clients;
using gateway::error_text;
using gateway::key_token;
using gateway::lower;
using gateway::shared_budget;

// -- session: one client connection ---------------------------------------------------

// Commands in flight per connection, and keys in them, before reading
// stops; the keys one command may name.
constexpr size_t max_in_flight = 1024;
constexpr size_t max_in_flight_args = 64 * 1024;
constexpr size_t max_command_keys = 64 * 1024;
// Until a connection's first answers show how large they are, this many
// commands at most are in flight (1,024 GETs of a 1 MiB value would be a
// GiB on its way before the first came back).
constexpr size_t first_in_flight = 32;
// The answers in flight per connection, estimated from the answers so
// far: the in-flight limit is this over their average size.
constexpr size_t in_flight_bytes = 16 * 1024 * 1024;
// What one command may hold (Redis's defaults are 512 MB for a bulk
// string and 1 GB for a client's query buffer).
constexpr tact::resp::limits command_limits{512 * 1024 * 1024, 1024 * 1024,
                                            64 * 1024};
constexpr size_t max_query = 1024 * 1024 * 1024;

// Redis's client-output-buffer-limit: past `hard` bytes of answers unread,
// or past `soft` for `soft_for`, the client is disconnected (0: no limit).
struct output_limits {
  size_t hard = 64 * 1024 * 1024;
  size_t soft = 16 * 1024 * 1024;
  std::chrono::milliseconds soft_for{10000};
};

class session : public caf::event_based_actor {
public:
  session(caf::actor_config& cfg, caf::actor router, output_limits limits,
          std::shared_ptr<const std::string> password,
          std::shared_ptr<shared_budget> budget, bool appendonly)
    : caf::event_based_actor(cfg), router_(std::move(router)),
      limits_(limits), password_(std::move(password)),
      authenticated_(!password_ || password_->empty()),
      budget_(std::move(budget)), appendonly_(appendonly) {
    ++clients;
  }

  ~session() override {
    --clients;
  }

  void on_exit() override {
    budget_->leave(address());
  }

  caf::behavior make_behavior() override {
    return {
      [this](tact::connection_made& msg) { t_ = msg.handle; },
      [this](tact::data_received& msg) {
        auto n = msg.data.size();
        decoder_.feed(std::string_view{msg.data.data(), n});
        t_.consumed(n);
        pump();
      },
      // Keys were given back: the command waiting for them may go.
      [this](retry_atom, bool) { pump(); },
      // Disconnected: over the query bytes all clients may hold, this one
      // holds the most.
      [this](evict_atom) { evict(); },
      [this](tact::eof_received) {
        // Answer what was asked, then close.
        eof_ = true;
        pump();
        return true;
      },
      [this](tact::pause_writing) {
        writing_paused_ = true;
        steer();
      },
      [this](tact::resume_writing) {
        writing_paused_ = false;
        pump();
      },
      [this](tact::connection_lost&) { quit(); },
      // The soft limit's time is up: still over it?
      [this](retry_atom) {
        soft_check_pending_ = false;
        over_output_limit();
      },
    };
  }

private:
  // Writes the answers that are ready, runs the commands that may run,
  // and decides about reading and closing.
  void pump() {
    flush();
    if (over_output_limit())
      return;
    while (!closing_ && !writing_paused_ && slots_.size() < in_flight_limit()
           && args_in_flight_ < max_in_flight_args) {
      // Parsed, a command costs more than its bytes: none is parsed while
      // the keys in flight across clients are at their limit.
      if (!budget_->room(address())) {
        waiting_ = true;
        break;
      }
      waiting_ = false;
      auto next = decoder_.next();
      if (!next) {
        // Redis's words: "Protocol error: invalid bulk length".
        auto text = tact::describe(next.error());
        auto open = text.find(" (");
        if (open != std::string::npos && text.back() == ')')
          text = text.substr(open + 2, text.size() - open - 3);
        answer_now("ERR Protocol error: " + text, true);
        closing_ = true;
        break;
      }
      if (!*next) {
        // A command still coming is read on, up to the query limit.
        if (decoder_.buffered() > max_query) {
          answer_now("ERR Protocol error: query buffer limit", true);
          closing_ = true;
        }
        break;
      }
      run(std::move(**next));
    }
    account();
    flush();
    steer();
    // After the peer's EOF, what is left unparsed is a command cut short
    // (unless it waits for room among the keys in flight).
    if (!t_.is_closing() && slots_.empty()
        && (closing_ || (eof_ && !writing_paused_ && !waiting_)))
      t_.close();
  }

  // Stops reading while answers or unparsed bytes pile up.
  void steer() {
    // Whole commands wait unparsed only behind these; a command still
    // coming never stops reading, or it could never complete.
    bool pause = writing_paused_ || slots_.size() >= in_flight_limit()
                 || args_in_flight_ >= max_in_flight_args || closing_
                 || waiting_;
    if (pause && !paused_) {
      t_.pause_reading();
      paused_ = true;
    } else if (!pause && paused_) {
      t_.resume_reading();
      paused_ = false;
    }
  }

  void answer_now(std::string text, bool is_error) {
    std::string out;
    if (is_error)
      tact::resp::append_error(out, text);
    else
      out = std::move(text);
    slots_.emplace_back(std::move(out));
  }

  // Whether `given` is the password; the time taken does not depend on
  // how much of it matches.
  [[nodiscard]] bool password_is(const std::string& given) const {
    auto& want = *password_;
    unsigned char diff = given.size() == want.size() ? 0 : 1;
    for (size_t i = 0; i < given.size(); ++i)
      diff |= static_cast<unsigned char>(given[i])
              ^ static_cast<unsigned char>(want[i % want.size()]);
    return diff == 0;
  }

  // AUTH [default] PASSWORD, and HELLO's AUTH: Redis's answers.
  std::string authenticate(const std::string* user, const std::string& pass) {
    if (!password_ || password_->empty())
      return "-ERR AUTH <password> called without any password configured "
             "for the default user. Are you sure your configuration is "
             "correct?\r\n";
    if ((user != nullptr && *user != "default") || !password_is(pass)) {
      authenticated_ = false;
      return "-WRONGPASS invalid username-password pair or user is "
             "disabled.\r\n";
    }
    authenticated_ = true;
    return "+OK\r\n";
  }

  // Tells the budget what this connection holds unparsed; past the limit
  // across clients, the largest holder goes.
  void account() {
    auto victim = budget_->hold(address(), decoder_.buffered());
    if (!victim)
      return;
    if (victim == address())
      evict();
    else if (auto hdl = caf::actor_cast<caf::actor>(victim))
      caf::anon_send(hdl, evict_atom::value);
  }

  void evict() {
    if (closing_)
      return;
    auto peer = t_.get_extra_info("peername");
    say("gateway: client %s disconnected: %zu bytes of commands unread, the "
        "most of all clients, which hold more than %zu bytes together",
        peer ? caf::deep_to_string(*peer).c_str() : "?", decoder_.buffered(),
        budget_->max_query());
    decoder_ = tact::resp::command_decoder{command_limits};
    waiting_ = false;
    answer_now("ERR Protocol error: query buffer limit of all clients", true);
    closing_ = true;
    budget_->hold(address(), 0);
    pump();
  }

  void run(tact::resp::command cmd) {
    auto name = lower(cmd[0]);
    std::string out;
    if (name == "auth" && (cmd.size() == 2 || cmd.size() == 3)) {
      out = cmd.size() == 2 ? authenticate(nullptr, cmd[1])
                            : authenticate(&cmd[1], cmd[2]);
    } else if (name == "auth") {
      tact::resp::append_error(out, "ERR wrong number of arguments for 'auth' "
                                    "command");
    } else if (name == "hello") {
      // RESP2 only; HELLO 2 [AUTH user pass] [SETNAME name].
      if (cmd.size() >= 2 && cmd[1] != "2") {
        tact::resp::append_error(out, "NOPROTO unsupported protocol version");
      } else {
        for (size_t k = 2; k < cmd.size() && out.empty();) {
          auto option = lower(cmd[k]);
          if (option == "auth" && k + 2 < cmd.size()) {
            out = authenticate(&cmd[k + 1], cmd[k + 2]);
            if (out == "+OK\r\n")
              out.clear();
            k += 3;
          } else if (option == "setname" && k + 1 < cmd.size()) {
            k += 2;
          } else {
            tact::resp::append_error(out, "ERR Syntax error in HELLO option '"
                                            + cmd[k] + "'");
          }
        }
        if (out.empty()) {
          out.clear();
          if (!authenticated_) {
            out = "-NOAUTH HELLO must be called with the client already "
                  "authenticated, otherwise the HELLO <proto> AUTH <user> "
                  "<pass> option can be used to authenticate the client and "
                  "select the RESP protocol version at the same time\r\n";
          } else {
            tact::resp::append_array_header(out, 6);
            tact::resp::append_bulk(out, "server");
            tact::resp::append_bulk(out, "kv_cluster");
            tact::resp::append_bulk(out, "proto");
            tact::resp::append_integer(out, 2);
            tact::resp::append_bulk(out, "mode");
            tact::resp::append_bulk(out, "cluster-gateway");
          }
        }
      }
    } else if (!authenticated_ && name != "quit") {
      out = "-NOAUTH Authentication required.\r\n";
    } else if (name == "ping") {
      if (cmd.size() == 1)
        out = "+PONG\r\n";
      else if (cmd.size() == 2)
        tact::resp::append_bulk(out, cmd[1]);
      else
        tact::resp::append_error(
          out, "ERR wrong number of arguments for 'ping' command");
    } else if (name == "echo" && cmd.size() == 2) {
      tact::resp::append_bulk(out, cmd[1]);
    } else if (name == "quit") {
      out = "+OK\r\n";
      closing_ = true;
    } else if (name == "select" && cmd.size() == 2) {
      out = cmd[1] == "0" ? "+OK\r\n" : "-ERR DB index is out of range\r\n";
    } else if (name == "command") {
      // redis-cli asks for the command table to offer hints.
      tact::resp::append_array_header(out, 0);
    } else if (name == "config" && cmd.size() == 3 && lower(cmd[1]) == "get") {
      // redis-benchmark asks these two; the store is in memory only.
      auto param = lower(cmd[2]);
      // Shards keep no snapshots; each keeps a log unless
      // --appendonly no.
      if (param == "save" || param == "appendonly") {
        tact::resp::append_array_header(out, 2);
        tact::resp::append_bulk(out, param);
        tact::resp::append_bulk(out, param == "save"  ? ""
                                     : appendonly_    ? "yes"
                                                      : "no");
      } else {
        tact::resp::append_array_header(out, 0);
      }
    } else if (cmd.size() > max_command_keys + 1) {
      tact::resp::append_error(
        out, "ERR too many arguments for one command: "
               + std::to_string(cmd.size() - 1) + " (the gateway takes "
               + std::to_string(max_command_keys) + ")");
    } else {
      auto weight = cmd.size();
      key_token keys{budget_->take_keys(budget_, weight)};
      auto seq = next_seq_++;
      args_in_flight_ += weight;
      slots_.emplace_back(std::nullopt);
      request(router_, caf::infinite, command_atom::value, std::move(cmd),
              std::move(keys))
        .then(
          [this, seq, weight](std::string& answer) {
            args_in_flight_ -= weight;
            fill(seq, std::move(answer));
          },
          [this, seq, weight](caf::error& err) {
            args_in_flight_ -= weight;
            fill(seq, error_text("ERR " + tact::describe(err)));
          });
      return;
    }
    ++next_seq_;
    slots_.emplace_back(std::move(out));
  }

  void fill(uint64_t seq, std::string answer) {
    auto at = seq - first_seq_;
    if (seq < first_seq_ || at >= slots_.size())
      return;
    ++answers_;
    answer_bytes_ += answer.size();
    held_ += answer.size();
    slots_[at] = std::move(answer);
    pump();
  }

  // Commands that may be in flight: few until answers have come, then as
  // many as fit in_flight_bytes at the average answer size so far.
  [[nodiscard]] size_t in_flight_limit() const {
    if (answers_ == 0)
      return first_in_flight;
    auto average = std::max<uint64_t>(answer_bytes_ / answers_, 1);
    return std::clamp<size_t>(in_flight_bytes / average, 1, max_in_flight);
  }

  // A client that does not read what it asked for: past the output limit
  // (answers queued in the transport, and ready ones behind an unanswered
  // command) it is disconnected, as Redis does with
  // client-output-buffer-limit.
  bool over_output_limit() {
    if (closing_)
      return false;
    auto pending = t_.get_write_buffer_size() + held_;
    auto now = std::chrono::steady_clock::now();
    const char* which = nullptr;
    if (limits_.hard > 0 && pending > limits_.hard) {
      which = "hard";
    } else if (limits_.soft > 0 && pending > limits_.soft) {
      if (!soft_since_)
        soft_since_ = now;
      if (now - *soft_since_ >= limits_.soft_for)
        which = "soft";
      else if (!soft_check_pending_) {
        soft_check_pending_ = true;
        delayed_send(this, limits_.soft_for, retry_atom::value);
      }
    } else {
      soft_since_.reset();
    }
    if (which == nullptr)
      return false;
    auto peer = t_.get_extra_info("peername");
    say("gateway: client %s disconnected: %zu bytes of answers unread, over "
        "the %s output limit (%zu bytes%s)",
        peer ? caf::deep_to_string(*peer).c_str() : "?", pending, which,
        which[0] == 'h' ? limits_.hard : limits_.soft,
        which[0] == 'h' ? ""
                        : (" for " + std::to_string(limits_.soft_for.count())
                           + " ms")
                            .c_str());
    closing_ = true;
    t_.abort();
    return true;
  }

  // Writes the answers that are ready, in order, in one write.
  void flush() {
    std::string out;
    while (!slots_.empty() && slots_.front()) {
      out += *slots_.front();
      slots_.pop_front();
      ++first_seq_;
    }
    held_ -= std::min(held_, out.size());
    if (!out.empty())
      t_.write(out);
  }

  caf::actor router_;
  // How many bytes of answers a client may leave unread, and how long.
  output_limits limits_;
  std::optional<std::chrono::steady_clock::time_point> soft_since_;
  bool soft_check_pending_ = false;
  // The password AUTH wants (none or empty: no AUTH).
  std::shared_ptr<const std::string> password_;
  bool authenticated_;
  tact::transport t_;
  tact::resp::command_decoder decoder_{command_limits};
  // Answers from the shards so far, their bytes, and the bytes of those
  // ready and not yet written (behind one still awaited).
  uint64_t answers_ = 0;
  uint64_t answer_bytes_ = 0;
  size_t held_ = 0;
  size_t args_in_flight_ = 0;
  // What all clients may hold together.
  std::shared_ptr<shared_budget> budget_;
  // Whether it waits for room among the keys in flight across clients.
  bool waiting_ = false;
  bool appendonly_;
  std::deque<std::optional<std::string>> slots_;
  uint64_t first_seq_ = 0;
  uint64_t next_seq_ = 0;
  bool writing_paused_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool eof_ = false;
};

} // namespace

int run_gateway(const args& a) {
  auto shards = a.number("shards", 0);
  auto host = a.get("host", "127.0.0.1");
  auto port = a.number("port", 6380);
  if (shards < 1 || !a.has("join") || port < 0 || port > 65535) {
    std::fprintf(stderr, "kv_cluster gateway: needs --shards N --join "
                         "HOST:PORT --port PORT\n");
    return 2;
  }
  die_with_parent(a);
  tact::runtime rt{node_options(a)};
  auto dir = join_directory(rt, a, "gateway");
  if (!dir)
    return 1;
  auto timeout = std::chrono::milliseconds{a.number("timeout-ms", 3000)};
  auto rtr = gateway::spawn_router(rt.system(), static_cast<uint32_t>(shards),
                                  dir, a.get("join"), timeout);
  // Serve once every shard is known.
  {
    caf::scoped_actor self{rt.system()};
    bool ready = false;
    self->request(rtr, 60s, ready_atom::value)
      .receive([&](bool) { ready = true; },
               [&](caf::error& err) {
                 std::fprintf(stderr,
                              "kv_cluster gateway: shards not ready: %s\n",
                              tact::describe(err).c_str());
               });
    if (!ready) {
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 1;
    }
  }
  auto& sys = rt.system();
  // --client-output-limit HARD,SOFT,SECONDS (bytes, bytes, seconds).
  output_limits output_limit;
  if (a.has("client-output-limit")) {
    unsigned long long hard = 0;
    unsigned long long soft = 0;
    double secs = 0;
    if (std::sscanf(a.get("client-output-limit").c_str(), "%llu,%llu,%lf",
                    &hard, &soft, &secs)
          != 3
        || secs < 0 || secs > 86400) {
      std::fprintf(stderr, "kv_cluster gateway: --client-output-limit wants "
                           "HARD,SOFT,SECONDS\n");
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 2;
    }
    output_limit = output_limits{
      static_cast<size_t>(hard), static_cast<size_t>(soft),
      std::chrono::milliseconds{static_cast<int64_t>(secs * 1000)}};
  }
  // --requirepass-file: its first line is the password (a file, so that
  // it shows in no process listing).
  std::shared_ptr<const std::string> password;
  if (a.has("requirepass-file")) {
    std::ifstream in{a.get("requirepass-file")};
    std::string line;
    if (!in || !std::getline(in, line) || line.empty()) {
      std::fprintf(stderr, "kv_cluster gateway: no password in %s\n",
                   a.get("requirepass-file").c_str());
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 2;
    }
    password = std::make_shared<const std::string>(std::move(line));
  }
  // Across clients: the bytes of commands read and not yet run, and the
  // keys of commands in flight to the shards (0: no limit).
  auto max_query_bytes = a.number("max-query-bytes", 256L * 1024 * 1024);
  auto max_keys = a.number("max-keys-in-flight", 128L * 1024);
  // A command starts whenever fewer keys than the bound are in flight, so
  // one larger than the bound still runs (alone).
  if (max_query_bytes < 0 || max_keys < 0) {
    std::fprintf(stderr, "kv_cluster gateway: --max-query-bytes N >= 0 and "
                         "--max-keys-in-flight N >= 0\n");
    caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
    return 2;
  }
  auto budget = std::make_shared<shared_budget>(
    static_cast<size_t>(max_query_bytes), static_cast<size_t>(max_keys));
  bool appendonly = a.get("appendonly", "yes") == "yes";
  auto srv = rt.create_server(
    [&sys, rtr, output_limit, password, budget, appendonly] {
      return caf::actor{sys.spawn<session>(rtr, output_limit, password,
                                           budget, appendonly)};
    },
    host, static_cast<uint16_t>(port));
  if (!srv) {
    std::fprintf(stderr, "kv_cluster gateway: cannot listen on %s:%ld: %s\n",
                 host.c_str(), port, tact::describe(srv.error()).c_str());
    caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
    return 1;
  }
  for (auto& url : srv->urls())
    say("listening on %s", url.c_str());
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
  caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
  return 0;
}

} // namespace kv
