#pragma once

// What the nodes of kv_cluster share: the messages between them, where a
// key lives, and the command line.
//
// Every key lives on two shards: its primary, `hash(key) % N`, and the
// next one, its replica. Writes go to the primary when it is up, else to
// the replica; the shard that takes a write applies it and copies it to
// the other holder before it answers, so an acknowledged write is on both
// holders that are alive. A restarted shard fetches its keys from its two
// neighbours before it registers with the directory, and only registered
// shards get commands.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>

#include "tact/runtime/distribution.hpp"

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

namespace kv {

// -- messages -------------------------------------------------------------------

// Gateway to shard: (batch_atom, std::vector<op>), answered with one
// `reply` per op, in order.
using batch_atom = caf::atom_constant<caf::atom("kv_batch")>;

// Shard to shard.
// (repl_atom, std::vector<entry>): the other holder's copies of writes;
// answered with a `reply`.
using repl_atom = caf::atom_constant<caf::atom("kv_repl")>;
// (fetch_atom, id, cert, signature): every entry shard `id` holds too;
// the sender gets the writes that follow as well. The certificate and
// signature prove that the sender is shard `id` (identity.hpp).
using fetch_atom = caf::atom_constant<caf::atom("kv_fetch")>;

// Directory.
// (table_atom) -> addresses (one per shard, "" for none); the sender gets
// (update_atom, id, address) from then on.
using table_atom = caf::atom_constant<caf::atom("kv_table")>;
// (register_atom, id, address, cert, signature) -> addresses: the shard
// serves (proved as for fetch_atom).
using register_atom = caf::atom_constant<caf::atom("kv_reg")>;
using update_atom = caf::atom_constant<caf::atom("kv_update")>;
// To the directory or a shard: (challenge_atom) -> bytes to sign, for the
// next registration or fetch.
using challenge_atom = caf::atom_constant<caf::atom("kv_chall")>;

// Within a node.
using start_atom = caf::atom_constant<caf::atom("kv_start")>;
using ready_atom = caf::atom_constant<caf::atom("kv_ready")>;
using command_atom = caf::atom_constant<caf::atom("kv_cmd")>;
using exited_atom = caf::atom_constant<caf::atom("kv_exited")>;
using stop_atom = caf::atom_constant<caf::atom("kv_stop")>;
using retry_atom = caf::atom_constant<caf::atom("kv_retry")>;
// A node to itself: connect to the directory again (it was lost).
using rejoin_atom = caf::atom_constant<caf::atom("kv_rejoin")>;
// Gateway, to a client's session: over the query bytes all clients may
// hold, it holds the most; it is disconnected.
using evict_atom = caf::atom_constant<caf::atom("kv_evict")>;
// To oneself: send what was gathered while the mailbox was read.
using flush_atom = caf::atom_constant<caf::atom("kv_flush")>;

/// One key's state. A deleted key stays as a tombstone, so that a delete
/// wins over the older value in a copy or a fetch.
struct entry {
  std::string key;
  std::string value;
  uint64_t version = 0;
  bool present = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, entry& x) {
  return f(caf::meta::type_name("kv.entry"), x.key, x.value, x.version,
           x.present);
}

/// Whether `a` replaces `b`: the higher version, and on a tie (two holders
/// took writes at once during a failover) a fixed order, so that both
/// holders keep the same one.
inline bool newer(const entry& a, const entry& b) {
  if (a.version != b.version)
    return a.version > b.version;
  if (a.present != b.present)
    return a.present;
  return a.value > b.value;
}

/// What an `op` asks.
namespace kind {
constexpr uint8_t get = 0;
constexpr uint8_t set = 1;
constexpr uint8_t del = 2;
constexpr uint8_t exists = 3;
constexpr uint8_t incr = 4;
constexpr uint8_t count = 5; // keys held whose primary is `arg`
} // namespace kind

/// One command for a shard. The gateway sends those bound for one shard
/// together: one BASP message for many commands.
struct op {
  uint8_t what = kind::get;
  std::string key;
  std::string value;
  uint32_t arg = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, op& x) {
  return f(caf::meta::type_name("kv.op"), x.what, x.key, x.value, x.arg);
}

/// What a shard's answer says.
namespace status {
constexpr uint8_t ok = 0;      // done; `n` and `value` as the command says
constexpr uint8_t missing = 1; // GET of a key that is not there
constexpr uint8_t error = 2;   // failed; `value` says why (Redis's words)
constexpr uint8_t unavailable = 3; // not serving yet: ask the other holder
} // namespace status

/// A shard's answer.
struct reply {
  uint8_t code = status::ok;
  int64_t n = 0;
  std::string value;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reply& x) {
  return f(caf::meta::type_name("kv.reply"), x.code, x.n, x.value);
}

/// Announces the types above; every node calls it.
inline void announce(caf::actor_system_config& cfg) {
  cfg.add_message_type<entry>("kv.entry")
    .add_message_type<std::vector<entry>>("kv.entries")
    .add_message_type<reply>("kv.reply")
    .add_message_type<std::vector<reply>>("kv.replies")
    .add_message_type<op>("kv.op")
    .add_message_type<std::vector<op>>("kv.ops")
    .add_message_type<std::vector<std::string>>("kv.strings");
}

// -- placement --------------------------------------------------------------------

inline uint32_t primary_of(const std::string& key, uint32_t shards) {
  // FNV-1a: stable across processes and machines.
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % shards);
}

