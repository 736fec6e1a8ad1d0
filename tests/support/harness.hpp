#pragma once

// Shared test support: leak accounting, a recording protocol, and plain
// blocking sockets to act as the peer of a transport under test.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>

struct ssl_st;

#include "tact/actors/protocol.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

namespace tact::test {

using namespace std::chrono_literals;

/// Open descriptors and threads of this process.
size_t fd_count();
size_t thread_count();

/// Runs `body` with a fresh runtime, destroys it, and checks that no
/// descriptor or thread was left behind. Warnings go to `warnings` if given.
void with_runtime(const std::function<void(runtime&)>& body,
                  std::vector<std::string>* warnings = nullptr,
                  runtime_options opts = {});

/// Sends `req` to `rt.loop()` from a behaviour on the loop (where a
/// blocking loop operation would be `would_deadlock`) and waits for the
/// answer: a `T`, or the error.
template <class T, class Request>
caf::expected<T> ask_from_loop(runtime& rt, Request req,
                               std::chrono::milliseconds timeout = 30s) {
  auto done = std::make_shared<std::promise<caf::expected<T>>>();
  auto result = done->get_future();
  rt.spawn_on_loop([&rt, req = std::move(req), timeout,
                    done](caf::event_based_actor* self) {
    self->request(rt.loop(), timeout, req)
      .then(
        [self, done](T& x) {
          done->set_value(std::move(x));
          self->quit();
        },
        [self, done](caf::error& err) {
          done->set_value(std::move(err));
          self->quit();
        });
    // Nothing but the answer (no one else has this actor's handle).
    return caf::behavior{[](int) {}};
  });
  return result.get();
}

/// A thread-safe list of what a protocol saw, with waits.
class journal {
public:
  void add(std::string event, std::string data = {});

  /// Waits until `pred` holds (checked under the lock) or `timeout`.
  bool wait(const std::function<bool(journal&)>& pred,
            std::chrono::milliseconds timeout = 5s);

  /// Waits until an event named `name` has been recorded `count` times.
  bool wait_for(const std::string& name, size_t count = 1,
                std::chrono::milliseconds timeout = 5s);

  /// Recorders that keep more than events and bytes (datagrams, a child's
  /// output) derive from the journal and guard their own fields with its
  /// lock (`std::lock_guard<journal>`), then `add` the event; no other
  /// member may be called while it is held.
  void lock() { mtx_.lock(); }
  void unlock() { mtx_.unlock(); }

  // The accessors below take the lock themselves: call them outside wait().
  [[nodiscard]] std::vector<std::string> events();
  [[nodiscard]] size_t count(const std::string& name);
  [[nodiscard]] std::string data();
  [[nodiscard]] caf::error lost_reason();

  // Unlocked variants for use inside wait() predicates.
  [[nodiscard]] size_t count_unlocked(const std::string& name) const;
  [[nodiscard]] size_t data_size_unlocked() const { return data_.size(); }

  void set_reason(caf::error reason);
  void set_handle(transport t);
  /// The transport handle the protocol got in connection_made.
  [[nodiscard]] transport handle();

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
  std::string data_;
  caf::error reason_;
  transport handle_;
};

/// A class protocol that records every callback into a journal and can be
/// told how to react.
class recorder : public protocol {
public:
  explicit recorder(std::shared_ptr<journal> j) : j_(std::move(j)) {
    // nop
  }

  void connection_made(transport& t) override;
  void data_received(bytes data) override;
  bool eof_received() override;
  void pause_writing() override;
  void resume_writing() override;
  void connection_lost(const caf::error& reason) override;

  /// Called at the end of connection_made.
  std::function<void(transport&)> on_made;
  /// Called at the end of data_received.
  std::function<void(transport&, const bytes&)> on_data;
  /// Answer to eof_received.
  bool keep_open = false;
  /// Called in eof_received before answering.
  std::function<void(transport&)> on_eof;

protected:
  std::shared_ptr<journal> j_;
  transport t_;
};

/// A factory making recorders that all log into `j`, configured by `setup`.
protocol_factory recording(std::shared_ptr<journal> j,
                           std::function<void(recorder&)> setup = {});

/// What a contract test runs on: a stream socket, or a layer on a TCP
/// connection (TLS, line framing), whose peer speaks the layer's protocol.
enum class kind { tcp, unix_socket, tls, lines };

[[nodiscard]] const char* name_of(kind k);

/// A blocking peer with helpers; closes on destruction. On `kind::tls` it
/// is an OpenSSL endpoint (its EOF is close_notify); on `kind::lines` each
/// `send_all` is one line and what it reads has the line ends taken out.
class peer {
public:
  peer() = default;
  explicit peer(int fd, kind k = kind::tcp) : fd_(fd), kind_(k) {}
  peer(peer&& other) noexcept;
  peer& operator=(peer&& other) noexcept;
  ~peer();

  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// Gives up the descriptor without closing it (plain sockets only).
  int release() noexcept {
    auto fd = fd_;
    fd_ = -1;
    return fd;
  }

  /// TLS: runs the handshake on the connected socket, as the server or
  /// the client; false on failure.
  bool handshake(bool server);

  void send_all(const std::string& data);
  /// Reads exactly `n` bytes, or fewer if EOF or `timeout` comes first.
  std::string recv_n(size_t n, std::chrono::milliseconds timeout = 5s);
  /// Reads until EOF or timeout; `eof` tells which.
  std::string recv_all(bool* eof = nullptr,
                       std::chrono::milliseconds timeout = 5s);
  /// Whether anything (data or EOF) arrives within `timeout`.
  bool readable_within(std::chrono::milliseconds timeout);
  /// Whether bytes wait in the kernel within `timeout`, left unread there
  /// (on TLS, `readable_within` takes a record in to look at it).
  bool arrived_within(std::chrono::milliseconds timeout);
  /// The peer's EOF: FIN, or close_notify on TLS.
  void shutdown_write();
  /// Sends RST: SO_LINGER 0, then close.
  void reset();
  /// Closes the socket (on TLS without close_notify).
  void close();

private:
  // Up to `max` bytes within `timeout`: > 0 read, 0 EOF, < 0 nothing.
  ptrdiff_t read_some(char* buf, size_t max,
                      std::chrono::milliseconds timeout);

  int fd_ = -1;
  kind kind_ = kind::tcp;
  ssl_st* ssl_ = nullptr;
};

/// A server of kind `k` in `rt` with the given factory, and a way to reach it.
struct listening {
  server srv;
  std::string unix_path;
  uint16_t port = 0;
};

listening listen(runtime& rt, kind k, protocol_factory f);

/// Connects a blocking peer to `l`.
peer connect_peer(kind k, const listening& l);

/// A plain listening socket the transport under test connects to.
class raw_listener {
public:
  explicit raw_listener(kind k);
  ~raw_listener();
  /// Connects a transport from `rt` to this listener and accepts the peer.
  std::pair<caf::expected<transport>, peer> connect(runtime& rt,
                                                    protocol_factory f);

  kind k;
  int fd = -1;
  uint16_t port = 0;
  std::string path;
};

/// A unique path for a Unix socket in a fresh temporary directory.
std::string temp_socket_path();

/// `n` bytes of a repeating letter pattern, for payloads checked on arrival.
std::string big(size_t n);

/// Polls `pred` until it holds or `timeout`.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = 5s);

} // namespace tact::test
