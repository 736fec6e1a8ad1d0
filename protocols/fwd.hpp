#pragma once

// Forward declarations of tact/protocols/'s types.

namespace tact {

class echo_protocol;
class datagram_echo_protocol;

namespace resp {
struct limits;
class command_decoder;
} // namespace resp

} // namespace tact
