// The TLS layer: one light actor per TLS connection, on the loop of the
// transport below it. Below, it is that transport's protocol (ciphertext
// in data_received, out through write); above, it is a stream transport for
// the application's protocol (plaintext). OpenSSL runs on a BIO that holds
// the ciphertext in memory, so the layer works over any stream transport,
// TLS included.

#include "tact/transports/detail/tls.hpp"

#include <algorithm>
#include <array>
#include <exception>

#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <caf/atom.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/layer.hpp"
#include "tact/transports/detail/tls_info.hpp"

namespace tact::detail {

namespace {

using tls_timer_atom = caf::atom_constant<caf::atom("tlstimer")>;

// asyncio's SSL defaults: write watermarks, and how much ciphertext the
// layer takes in while the application does not read.
constexpr size_t write_high = 512 * 1024;
constexpr size_t write_low = 128 * 1024;
constexpr size_t incoming_high = 256 * 1024;
constexpr size_t incoming_low = 64 * 1024;

// The extra-info keys the layer answers itself (compression is never set).
constexpr std::array<std::string_view, 4> own_keys{"sslcontext", "peercert",
                                                   "cipher", "ssl_object"};

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1
         || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// -- the layer's BIO -------------------------------------------------------------------
//
// OpenSSL reads ciphertext from and writes it to this BIO, which holds the
// chunks the transport below delivered and the bytes for it, as they are:
// a chunk from below is read by OpenSSL straight out of the delivery, and
// what OpenSSL writes is handed down without another copy. (A memory BIO
// copies each way, and zeroes its buffer as it grows.)

struct cipher_buffers {
  // From below, unread by OpenSSL: chunks, the offset into the first, the
  // bytes left in all.
  fifo<bytes> in;
  size_t in_head = 0;
  size_t in_size = 0;
  // For below.
  bytes out;

  void push(bytes data) {
    if (data.empty())
      return;
    in_size += data.size();
    in.push_back(std::move(data));
  }
};

// Records up to 16 KiB and their framing: the first write of a batch
// reserves that much.
constexpr size_t record_room = 16 * 1024 + 512;

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  auto* buf = static_cast<cipher_buffers*>(BIO_get_data(b));
  if (buf->out.empty())
    buf->out.reserve(std::max(record_room, static_cast<size_t>(len)));
  buf->out.insert(buf->out.end(), data, data + len);
  return len;
}

int bio_read(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  auto* buf = static_cast<cipher_buffers*>(BIO_get_data(b));
  if (buf->in_size == 0) {
    // Nothing yet: OpenSSL waits for more (SSL_ERROR_WANT_READ).
    BIO_set_retry_read(b);
    return -1;
  }
  size_t done = 0;
  auto want = static_cast<size_t>(len);
  while (done < want && !buf->in.empty()) {
    auto& chunk = buf->in.front();
    auto n = std::min(want - done, chunk.size() - buf->in_head);
    std::copy_n(chunk.data() + buf->in_head, n, out + done);
    done += n;
    buf->in_head += n;
    if (buf->in_head == chunk.size()) {
      buf->in.pop_front();
      buf->in_head = 0;
    }
  }
  buf->in_size -= done;
  return static_cast<int>(done);
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
  auto* buf = static_cast<cipher_buffers*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return static_cast<long>(buf->in_size);
    case BIO_CTRL_WPENDING:
      return static_cast<long>(buf->out.size());
    default:
      return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* cipher_bio_method() {
  static BIO_METHOD* method = [] {
    auto* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                           "tact cipher buffers");
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    return m;
  }();
  return method;
}

// -- the layer ------------------------------------------------------------------------

class tls_transport final : public layer {
public:
  tls_transport(caf::actor_config& cfg, multiplexer& mux, tls_setup setup)
    : layer(cfg, mux, transport_kind::tls, setup.read_credit,
            std::move(setup.app), std::move(setup.lower)),
      ctx_(std::move(setup.ctx)), opts_(std::move(setup.opts)),
      factory_(std::move(setup.factory)),
      on_ready_(std::move(setup.on_ready)) {
    state_.high = write_high;
    state_.low = write_low;
    state_.family = "tls";
    fixed_extra_["sslcontext"] = caf::config_value{ctx_.describe()};
    state_.fixed_extra = &fixed_extra_;
    ssl_ = SSL_new(ctx_.native_handle());
    if (ssl_ == nullptr)
      return;
    auto* bio = BIO_new(cipher_bio_method());
    if (bio == nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
      return;
    }
    BIO_set_data(bio, &cipher_);
    // One BIO both ways: SSL_free frees it once.
    SSL_set_bio(ssl_, bio, bio);
    if (ctx_.server_side()) {
      SSL_set_accept_state(ssl_);
      return;
    }
    SSL_set_connect_state(ssl_);
    auto& host = opts_.server_hostname;
    if (host.empty())
      return;
    auto ip = is_ip_literal(host);
    // SNI carries names only (RFC 6066).
    if (!ip)
      SSL_set_tlsext_host_name(ssl_, host.c_str());
    if (ctx_.verifies_peer()) {
      if (ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
      } else {
        SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(ssl_, host.c_str());
      }
    }
  }

