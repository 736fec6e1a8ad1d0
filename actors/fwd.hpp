#pragma once

// Forward declarations of tact/actors/'s types: the protocol interfaces.

namespace tact {

class base_protocol;
class protocol;
class datagram_protocol;
class subprocess_protocol;
class protocol_factory;
class timer_handle;

} // namespace tact
