#pragma once

// Forward declarations of tact/runtime/'s types (and of the loop, which
// every floor names).

#include <cstdint>

namespace tact {

class runtime;
struct runtime_options;
struct cluster_tls_options;

class transport;
enum class signal_target;
struct endpoint;
struct url;
struct resolver_options;
enum class errc : uint8_t;

// The events a transport delivers (runtime/messages.hpp).
struct connection_made;
struct data_received;
struct eof_received;
struct pause_writing;
struct resume_writing;
struct connection_lost;
struct datagram_received;
struct error_received;
struct pipe_data_received;
struct pipe_connection_lost;
struct process_exited;
struct handover;
struct handover_stash;

// The commands a handle sends its transport.
namespace op {
struct write;
struct sendto;
struct write_eof;
struct close;
struct abort;
struct pause_reading;
struct resume_reading;
struct set_write_buffer_limits;
struct set_protocol;
struct consumed;
struct get_write_buffer_size;
class file_ref;
struct sendfile;
} // namespace op

namespace detail {
class multiplexer;
struct transport_state;
} // namespace detail

} // namespace tact