  ~tls_transport() override {
    free_ssl();
    if (on_ready_)
      on_ready_(make_error(errc::closed, "the TLS layer was destroyed"));
  }

  // The layer's own keys; the rest comes from the transport below.
  std::optional<caf::config_value>
  extra_info(std::string_view name) const override {
    for (auto* extra : {state_.fixed_extra, state_.late_extra.load()}) {
      if (extra == nullptr)
        continue;
      if (auto i = extra->find(name); i != extra->end())
        return i->second;
    }
    // Not yet known (before the handshake), or never (compression).
    if (name == "compression"
        || std::find(own_keys.begin(), own_keys.end(), name) != own_keys.end())
      return std::nullopt;
    return layer::extra_info(name);
  }

  std::vector<std::string_view> extra_info_names() const override {
    auto result = layer::extra_info_names();
    result.insert(result.end(), own_keys.begin(), own_keys.end());
    return result;
  }

protected:
  bool on_layer_start() override {
    if (ssl_ == nullptr) {
      lose(make_error(errc::out_of_resources,
                      "SSL_new: " + take_ssl_errors()),
           false);
      return false;
    }
    arm_timer(opts_.handshake_timeout);
    return true;
  }

  bool on_layer_message(caf::type_erased_tuple& msg) override {
    if (!msg.match_elements<tls_timer_atom, uint32_t>())
      return false;
    if (msg.get_as<uint32_t>(1) == timer_gen_)
      on_timeout();
    return true;
  }

  void on_read_change() override {
    read_plain();
  }

  void on_limits() override {
    limit_lower();
    update_app_pause();
  }

  void abort_layer(caf::error reason) override {
    lose(std::move(reason), false);
  }

  // -- the transport below ---------------------------------------------------------

  void on_lower_data(bytes& data) override {
    on_cipher(data);
  }

  void on_lower_pause(bool paused) override {
    lower_paused_ = paused;
    update_app_pause();
  }

private:
  enum class phase : uint8_t { handshake, open, closing, done };

  void begin() override {
    monitor(lower_.actor());
    limit_lower();
    if (!ctx_.server_side())
      do_handshake();
  }

  // The lower transport pauses this layer when its buffer reaches our high
  // watermark (asyncio's SSL transport pauses at >= high).
  void limit_lower() {
    if (!lower_)
      return;
    auto high = state_.high.load();
    auto low = state_.low.load();
    auto below = high > 0 ? high - 1 : 0;
    lower_.set_write_buffer_limits(below, std::min(low, below));
  }

  void on_cipher(bytes& data) {
    if (ssl_ == nullptr)
      return;
    cipher_.push(std::move(data));
    if (phase_ == phase::handshake)
      do_handshake();
    if (phase_ == phase::open || phase_ == phase::closing)
      read_plain();
    check_incoming();
  }

  void on_lower_eof() override {
    switch (phase_) {
      case phase::handshake:
        fail_handshake(make_error(errc::tls_handshake_failed,
                                  "the peer closed the connection during the "
                                  "handshake"));
        break;
      case phase::open:
        // FIN without close_notify: not an error. Deliver what is left,
        // then close.
        peer_fin_ = true;
        read_plain();
        break;
      case phase::closing:
        lower_.close();
        break;
      case phase::done:
        break;
    }
  }

