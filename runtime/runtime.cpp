#include "tact/runtime/runtime.hpp"
#include "tact/transports/detail/tls.hpp"

#include <condition_variable>
#include <csignal>
#include <deque>
#include <thread>
#include <type_traits>
#include <mutex>
#include <pthread.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/openssl/remote_actor.hpp>
#include <caf/send.hpp>

#include "tact/runtime/distribution.hpp"
#include "tact/runtime/detail/cluster_tls.hpp"
#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/mux_actor.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

namespace {

// A numeric loopback address or "localhost": what only this machine
// reaches.
bool is_loopback(const std::string& host) {
  if (host == "localhost")
    return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1
         && IN6_IS_ADDR_LOOPBACK(&v6);
}

using close_atom = caf::atom_constant<caf::atom("close")>;

sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

class loop_actor final : public detail::mux_actor {
public:
  loop_actor(caf::actor_config& cfg, detail::multiplexer& mux,
             std::function<caf::behavior(caf::event_based_actor*)> init)
    : detail::mux_actor(cfg, mux), init_(std::move(init)) {
    // nop
  }

  caf::behavior make_behavior() override {
    return init_(this);
  }

private:
  std::function<caf::behavior(caf::event_based_actor*)> init_;
};

// Runs one function on a thread of its own, then ends. A class rather
// than a lambda behaviour: CAF 0.17 spawns those through a header with
// undefined behaviour (see tests/CMakeLists.txt).
class executor_actor final : public caf::event_based_actor {
public:
  executor_actor(caf::actor_config& cfg, std::function<void()> fn)
    : caf::event_based_actor(cfg), fn_(std::move(fn)) {
    // nop
  }

  caf::behavior make_behavior() override {
    auto fn = std::move(fn_);
    fn_ = nullptr;
    fn();
    quit();
    return {};
  }

private:
  std::function<void()> fn_;
};

} // namespace

// Calls of run_in_executor under way, and whether new ones are refused.
struct runtime::executor {
  std::mutex mtx;
  std::condition_variable idle;
  size_t running = 0;
  bool closed = false;

  void close() {
    std::lock_guard<std::mutex> guard{mtx};
    closed = true;
  }

  void wait_idle() {
    std::unique_lock<std::mutex> guard{mtx};
    idle.wait(guard, [this] { return running == 0; });
  }
};

// The thread that starts children, one at a time, made on first use.
struct runtime::spawner {
  std::mutex mtx;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  bool closed = false;
  std::thread thread;

  bool post(std::function<void()> job) {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed)
      return false;
    jobs.push_back(std::move(job));
    if (!thread.joinable())
      thread = std::thread{[this] { run(); }};
    wake.notify_one();
    return true;
  }

  // Refuses new jobs, runs those queued, and joins the thread.
  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      closed = true;
    }
    wake.notify_one();
    if (thread.joinable())
      thread.join();
  }

  void run() {
    // Signals are for the program's own threads (wait_for_signal); a child
    // resets its mask before exec.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> guard{mtx};
        wake.wait(guard, [this] { return closed || !jobs.empty(); });
        if (jobs.empty())
          return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      job();
    }
  }
};

bool runtime::post_spawn(std::function<void()> job) {
  return spawner_->post(std::move(job));
}

struct runtime::config : caf::actor_system_config {
  config() {
    tact::add_error_category(*this);
  }
};

