// The runtime's loop operations (asyncio's create_connection,
// create_server, create_datagram_endpoint, connect_read_pipe,
// subprocess_exec, ...): each hands its work to the operation of its
// transport kind, in transports/ (connector.cpp, server.cpp, stream.cpp,
// datagram.cpp, pipe.cpp, subprocess.cpp); the blocking forms wait for the
// asynchronous ones, off the loop.

#include <future>

#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/transports/detail/connector.hpp"
#include "tact/transports/detail/datagram.hpp"
#include "tact/transports/detail/pipe.hpp"
#include "tact/transports/detail/server.hpp"
#include "tact/transports/detail/socket_transport.hpp"
#include "tact/transports/detail/stream.hpp"
#include "tact/transports/detail/subprocess.hpp"

namespace tact {

namespace {

caf::error check_thread(const detail::loop_group& loops) {
  if (loops.on_loop_thread())
    return make_error(errc::would_deadlock,
                      "blocking loop operation called on the loop thread");
  return caf::none;
}

// Runs an asynchronous loop operation and waits for its answer: the
// blocking forms. Refused on the loop thread, which would have to answer.
template <class T>
caf::expected<T>
wait_for(const detail::loop_group& loops,
         const std::function<void(std::function<void(caf::expected<T>)>)>& op) {
  if (auto err = check_thread(loops))
    return err;
  auto done = std::make_shared<std::promise<caf::expected<T>>>();
  auto result = done->get_future();
  op([done = std::move(done)](caf::expected<T> x) {
    done->set_value(std::move(x));
  });
  // An answer handler dropped unanswered (the loop stopped) breaks the
  // promise.
  try {
    return result.get();
  } catch (const std::future_error&) {
    return make_error(errc::closed, "the loop stopped before answering");
  }
}

} // namespace

// -- TCP and Unix stream sockets ------------------------------------------------

void runtime::connect(protocol_factory factory, std::string host,
                      uint16_t port, connection_options opts,
                      transport_callback done) {
  detail::connect_target target;
  target.host = std::move(host);
  target.port = port;
  detail::open_stream(loops_->pick(), opts_.read_credit, std::move(target), opts,
                      std::move(factory), std::move(done));
}

void runtime::connect(protocol_factory factory, std::string host,
                      uint16_t port, tls_context ctx, tls_options tls,
                      connection_options opts, transport_callback done) {
  if (tls.server_hostname.empty())
    tls.server_hostname = host;
  detail::connect_target target;
  target.host = std::move(host);
  target.port = port;
  detail::open_stream(loops_->pick(), opts_.read_credit, std::move(target), opts,
                      std::move(factory), std::move(done), &ctx,
                      std::move(tls));
}

void runtime::connect_unix(protocol_factory factory, std::string path,
                           connection_options opts, transport_callback done,
                           std::optional<tls_context> ctx, tls_options tls) {
  if (opts.keepalive) {
    loops_->pick().post([done = std::move(done)] {
      done(make_error(errc::invalid_argument,
                      "keepalive on a Unix socket connection"));
    });
    return;
  }
  detail::connect_target target;
  target.path = std::move(path);
  detail::open_stream(loops_->pick(), opts_.read_credit, std::move(target), opts,
                      std::move(factory), std::move(done),
                      ctx ? &*ctx : nullptr, std::move(tls));
}

caf::expected<transport> runtime::create_connection(protocol_factory factory,
                                                    const std::string& host,
                                                    uint16_t port,
                                                    connection_options opts) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    connect(std::move(factory), host, port, opts, std::move(done));
  });
}

caf::expected<transport>
runtime::create_connection(protocol_factory factory, const std::string& host,
                           uint16_t port, const tls_context& ctx,
                           tls_options opts, connection_options conn) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    connect(std::move(factory), host, port, ctx, std::move(opts), conn,
            std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_connection(protocol_factory factory,
                                const std::string& path,
                                connection_options opts) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    connect_unix(std::move(factory), path, opts, std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_connection(protocol_factory factory,
                                const std::string& path, const tls_context& ctx,
                                tls_options opts, connection_options conn) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    connect_unix(std::move(factory), path, conn, std::move(done), ctx,
                 std::move(opts));
  });
}