  void on_lower_lost(caf::error reason) override {
    if (lost_) {
      if (lingering_) {
        lingering_ = false;
        quit();
      }
      return;
    }
    if (phase_ == phase::handshake) {
      fail_handshake(reason ? make_error(errc::tls_handshake_failed,
                                         "connection lost during the "
                                         "handshake: "
                                           + describe(reason))
                            : make_error(errc::tls_handshake_failed,
                                         "the peer closed the connection "
                                         "during the handshake"));
      return;
    }
    // Records that came before a failure (a reset) and that the protocol
    // has not read yet are delivered first; the loss comes after them.
    if (reason && phase_ == phase::open && ssl_ != nullptr
        && (cipher_.in_size > 0 || SSL_pending(ssl_) > 0)) {
      lower_failure_ = std::move(reason);
      read_plain();
      return;
    }
    // The peer ended its stream and closed: our close_notify (or what the
    // protocol wrote after the EOF) then meets a reset. That end is the
    // peer's clean one, as in asyncio.
    if (reason && peer_ended() && phase_ != phase::done
        && reason.category() == error_category
        && (reason.code() == static_cast<uint8_t>(errc::connection_reset)
            || reason.code() == static_cast<uint8_t>(errc::broken_pipe)))
      reason = caf::none;
    lose(std::move(reason), false);
  }

  // The peer's close_notify or FIN came (and eof_received went up).
  [[nodiscard]] bool peer_ended() const noexcept {
    return eof_asked_;
  }

  // -- handshake ---------------------------------------------------------------

  void do_handshake() {
    ERR_clear_error();
    auto rc = SSL_do_handshake(ssl_);
    // The error first: writing below may run another layer's OpenSSL
    // calls on this thread, which clear the error queue.
    caf::error failure;
    if (rc != 1) {
      auto err = SSL_get_error(ssl_, rc);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
        failure = handshake_error(err);
    }
    flush_cipher();
    if (rc == 1)
      on_handshake_done();
    else if (failure)
      fail_handshake(std::move(failure));
  }

  caf::error handshake_error(int err) {
    auto verify = SSL_get_verify_result(ssl_);
    if (err == SSL_ERROR_SSL && verify != X509_V_OK) {
      ERR_clear_error();
      return make_error(errc::certificate_verify_failed,
                        std::string{"certificate verify failed: "}
                          + X509_verify_cert_error_string(verify));
    }
    return make_error(errc::tls_handshake_failed, take_ssl_errors());
  }

  void on_handshake_done() {
    phase_ = phase::open;
    ++timer_gen_;
    publish_info();
    if (factory_) {
      made_request_ = install_protocol(*factory_);
      factory_.reset();
      if (made_request_ == 0) {
        lose(make_error(errc::protocol_failed,
                        "the protocol factory made no protocol"),
             true);
        return;
      }
    } else {
      read_started_ = true;
    }
    // Writes made while the handshake ran.
    while (!early_.empty()) {
      auto data = std::move(early_.front());
      early_.pop_front();
      encrypt(data);
    }
    early_bytes_ = 0;
    state_.buffered = 0;
    update_app_pause();
    if (read_started_)
      ready();
    read_plain();
  }

  // The caller of create_connection may go on: the handshake is done and
  // the protocol has handled connection_made.
  void ready() {
    if (on_ready_) {
      auto f = std::move(on_ready_);
      on_ready_ = nullptr;
      f(make_handle());
    }
  }

  void on_app_ready() override {
    ready();
    read_plain();
  }

  void fail_handshake(caf::error reason) {
    if (phase_ != phase::handshake)
      return;
    // A server sees scanners and broken clients every day: not a warning.
    // The alert OpenSSL wrote goes out before the close.
    lose(std::move(reason), true);
  }

  void publish_info() {
    auto info = connection_info(ssl_, ctx_.verifies_peer(), ctx_.server_side(),
                                opts_.server_hostname);
    // No compression: OpenSSL 3 is built without it and it is off here.
    late_extra_ = std::make_unique<caf::settings>(std::move(info));
    state_.late_extra.store(late_extra_.get(), std::memory_order_release);
  }

