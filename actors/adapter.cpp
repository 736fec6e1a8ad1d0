// The adapter actor: runs a class protocol (tact::protocol) as an actor on
// its connection's loop, translating messages into callbacks.

#include <exception>
#include <string>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/detail/mux_actor.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

protocol::~protocol() = default;

void protocol::connection_made(transport&) {
  // nop
}

void protocol::data_received(bytes) {
  // nop
}

bool protocol::eof_received() {
  return false;
}

void protocol::pause_writing() {
  // nop
}

void protocol::resume_writing() {
  // nop
}

void protocol::connection_lost(const caf::error&) {
  // nop
}

class detail_access {
public:
  static void set_self(protocol& p, caf::event_based_actor* self) {
    p.self_ = self;
  }
};

namespace {

class adapter final : public detail::mux_actor {
public:
  adapter(caf::actor_config& cfg, detail::multiplexer& mux,
          std::unique_ptr<protocol> proto)
    : detail::mux_actor(cfg, mux), proto_(std::move(proto)) {
    detail_access::set_self(*proto_, this);
  }

  caf::behavior make_behavior() override {
    set_down_handler([this](caf::down_msg& msg) {
      if (!handle_ || msg.source != handle_.actor().address())
        return;
      if (replaced()) {
        // set_protocol moved the connection to another protocol, which got
        // connection_lost; this one just ends.
        lost_ = true;
        proto_.reset();
        quit();
        return;
      }
      lose(make_error(errc::transport_down));
    });
    return {
      [this](connection_made& msg) {
        handle_ = std::move(msg.handle);
        if (handle_)
          monitor(handle_.actor());
        guarded("connection_made", [&] { proto_->connection_made(handle_); });
      },
      [this](data_received& msg) {
        auto n = msg.data.size();
        if (!failed_ && !lost_)
          guarded("data_received",
                  [&] { proto_->data_received(std::move(msg.data)); });
        give_back(n);
      },
      [this](eof_received) {
        bool keep_open = false;
        if (!failed_ && !lost_)
          guarded("eof_received",
                  [&] { keep_open = proto_->eof_received(); });
        return keep_open;
      },
      [this](pause_writing) {
        if (!failed_ && !lost_)
          guarded("pause_writing", [&] { proto_->pause_writing(); });
      },
      [this](resume_writing) {
        if (!failed_ && !lost_)
          guarded("resume_writing", [&] { proto_->resume_writing(); });
      },
      [this](connection_lost& msg) { lose(std::move(msg.reason)); },
    };
  }

private:
  // Runs one callback; a throw is fatal for the connection (asyncio's
  // _fatal_error), reported once, and connection_lost follows.
  template <class F>
  void guarded(const char* name, F&& fn) {
    try {
      fn();
    } catch (const std::exception& ex) {
      fail(name, ex.what());
    } catch (...) {
      fail(name, "unknown exception");
    }
  }

  void fail(const char* name, const std::string& what) {
    if (lost_ || failed_)
      return;
    failed_ = true;
    auto text = std::string{"protocol callback "} + name + " failed: " + what;
    mux().warn(text);
    auto reason = make_error(errc::protocol_failed, text);
    if (handle_)
      handle_.abort(std::move(reason));
    else if (auto src = current_sender())
      caf::anon_send(caf::actor_cast<caf::actor>(src),
                     op::abort{std::move(reason)});
  }

  // Returns read credit: through the shared handle when there is one (no
  // message in the common case), else by message to whoever delivered the
  // bytes (a protocol installed by set_protocol never saw connection_made).
  void give_back(size_t n) {
    if (handle_) {
      handle_.consumed(n);
    } else if (auto src = current_sender()) {
      caf::anon_send(caf::actor_cast<caf::actor>(src), op::consumed{n});
    }
  }

  void lose(caf::error reason) {
    if (lost_)
      return;
    lost_ = true;
    try {
      proto_->connection_lost(reason);
    } catch (const std::exception& ex) {
      mux().warn(std::string{"protocol callback connection_lost failed: "}
                 + ex.what());
    } catch (...) {
      mux().warn("protocol callback connection_lost failed");
    }
    handle_ = transport{};
    proto_.reset();
    quit();
  }

  bool replaced() {
    auto& st = handle_.state();
    if (!st)
      return false;
    std::lock_guard<std::mutex> guard{st->protocol_mtx};
    return st->protocol && st->protocol.address() != address();
  }

  std::unique_ptr<protocol> proto_;
  transport handle_;
  bool failed_ = false;
  bool lost_ = false;
};

} // namespace

caf::actor protocol_factory::spawn_adapter(detail::multiplexer& mux,
                                           std::unique_ptr<protocol> p) {
  return mux.system().spawn<adapter>(mux, std::move(p));
}

} // namespace tact