caf::expected<transport>
runtime::connect_accepted_socket(protocol_factory factory, int fd) {
  return detail::wrap_accepted_socket(loops_->pick(), opts_.read_credit, factory, fd);
}

void runtime::listen(protocol_factory factory, std::string host, uint16_t port,
                     server_options opts, server_callback done) {
  detail::listen_tcp(loops_->pick(), opts_.read_credit, std::move(factory),
                     std::move(host), port, std::move(opts), std::move(done));
}

void runtime::listen_unix(protocol_factory factory, std::string path,
                          server_options opts, server_callback done) {
  detail::listen_unix(loops_->pick(), opts_.read_credit, std::move(factory),
                      std::move(path), std::move(opts), std::move(done));
}

caf::expected<server> runtime::create_server(protocol_factory factory,
                                             const std::string& host,
                                             uint16_t port,
                                             server_options opts) {
  return wait_for<server>(*loops_, [&](server_callback done) {
    listen(std::move(factory), host, port, std::move(opts), std::move(done));
  });
}

caf::expected<server> runtime::create_unix_server(protocol_factory factory,
                                                  const std::string& path,
                                                  server_options opts) {
  return wait_for<server>(*loops_, [&](server_callback done) {
    listen_unix(std::move(factory), path, std::move(opts), std::move(done));
  });
}

// -- datagram sockets -------------------------------------------------------------

void runtime::open_datagram(protocol_factory factory, datagram_options opts,
                            transport_callback done) {
  detail::open_datagram(loops_->pick(), opts_.read_credit, std::move(factory),
                        std::move(opts), std::move(done));
}

void runtime::open_unix_datagram(protocol_factory factory,
                                 std::string local_path,
                                 std::string remote_path,
                                 transport_callback done) {
  detail::open_unix_datagram(loops_->pick(), opts_.read_credit, std::move(factory),
                             std::move(local_path), std::move(remote_path),
                             std::move(done));
}

