// The gateway's two halves, what they share: the sessions (one per client
// connection, gateway.cpp) and the router (commands to shards,
// gateway_router.cpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/send.hpp>

#include "kv.hpp"
#include "tact/protocols/resp.hpp"

namespace kv::gateway {

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return s;
}

inline std::string error_text(std::string_view text) {
  std::string out;
  tact::resp::append_error(out, text);
  return out;
}

// -- what all clients together may hold -------------------------------------------------

// The bounds across connections (each connection has its own as well,
// below): the bytes of commands read and not yet run, partly received ones
// included (Redis's query buffers), and the keys of the commands sent to
// the shards and not yet answered. Shared by the sessions, which may run
// on several threads.
// A command's keys among those in flight, with the command to the router.
struct key_token {
  std::shared_ptr<void> held;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, key_token&) {
  return f(caf::meta::type_name("kv.key_token"));
}

class shared_budget {
public:
  shared_budget(size_t max_query, size_t max_keys)
    : max_query_(max_query), max_keys_(max_keys) {
  }

  /// `who` holds `bytes` of commands not yet run. Past the limit, the
  /// session that holds the most (perhaps `who`), to be disconnected; its
  /// bytes no longer count.
  caf::actor_addr hold(const caf::actor_addr& who, size_t bytes) {
    std::lock_guard<std::mutex> guard{mx_};
    auto& mine = query_[who];
    query_total_ = query_total_ - mine + bytes;
    mine = bytes;
    if (max_query_ == 0 || query_total_ <= max_query_)
      return {};
    auto most = std::max_element(query_.begin(), query_.end(),
                                 [](auto& x, auto& y) {
                                   return x.second < y.second;
                                 });
    query_total_ -= most->second;
    most->second = 0;
    return most->first;
  }

  /// Whether the keys in flight leave room for another command; if not,
  /// `who` gets (retry_atom, true) once there is room again. A command
  /// started with room may pass the limit by its own keys (at most 65,537),
  /// once per thread running sessions.
  bool room(const caf::actor_addr& who) {
    std::lock_guard<std::mutex> guard{mx_};
    if (max_keys_ == 0 || keys_ < max_keys_)
      return true;
    waiting_.insert(who);
    return false;
  }

  /// Takes `n` keys for a command; they are given back when the last
  /// copy of the token goes, which is when the router is done with the
  /// command (also when its session ended before: the shards still work
  /// on it until then).
  std::shared_ptr<void> take_keys(const std::shared_ptr<shared_budget>& self,
                                  size_t n) {
    {
      std::lock_guard<std::mutex> guard{mx_};
      keys_ += n;
    }
    return std::shared_ptr<void>{nullptr,
                                 [self, n](void*) { self->give_keys(n); }};
  }

  /// A session that ends: its query bytes no longer count.
  void leave(const caf::actor_addr& who) {
    std::lock_guard<std::mutex> guard{mx_};
    if (auto i = query_.find(who); i != query_.end()) {
      query_total_ -= i->second;
      query_.erase(i);
    }
    waiting_.erase(who);
  }

  /// For INFO: bytes of commands not yet run, keys in flight.
  std::pair<size_t, size_t> held() {
    std::lock_guard<std::mutex> guard{mx_};
    return {query_total_, keys_};
  }

  [[nodiscard]] size_t max_query() const noexcept {
    return max_query_;
  }

private:
  // The waiting sessions are woken once there is room again (all of
  // them: each takes what it needs, and those that find none wait again).
  void give_keys(size_t n) {
    std::set<caf::actor_addr> wake;
    {
      std::lock_guard<std::mutex> guard{mx_};
      keys_ -= std::min(keys_, n);
      if (max_keys_ == 0 || keys_ < max_keys_)
        wake.swap(waiting_);
    }
    for (auto& who : wake)
      if (auto hdl = caf::actor_cast<caf::actor>(who))
        caf::anon_send(hdl, retry_atom::value, true);
  }

  const size_t max_query_;
  const size_t max_keys_;
  std::mutex mx_;
  std::map<caf::actor_addr, size_t> query_;
  size_t query_total_ = 0;
  size_t keys_ = 0;
  std::set<caf::actor_addr> waiting_;
};

// Client connections open on this gateway (INFO's connected_clients).
extern std::atomic<size_t> clients;

/// The router: sends each command to the shards that hold its keys
/// (`command_atom, std::vector<std::string>, key_token` answered with the
/// RESP answer) and answers `ready_atom` once every shard is known.
caf::actor spawn_router(caf::actor_system& sys, uint32_t shards,
                        caf::actor dir, std::string join,
                        std::chrono::milliseconds timeout);

} // namespace kv::gateway
