#pragma once

// Name resolution on the loop: c-ares, driven by the multiplexer's epoll
// and timers, so that a lookup neither blocks the loop nor takes a thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/expected.hpp>

#include "tact/runtime/resolver_options.hpp"
#include "tact/runtime/detail/sock_address.hpp"

namespace tact::detail {

class multiplexer;

using resolver_settings = resolver_options;

/// c-ares on one loop. Loop thread only.
///
/// Numeric hosts (and an empty host with `passive`) are answered at once,
/// without c-ares. Names go through c-ares (the hosts file, then DNS);
/// concurrent lookups of the same name share one query, and answers are
/// kept for their TTL (at most `cache_entries` names, the oldest dropped).
/// The callback may run before `resolve` returns.
class resolver {
public:
  using addresses = std::vector<sock_address>;
  using callback = std::function<void(caf::expected<addresses>)>;

  resolver(multiplexer& mux, resolver_settings settings);
  ~resolver();

  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;

  /// Looks `host` up for stream sockets to `port`; `passive` asks for
  /// addresses to bind. A failure is `errc::name_resolution_failed` with
  /// the name and the reason (no such name, no server answered in time).
  void resolve(const std::string& host, uint16_t port, bool passive,
               callback cb);

  /// Lookups waiting for an answer.
  [[nodiscard]] size_t pending() const noexcept { return lookups_.size(); }

private:
  struct watched;
  // What c-ares hands back with an answer.
  struct query {
    resolver* self;
    std::string key;
  };
  struct cached {
    std::vector<sock_address> addrs;
    std::chrono::steady_clock::time_point expires;
    std::list<std::string>::iterator age;
  };

  caf::error init();
  void start(const std::string& key);
  void finish(const std::string& key, caf::expected<addresses> result,
              std::chrono::seconds ttl);
  void watch(int fd, bool readable, bool writable);
  void process(int read_fd, int write_fd);
  void rearm();

  static void on_sock_state(void* data, int fd, int readable, int writable);
  static void on_answer(void* arg, int status, int timeouts, void* result);

  multiplexer& mux_;
  resolver_settings settings_;
  void* channel_ = nullptr; // ares_channel
  caf::error init_error_;
  bool initialized_ = false;
  bool destroying_ = false;
  bool draining_ = false;
  uint64_t timer_ = 0;
  // By "passive|host": the callbacks waiting for one query.
  std::unordered_map<std::string, std::vector<std::pair<uint16_t, callback>>>
    lookups_;
  // Names waiting for a query slot (`max_queries`), as keys.
  std::list<std::string> waiting_;
  size_t querying_ = 0;
  std::unordered_map<int, std::unique_ptr<watched>> sockets_;
  std::unordered_map<std::string, cached> cache_;
  std::list<std::string> ages_;
};

} // namespace tact::detail