inline uint32_t replica_of(uint32_t primary, uint32_t shards) {
  return (primary + 1) % shards;
}

/// Whether shard `id` holds keys whose primary is `primary`.
inline bool holds(uint32_t id, uint32_t primary, uint32_t shards) {
  return id == primary || id == replica_of(primary, shards);
}

// -- command line -----------------------------------------------------------------

/// `--name value` pairs and `--flag`s.
struct args {
  std::map<std::string, std::string> values;

  [[nodiscard]] bool has(const std::string& name) const {
    return values.count(name) > 0;
  }
  [[nodiscard]] std::string get(const std::string& name,
                                const std::string& fallback = {}) const {
    auto i = values.find(name);
    return i == values.end() ? fallback : i->second;
  }
  [[nodiscard]] long number(const std::string& name, long fallback) const;
};

/// False for something that is not `--name [value]`.
bool parse_args(int argc, char** argv, args& out);

/// Splits `HOST:PORT` (the host may be `[v6]`); false if malformed.
bool split_address(const std::string& addr, std::string& host,
                   uint16_t& port);

/// `HOST:PORT`, with brackets around an IPv6 host.
inline std::string join_address(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos)
    return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

/// One line on stdout, flushed, so that a launcher reading the pipe sees it
/// at once.
void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// -- what every node does ------------------------------------------------------

/// A runtime for a node: distributed, the kv types announced, SIGINT and
/// SIGTERM for `wait_for_signal`, `--threads` CAF workers (default 1).
tact::runtime_options node_options(const args& a);

/// The directory at `--join` (`HOST:PORT`), tried for up to 10 s; on
/// failure, says why on stderr (as `role`) and returns no actor.
caf::actor join_directory(tact::runtime& rt, const args& a,
                          const char* role);

/// With `--supervised` (set by the launcher): the node gets SIGTERM when
/// the launcher dies, so no node outlives it.
void die_with_parent(const args& a);


/// Connects to the actor published at `addr` without blocking `self`:
/// `ok(actor)` or `fail(error)` later, in `self`'s context.
template <class Ok, class Fail>
void connect_async(caf::event_based_actor* self, const std::string& addr,
                   Ok ok, Fail fail) {
  std::string host;
  uint16_t port = 0;
  if (!split_address(addr, host, port)) {
    fail(caf::make_error(caf::sec::invalid_argument, "bad address " + addr));
    return;
  }
  // Over TLS when the cluster's links are (never a plain link beside).
  auto mm = tact::link_actor(self->system());
  self->request(mm, std::chrono::seconds{5}, caf::connect_atom::value, host,
                port)
    .then(
      [=](const caf::node_id&, caf::strong_actor_ptr& ptr,
          const std::set<std::string>&) mutable {
        if (ptr)
          ok(caf::actor_cast<caf::actor>(std::move(ptr)));
        else
          fail(caf::make_error(caf::sec::no_actor_published_at_port,
                               "nothing published at " + addr));
      },
      [=](caf::error& err) mutable { fail(err); });
}

/// A node's link to the directory. When it is lost the node goes on
/// serving and makes it again, with back-off (250 ms, doubling to 5 s);
/// `joined` runs in the node's actor each time it is made again.
class directory_link {
public:
  directory_link(caf::actor dir, std::string join)
    : dir_(std::move(dir)), join_(std::move(join)) {
  }

  /// The directory; empty while the link is down.
  [[nodiscard]] const caf::actor& actor() const noexcept {
    return dir_;
  }

  /// Whether `msg` reports the directory gone; then it says so as `who`,
  /// with what the node does meanwhile, and starts making the link again.
  bool lost(caf::event_based_actor* self, const caf::down_msg& msg,
            const std::string& who, const char* meanwhile,
            std::function<void()> joined) {
    if (!dir_ || msg.source != dir_.address())
      return false;
    say("%s: lost the directory (%s); %s and rejoining", who.c_str(),
        tact::describe(msg.reason).c_str(), meanwhile);
    dir_ = nullptr;
    who_ = who;
    joined_ = std::move(joined);
    rejoin(self);
    return true;
  }

  /// One attempt; the node calls it again on `rejoin_atom`.
  void rejoin(caf::event_based_actor* self) {
    using namespace std::chrono_literals;
    connect_async(
      self, join_,
      [this, self](caf::actor hdl) {
        backoff_ = 250ms;
        dir_ = std::move(hdl);
        self->monitor(dir_);
        say("%s: rejoined the directory", who_.c_str());
        if (joined_)
          joined_();
      },
      [this, self](const caf::error&) {
        self->delayed_send(self, backoff_, rejoin_atom::value);
        backoff_ = std::min<std::chrono::milliseconds>(backoff_ * 2, 5s);
      });
  }

private:
  caf::actor dir_;
  // Where the directory is (HOST:PORT).
  std::string join_;
  std::string who_;
  std::function<void()> joined_;
  std::chrono::milliseconds backoff_{250};
};

/// The node roles; each returns the process's exit status.
int run_launcher(const args& a);
int run_shard(const args& a);
int run_gateway(const args& a);
int run_check(const args& a);

} // namespace kv