caf::expected<transport>
runtime::create_datagram_endpoint(protocol_factory factory,
                                  datagram_options opts) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    open_datagram(std::move(factory), std::move(opts), std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_datagram_endpoint(protocol_factory factory,
                                       const std::string& local_path,
                                       const std::string& remote_path) {
  return wait_for<transport>(*loops_, [&](transport_callback done) {
    open_unix_datagram(std::move(factory), local_path, remote_path,
                       std::move(done));
  });
}

// -- pipes --------------------------------------------------------------------------

caf::expected<transport> runtime::connect_read_pipe(protocol_factory factory,
                                                    int fd) {
  return detail::open_read_pipe(loops_->pick(), opts_.read_credit, factory, fd);
}

caf::expected<transport> runtime::connect_write_pipe(protocol_factory factory,
                                                     int fd) {
  return detail::open_write_pipe(loops_->pick(), factory, fd);
}

// -- child processes ------------------------------------------------------------

caf::expected<transport>
runtime::subprocess_exec(protocol_factory factory,
                         std::vector<std::string> argv,
                         subprocess_options opts) {
  if (auto err = check_thread(*loops_))
    return err;
  // As asyncio: back once the protocol has handled connection_made, so
  // what it set there is set for the caller (its loop may be another
  // thread).
  auto made = std::make_shared<std::promise<void>>();
  auto done = made->get_future();
  auto& mux = loops_->pick();
  auto t = detail::start_process(mux, opts_.read_credit, factory, argv, opts,
                                 [made] { made->set_value(); });
  if (t)
    detail::wait_made(mux, done);
  return t;
}

caf::expected<transport>
runtime::subprocess_shell(protocol_factory factory, const std::string& command,
                          subprocess_options opts) {
  return subprocess_exec(std::move(factory), {"/bin/sh", "-c", command},
                         std::move(opts));
}

process_op runtime::create_subprocess_exec(std::vector<std::string> argv,
                                           subprocess_options opts) {
  return process_op{[this, argv = std::move(argv), opts = std::move(opts)](
                      protocol_factory factory, transport_callback done) {
    spawn_process(std::move(factory), argv, opts, std::move(done));
  }};
}

caf::expected<server> runtime::create_server(protocol_factory factory,
                                            const url& where,
                                            server_options opts) {
  auto tls = where.scheme == "tls" || where.scheme == "tls+unix";
  auto unix_socket = where.scheme == "unix" || where.scheme == "tls+unix";
  if (!tls && !unix_socket && where.scheme != "tcp")
    return make_error(errc::invalid_argument,
                      "no server for the scheme '" + where.scheme + "'");
  if (tls && !opts.tls) {
    auto cert = where.query.find("cert");
    auto key = where.query.find("key");
    if (cert == where.query.end() || key == where.query.end())
      return make_error(errc::invalid_argument,
                        "a TLS server URL needs ?cert=FILE&key=FILE");
    auto ctx = tls_context::server(
      {.cert_file = cert->second, .key_file = key->second});
    if (!ctx)
      return std::move(ctx.error());
    opts.tls = std::move(*ctx);
  }
  if (unix_socket)
    return create_unix_server(std::move(factory), where.path, std::move(opts));
  return create_server(std::move(factory), where.host, where.port,
                       std::move(opts));
}

transport_op runtime::connect(protocol_factory factory, std::string host,
                              uint16_t port) {
  return connect(std::move(factory), std::move(host), port,
                 connection_options{});
}

transport_op runtime::connect(protocol_factory factory, std::string host,
                              uint16_t port, connection_options opts) {
  return transport_op{[this, factory = std::move(factory),
                       host = std::move(host), port,
                       opts = std::move(opts)](transport_callback done) {
    connect(factory, host, port, opts, std::move(done));
  }};
}

transport_op runtime::connect_unix(protocol_factory factory,
                                   std::string path) {
  return transport_op{[this, factory = std::move(factory),
                       path = std::move(path)](transport_callback done) {
    connect_unix(factory, path, connection_options{}, std::move(done));
  }};
}

transport_op runtime::spawn_process(protocol_factory factory,
                                    std::vector<std::string> argv,
                                    subprocess_options opts) {
  return transport_op{[this, factory = std::move(factory),
                       argv = std::move(argv),
                       opts = std::move(opts)](transport_callback done) {
    spawn_process(factory, argv, opts, std::move(done));
  }};
}

process_op runtime::create_subprocess_exec(std::vector<std::string> argv) {
  return create_subprocess_exec(std::move(argv), subprocess_options{});
}

process_op runtime::create_subprocess_shell(std::string command) {
  return create_subprocess_shell(std::move(command), subprocess_options{});
}

process_op runtime::create_subprocess_shell(std::string command,
                                            subprocess_options opts) {
  return create_subprocess_exec({"/bin/sh", "-c", std::move(command)},
                                std::move(opts));
}

void runtime::spawn_process(protocol_factory factory,
                            std::vector<std::string> argv,
                            subprocess_options opts, transport_callback done) {
  // Off the loop, on the one spawning thread: a fork copies the page
  // tables of the whole process, and a loop busy forking lets a burst of
  // connections overflow its servers' accept queues. The answer goes back
  // to the loop.
  auto* mux = &loops_->pick();
  auto credit = opts_.read_credit;
  auto job = [mux, credit, factory = std::move(factory), argv = std::move(argv),
              opts = std::move(opts), done]() mutable {
    // The answer goes once the protocol has handled connection_made (as
    // connect's), or at once when the child did not start. Both halves
    // meet on the loop, in either order.
    struct pending {
      transport_callback answer;
      transport started;
      int halves = 0;
      void step() {
        if (++halves == 2)
          answer(std::move(started));
      }
    };
    auto p = std::make_shared<pending>();
    p->answer = std::move(done);
    auto result = detail::start_process(*mux, credit, factory, argv, opts,
                                        [mux, p] { mux->post([p] { p->step(); }); });
    if (!result) {
      mux->post([p, err = std::move(result.error())]() mutable {
        p->answer(std::move(err));
      });
      return;
    }
    mux->post([p, t = std::move(*result)]() mutable {
      p->started = std::move(t);
      p->step();
    });
  };
  if (!post_spawn(std::move(job)))
    mux->post([done = std::move(done)] {
      done(make_error(errc::closed, "the runtime is shutting down"));
    });
}

} // namespace tact