runtime::runtime(runtime_options opts) : opts_(std::move(opts)) {
  if (opts_.handle_signals) {
    // Before any thread exists, so that every thread inherits the mask and
    // only wait_for_signal() sees these signals.
    auto set = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  cfg_ = std::make_unique<config>();
  if (opts_.distributed)
    enable_distribution(*cfg_);
  if (opts_.distributed && opts_.cluster_tls) {
    // CAF's module throws from its I/O thread on a file it cannot load:
    // it gets only settings that loaded here.
    cluster_tls_error_ = detail::check_cluster_tls(*opts_.cluster_tls);
    if (!cluster_tls_error_)
      cluster_tls_error_ = detail::raise_default_tls_floor();
    if (!cluster_tls_error_) {
      auto& tls = *opts_.cluster_tls;
      cfg_->openssl_cafile = tls.ca_file;
      cfg_->openssl_certificate = tls.cert_file;
      cfg_->openssl_key = tls.key_file;
      cfg_->openssl_passphrase = tls.key_passphrase;
      cfg_->load<caf::openssl::manager>();
    }
  }
  if (opts_.configure)
    opts_.configure(*cfg_);
  system_ = std::make_unique<caf::actor_system>(*cfg_);
  loops_ = std::make_unique<detail::loop_group>(
    *system_, opts_.loops ? detail::loop_count_for(*opts_.loops)
                          : detail::default_loop_count());
  loop_actors_.resize(loops_->size());
  executor_ = std::make_shared<executor>();
  spawner_ = std::make_shared<spawner>();
  if (opts_.on_warning)
    loops_->set_warning_hook(opts_.on_warning);
  loops_->set_resolver_options(opts_.resolver);
  loops_->start();
}

detail::multiplexer& runtime::mux() noexcept {
  return loops_->at(0);
}

detail::multiplexer& runtime::mux(size_t index) noexcept {
  return loops_->at(index);
}

size_t runtime::loop_count() const noexcept {
  return loops_->size();
}

runtime::~runtime() {
  shutdown(std::chrono::milliseconds{0});
  {
    std::lock_guard<std::mutex> guard{loop_mtx_};
    for (auto& hdl : loop_actors_)
      if (hdl)
        caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  }
  // Calls still running may open connections: let them finish, then end
  // what they opened.
  executor_->wait_idle();
  // Children being started get their transports; the shutdown below ends
  // them.
  spawner_->stop();
  shutdown(std::chrono::milliseconds{0});
  if (!loops_->wait_for_actors(5000))
    loops_->warn(std::to_string(loops_->live_actors())
                 + " actor(s) on the loop did not terminate at shutdown");
  loops_->stop();
  // The system goes first: until it is gone, its threads (the middleman
  // above all) may still schedule loop actors, which the stopped
  // multiplexers release.
  system_.reset();
  loops_.reset();
}

caf::actor runtime::loop() {
  auto* mux = &loops_->pick();
  size_t index = 0;
  while (&loops_->at(index) != mux)
    ++index;
  std::lock_guard<std::mutex> guard{loop_mtx_};
  auto& hdl = loop_actors_[index];
  if (hdl)
    return hdl;
  // Its handlers start each operation and answer when it is done; the
  // actor never waits. What it starts lives on its loop.
  hdl = spawn_on_loop(index, [this](caf::event_based_actor* self)
                               -> caf::behavior {
    // A callback that delivers an operation's result to its requester.
    auto answer = [self](auto type_tag) {
      using value = typename decltype(type_tag)::type;
      auto rp = self->make_response_promise<value>();
      return std::pair{rp, [rp](caf::expected<value> x) mutable {
                         if (x)
                           rp.deliver(std::move(*x));
                         else
                           rp.deliver(std::move(x.error()));
                       }};
    };
    return {
      [this, answer](loop_ops::connect& req) -> caf::result<transport> {
        auto [rp, done] = answer(std::type_identity<transport>{});
        if (!req.path.empty())
          connect_unix(std::move(req.factory), std::move(req.path),
                       req.options, std::move(done), std::move(req.tls),
                       std::move(req.tls_opts));
        else if (req.tls)
          connect(std::move(req.factory), std::move(req.host), req.port,
                  std::move(*req.tls), std::move(req.tls_opts), req.options,
                  std::move(done));
        else
          connect(std::move(req.factory), std::move(req.host), req.port,
                  req.options, std::move(done));
        return rp;
      },
      [this, answer](loop_ops::spawn_process& req) -> caf::result<transport> {
        auto [rp, done] = answer(std::type_identity<transport>{});
        spawn_process(std::move(req.factory), std::move(req.argv),
                      std::move(req.options), std::move(done));
        return rp;
      },
      [this, answer](loop_ops::listen& req) -> caf::result<server> {
        auto [rp, done] = answer(std::type_identity<server>{});
        if (!req.path.empty())
          listen_unix(std::move(req.factory), std::move(req.path),
                      std::move(req.options), std::move(done));
        else
          listen(std::move(req.factory), std::move(req.host), req.port,
                 std::move(req.options), std::move(done));
        return rp;
      },
      [this, answer](loop_ops::open_datagram& req) -> caf::result<transport> {
        auto [rp, done] = answer(std::type_identity<transport>{});
        if (req.unix_socket)
          open_unix_datagram(std::move(req.factory), std::move(req.local_path),
                             std::move(req.remote_path), std::move(done));
        else
          open_datagram(std::move(req.factory), std::move(req.options),
                        std::move(done));
        return rp;
      },
      [this, self, answer](loop_ops::remote_actor& req)
        -> caf::result<caf::actor> {
        auto [rp, done] = answer(std::type_identity<caf::actor>{});
        ask_middleman(self, std::move(req.host), req.port, std::move(done));
        return rp;
      },
    };
  });
  return hdl;
}

void runtime::shutdown(std::chrono::milliseconds grace) {
  using clock = std::chrono::steady_clock;
  if (loops_->on_loop_thread()) {
    // Waiting here would stop the very thread that has to do the work.
    loops_->warn("runtime::shutdown called on the loop thread; ignored");
    return;
  }
  executor_->close();
  // Stop accepting and start closing every connection; connects under way
  // end with `closed`.
  loops_->run_sync_each([](detail::multiplexer& mux) {
    mux.cancel_kept();
    mux.for_each_tracked([](const caf::actor& hdl, bool is_server) {
      if (is_server)
        caf::anon_send(hdl, close_atom::value);
      else if (detail::top_layer(hdl) == hdl)
        caf::anon_send(hdl, op::close{});
      // else a TLS layer above closes it, after its close_notify
    });
  });
  auto tracked = [this] {
    size_t n = 0;
    loops_->run_sync_each([&](detail::multiplexer& mux) {
      mux.for_each_tracked([&](const caf::actor&, bool) { ++n; });
    });
    return n;
  };
  auto deadline = clock::now() + grace;
  while (tracked() > 0 && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  // Whatever did not drain in time is aborted; then wait for it to go.
  for (int round = 0; round < 1000 && tracked() > 0; ++round) {
    loops_->run_sync_each([](detail::multiplexer& mux) {
      mux.for_each_tracked([](const caf::actor& hdl, bool is_server) {
        if (is_server)
          caf::anon_send(hdl, close_atom::value);
        else
          caf::anon_send(hdl, op::abort{});
      });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  shut_down_ = true;
}

caf::expected<uint16_t> runtime::publish(const caf::actor& whom,
                                         uint16_t port,
                                         const std::string& host) {
  if (auto err = check_distributed("publish"))
    return err;
  if (loops_->on_loop_thread())
    return make_error(errc::would_deadlock, "publish on the loop thread");
  if (host.empty())
    return make_error(errc::invalid_argument,
                      "publish needs an address to listen on");
  if (opts_.cluster_tls)
    return caf::openssl::publish(whom, port, host.c_str(), true);
  if (!opts_.allow_insecure_distribution && !is_loopback(host))
    return make_error(errc::permission_denied,
                      "publish on " + host
                        + " without runtime_options::cluster_tls: plain BASP "
                          "admits whoever connects and sends everything in "
                          "clear text (allow_insecure_distribution allows it "
                          "anyway)");
  return system_->middleman().publish(whom, port, host.c_str(), true);
}

caf::error runtime::check_distributed(const char* what) const {
  if (!opts_.distributed)
    return make_error(errc::not_supported,
                      std::string{what} + " needs runtime_options::distributed");
  if (opts_.cluster_tls && cluster_tls_error_)
    return cluster_tls_error_;
  return caf::none;
}

caf::expected<caf::actor> runtime::remote_actor(const std::string& host,
                                                uint16_t port) {
  if (auto err = check_distributed("remote_actor"))
    return err;
  if (loops_->on_loop_thread())
    return make_error(errc::would_deadlock,
                      "remote_actor on the loop thread");
  if (opts_.cluster_tls)
    return caf::openssl::remote_actor(*system_, host, port);
  return system_->middleman().remote_actor(host, port);
}

void runtime::ask_middleman(caf::event_based_actor* self, std::string host,
                            uint16_t port, actor_callback done) {
  if (auto err = check_distributed("remote_actor")) {
    done(std::move(err));
    return;
  }
  // The middleman's actor connects and shakes hands on a thread of its
  // own; asking it blocks no one.
  auto mm = opts_.cluster_tls ? system_->openssl_manager().actor_handle()
                              : system_->middleman().actor_handle();
  self
    ->request(mm, caf::infinite, caf::connect_atom::value, std::move(host),
              port)
    .then(
      [port, done](const caf::node_id&, caf::strong_actor_ptr& ptr,
                   const std::set<std::string>&) {
        if (ptr)
          done(caf::actor_cast<caf::actor>(std::move(ptr)));
        else
          done(caf::make_error(caf::sec::no_actor_published_at_port, port));
      },
      [done](caf::error& err) { done(std::move(err)); });
}

void runtime::remote_actor(std::string host, uint16_t port,
                           actor_callback done) {
  spawn_on_loop([this, host = std::move(host), port,
                 done = std::move(done)](caf::event_based_actor* self) mutable {
    ask_middleman(self, std::move(host), port,
                  [self, done = std::move(done)](caf::expected<caf::actor> x) {
                    done(std::move(x));
                    self->quit();
                  });
    // Nothing but the answer (no one else has this actor's handle).
    return caf::behavior{[](int) {}};
  });
}

caf::expected<uint64_t> runtime::sendfile(transport t, int fd,
                                          uint64_t offset,
                                          std::optional<uint64_t> count) {
  if (loops_->on_loop_thread())
    return make_error(errc::would_deadlock, "sendfile on the loop thread");
  auto msg = t.file_request(fd, offset, count);
  if (!msg)
    return std::move(msg.error());
  if (msg->count == 0)
    return uint64_t{0};
  caf::expected<uint64_t> result{uint64_t{0}};
  caf::scoped_actor self{*system_};
  self->request(t.actor(), caf::infinite, std::move(*msg))
    .receive([&](uint64_t sent) { result = sent; },
             [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::error runtime::run_in_executor(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> guard{executor_->mtx};
    if (executor_->closed)
      return make_error(errc::closed, "run_in_executor after shutdown");
    ++executor_->running;
  }
  // A detached actor: its thread is CAF's, which the system waits for when
  // it ends (counted, not joined: the thread's exit handlers may still run).
  system_->spawn<executor_actor, caf::detached>(
    [ex = executor_, fn = std::move(fn), mux = &loops_->at(0)] {
      try {
        fn();
      } catch (const std::exception& e) {
        mux->warn(std::string{"run_in_executor: "} + e.what());
      } catch (...) {
        mux->warn("run_in_executor: an exception");
      }
      std::lock_guard<std::mutex> guard{ex->mtx};
      if (--ex->running == 0)
        ex->idle.notify_all();
    });
  return caf::none;
}

int runtime::wait_for_signal() {
  auto set = shutdown_signals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
    // retry
  }
  return sig;
}

caf::actor runtime::spawn_on_loop(
  std::function<caf::behavior(caf::event_based_actor*)> init) {
  return system_->spawn<loop_actor>(loops_->pick(), std::move(init));
}

caf::actor runtime::spawn_on_loop(
  size_t index, std::function<caf::behavior(caf::event_based_actor*)> init) {
  if (index >= loops_->size())
    throw std::out_of_range("spawn_on_loop: loop " + std::to_string(index)
                            + " of " + std::to_string(loops_->size()));
  return system_->spawn<loop_actor>(loops_->at(index), std::move(init));
}

} // namespace tact
