#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tact/actors/protocol.hpp"
#include "tact/transports/detail/stream.hpp"
#include "tact/transports/server.hpp"

namespace tact::detail {

class multiplexer;

/// Spawns a server actor accepting on the listening descriptors `fds` (it
/// takes ownership). `unlink_path`, when not empty, is removed on close
/// while it still names the socket file the server made.
/// With `spread`, each connection goes to the least loaded loop of `mux`'s
/// group; else it stays on `mux`.
server spawn_server(multiplexer& mux, std::vector<int> fds, stream_kind kind,
                    protocol_factory factory, uint64_t read_credit,
                    int backlog, std::string unlink_path,
                    std::vector<std::string> urls, uint16_t port,
                    stream_limits limits = {}, bool spread = true);

/// asyncio's `create_server` without blocking: resolves `host` on the
/// loop (empty: every interface), listens on each address (with port 0,
/// one free port for all) and gives `done` the server or the error. Any
/// thread; `done` runs on the loop, never before this returns.
void listen_tcp(multiplexer& mux, uint64_t read_credit,
                protocol_factory factory, std::string host, uint16_t port,
                server_options opts, server_callback done);

/// asyncio's `create_unix_server` without blocking, on the socket file
/// `path` (a stale socket there is replaced).
void listen_unix(multiplexer& mux, uint64_t read_credit,
                 protocol_factory factory, std::string path,
                 server_options opts, server_callback done);

} // namespace tact::detail