  // -- reading -----------------------------------------------------------------------

  void read_plain() {
    if (lost_ || ssl_ == nullptr
        || (phase_ != phase::open && phase_ != phase::closing))
      return;
    for (;;) {
      auto discard = phase_ == phase::closing;
      if (!discard && !app_reading())
        break;
      auto want = mux().scratch_size();
      if (!discard)
        want = std::min<size_t>(want, state_.read_credit
                                        - state_.unconsumed.load());
      ERR_clear_error();
      auto n = SSL_read(ssl_, mux().scratch(), static_cast<int>(want));
      if (n > 0) {
        if (discard || !protocol_)
          continue;
        bytes data(mux().scratch(), mux().scratch() + n);
        deliver_data(data);
        continue;
      }
      auto err = SSL_get_error(ssl_, n);
      caf::error failure;
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_ZERO_RETURN)
        failure = make_error(errc::tls_error, take_ssl_errors());
      // Reading may answer the peer (a key update).
      flush_cipher();
      if (lower_failure_
          && (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_ZERO_RETURN)) {
        // Everything from before the failure is delivered.
        lose(std::move(lower_failure_), false);
        return;
      }
      if (err == SSL_ERROR_WANT_READ) {
        // After the peer's bare FIN no close_notify can come: once ours
        // is out (a close() in eof_received, say), that is the end.
        if (peer_fin_ && phase_ == phase::open)
          on_peer_end();
        else if (peer_fin_ && phase_ == phase::closing)
          lower_.close();
        break;
      }
      if (err == SSL_ERROR_ZERO_RETURN) {
        on_close_notify();
        break;
      }
      lose(std::move(failure), true);
      return;
    }
    check_incoming();
  }

  // While the application does not read, ciphertext gathers here; past
  // asyncio's 256 KiB the transport below stops reading, until 64 KiB.
  void check_incoming() {
    if (lost_ || !lower_ || ssl_ == nullptr)
      return;
    auto pending = cipher_.in_size;
    if (!lower_paused_reading_ && pending >= incoming_high) {
      lower_paused_reading_ = true;
      lower_.pause_reading();
    } else if (lower_paused_reading_ && pending <= incoming_low) {
      lower_paused_reading_ = false;
      lower_.resume_reading();
    }
  }

  void on_close_notify() {
    if (phase_ == phase::closing) {
      // The answer to our close_notify: done.
      lower_.close();
      return;
    }
    on_peer_end();
  }

  // The peer ended its stream first (close_notify, or a FIN without one,
  // which is not an error): eof_received, and our close_notify back once
  // the protocol has answered, so that what it writes in eof_received
  // still goes out. The answer itself changes nothing: as asyncio's, the
  // connection closes.
  void on_peer_end() {
    if (eof_asked_)
      return;
    eof_asked_ = true;
    request_eof();
    // No protocol to answer (or one being switched, which gets the EOF
    // when it is in): close now.
    if (!protocol_ || switching())
      shut_down();
  }

  void on_eof_answer(bool) override {
    if (phase_ == phase::open && !lost_)
      shut_down();
  }

  // -- writing -----------------------------------------------------------------------

  void on_write(bytes& data) override {
    if (data.empty())
      return;
    if (lost_ || closing_) {
      state_.count_dropped_write();
      return;
    }
    if (phase_ == phase::handshake) {
      early_bytes_ += data.size();
      state_.buffered = early_bytes_;
      early_.push_back(std::move(data));
      update_app_pause();
      return;
    }
    encrypt(data);
  }

  void encrypt(bytes& data) {
    if (lost_ || ssl_ == nullptr)
      return;
    ERR_clear_error();
    if (SSL_write(ssl_, data.data(), static_cast<int>(data.size())) <= 0) {
      lose(make_error(errc::tls_error, take_ssl_errors()), true);
      return;
    }
    flush_cipher();
  }

  // Hands what OpenSSL wrote to the transport below.
  void flush_cipher() {
    if (!lower_ || ssl_ == nullptr || cipher_.out.empty())
      return;
    auto out = std::move(cipher_.out);
    cipher_.out = bytes{};
    lower_.write(std::move(out));
  }

