#pragma once

// Forward declarations of tact/transports/'s types: servers and the
// options of each transport kind.

#include <cstdint>

namespace tact {

class server;
struct server_options;
struct connection_options;
struct keepalive_options;

class tls_context;
struct tls_options;
struct tls_client_options;
struct tls_server_options;
enum class tls_version : uint8_t;

struct datagram_options;
enum class address_family : uint8_t;

struct subprocess_options;
enum class subprocess_stdio : uint8_t;

struct line_framing;
struct length_prefix_framing;
class frame_decoder;

} // namespace tact