  // A file (sendfile) is read and written in chunks, each waiting while
  // the protocol's own writes would.
  [[nodiscard]] bool carries_files() const noexcept override {
    return true;
  }

  [[nodiscard]] bool file_chunks_wait() const noexcept override {
    return lower_paused_ || early_bytes_ >= state_.high.load();
  }

  [[nodiscard]] size_t buffer_size() const override {
    return early_bytes_ + (lower_ ? lower_.get_write_buffer_size() : 0);
  }

  // As asyncio's SSL transport: paused while the transport below is, or
  // while the layer's own buffer (writes waiting for the handshake) is at
  // the high watermark; resumed when neither holds and that buffer is at
  // the low one or under.
  void update_app_pause() {
    auto want = file_chunks_wait();
    if (!want)
      files_may_go_on();
    if (want && !app_paused_) {
      app_paused_ = true;
      deliver(caf::make_message(pause_writing{}));
    } else if (!want && app_paused_ && early_bytes_ <= state_.low.load()) {
      app_paused_ = false;
      deliver(caf::make_message(resume_writing{}));
    }
  }

  // -- closing -----------------------------------------------------------------------

  void on_close() override {
    if (closing_ || lost_)
      return;
    if (phase_ == phase::handshake) {
      // asyncio: close() during the handshake aborts.
      lose(caf::none, false);
      return;
    }
    closing_ = true;
    state_.closing = true;
    ERR_clear_error();
    SSL_shutdown(ssl_);
    flush_cipher();
    phase_ = phase::closing;
    arm_timer(opts_.shutdown_timeout);
    // What OpenSSL already holds may contain the peer's close_notify.
    read_plain();
  }

  // Sends our close_notify and closes the transport below once it is out.
  void shut_down() {
    phase_ = phase::closing;
    closing_ = true;
    state_.closing = true;
    ERR_clear_error();
    SSL_shutdown(ssl_);
    flush_cipher();
    lower_.close();
  }

  void on_timeout() {
    if (phase_ == phase::handshake)
      lose(make_error(errc::timed_out,
                      "TLS handshake timed out after "
                        + std::to_string(opts_.handshake_timeout.count())
                        + " ms"),
           false);
    else if (phase_ == phase::closing)
      lose(make_error(errc::timed_out,
                      "TLS shutdown timed out after "
                        + std::to_string(opts_.shutdown_timeout.count())
                        + " ms"),
           false);
  }

  // On the loop's own timers, holding the layer only weakly: a layer that
  // ended is freed at once, not when its timer would have fired.
  void arm_timer(std::chrono::milliseconds after) {
    auto gen = ++timer_gen_;
    caf::weak_actor_ptr self{ctrl()};
    mux().add_timer(after, [self, gen] {
      if (auto strong = self.lock())
        caf::anon_send(caf::actor_cast<caf::actor>(strong),
                       tls_timer_atom::value, gen);
    });
  }

  // Ends the connection: the transport below is closed (after what is
  // queued for it, with `graceful`) or aborted, and the application hears
  // `connection_lost(reason)`, or the caller of create_connection the
  // error.
  void lose(caf::error reason, bool graceful) {
    if (!mark_lost())
      return;
    phase_ = phase::done;
    ++timer_gen_;
    state_.buffered = 0;
    early_.clear();
    early_bytes_ = 0;
    if (lower_) {
      if (graceful)
        lower_.close();
      else
        lower_.abort();
    }
    free_ssl();
    if (on_ready_) {
      auto f = std::move(on_ready_);
      on_ready_ = nullptr;
      f(reason ? reason
               : make_error(errc::closed, "the TLS connection was closed "
                                          "during the handshake"));
    }
    // The transport below watches this layer and would abort on its end:
    // after a close, stay until it has flushed (the alert, close_notify).
    lingering_ = graceful && lower_ && !lower_.state()->lost.load();
    end_protocol(std::move(reason), !lingering_);
  }

  void free_ssl() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
      cipher_.in.clear();
      cipher_.in_head = 0;
      cipher_.in_size = 0;
      cipher_.out = bytes{};
    }
  }

  tls_context ctx_;
  tls_options opts_;
  std::optional<protocol_factory> factory_;
  std::function<void(caf::expected<transport>)> on_ready_;
  SSL* ssl_ = nullptr;
  cipher_buffers cipher_;
  fifo<bytes> early_;
  size_t early_bytes_ = 0;
  caf::settings fixed_extra_;
  std::unique_ptr<caf::settings> late_extra_;
  uint32_t timer_gen_ = 0;
  phase phase_ = phase::handshake;
  bool lower_paused_ = false;
  bool app_paused_ = false;
  bool lower_paused_reading_ = false;
  bool peer_fin_ = false;
  bool eof_asked_ = false;
  bool lingering_ = false;
};

} // namespace

transport spawn_tls(multiplexer& mux, tls_setup setup) {
  auto& sys = mux.system();
  caf::actor_config cfg{mux.home()};
  auto lower = setup.lower;
  auto unread = std::move(setup.opts.unread);
  auto hdl = caf::make_actor<tls_transport, caf::actor>(
    sys.next_actor_id(), sys.node(), &sys, cfg, mux, std::move(setup));
  auto* self = static_cast<tls_transport*>(
    caf::actor_cast<caf::abstract_actor*>(hdl));
  // start_tls: the layer becomes the protocol below before it can write
  // its first byte, so nothing the peer answers goes to the old protocol.
  if (lower)
    lower.set_protocol(hdl, std::move(unread));
  static_cast<light_actor*>(self)->start();
  return self->make_handle();
}

caf::error check_tls_options(const tls_context& ctx, const tls_options& opts,
                             bool server_side) {
  if (!ctx)
    return make_error(errc::invalid_argument, "no TLS context");
  if (opts.handshake_timeout.count() <= 0)
    return make_error(errc::invalid_argument,
                      "handshake_timeout must be greater than zero");
  if (opts.shutdown_timeout.count() <= 0)
    return make_error(errc::invalid_argument,
                      "shutdown_timeout must be greater than zero");
  if (ctx.server_side() != server_side)
    return make_error(errc::invalid_argument,
                      server_side ? "a client TLS context on the server side"
                                  : "a server TLS context on the client side");
  if (!server_side && ctx.verifies_peer() && opts.server_hostname.empty())
    return make_error(errc::invalid_argument,
                      "server_hostname is needed to verify the server "
                      "(or a context with insecure_skip_verify)");
  return caf::none;
}

caf::actor top_layer(const caf::actor& hdl) {
  auto* core = dynamic_cast<transport_core*>(find_light(hdl));
  if (core == nullptr)
    return hdl;
  auto above = core->state().current_protocol();
  auto* up = dynamic_cast<transport_core*>(find_light(above));
  if (up != nullptr && (up->state().kind == transport_kind::tls
                        || up->state().kind == transport_kind::frames))
    return top_layer(above);
  return hdl;
}

} // namespace tact::detail

namespace tact {

caf::expected<transport> start_tls(const transport& t, caf::actor protocol,
                                   const tls_context& ctx, tls_options opts) {
  return start_tls(t, std::move(protocol), ctx, std::move(opts), nullptr);
}

caf::expected<transport>
start_tls(const transport& t, caf::actor protocol, const tls_context& ctx,
          tls_options opts,
          std::function<void(caf::expected<transport>)> done) {
  auto* st = t.state();
  if (st == nullptr)
    return make_error(errc::not_supported,
                      "start_tls on a transport of another node");
  if (st->kind != detail::transport_kind::stream
      && st->kind != detail::transport_kind::tls)
    return make_error(errc::not_supported,
                      "start_tls needs a stream transport (TCP, Unix or TLS)");
  if (st->closing.load())
    return make_error(errc::closed, "start_tls on a closing transport");
  if (auto err = detail::check_tls_options(ctx, opts, opts.server_side))
    return err;
  return detail::spawn_tls(st->core->mux(),
                           {.ctx = ctx,
                            .opts = std::move(opts),
                            .app = std::move(protocol),
                            .on_ready = std::move(done),
                            .lower = t,
                            .read_credit = st->read_credit});
}

} // namespace tact
