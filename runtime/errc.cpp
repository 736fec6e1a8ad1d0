#include "tact/runtime/errc.hpp"

#include <cerrno>
#include <cstring>

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>

namespace tact {

std::string_view to_string(errc x) {
  switch (x) {
    case errc::none: return "none";
    case errc::connection_reset: return "connection_reset";
    case errc::broken_pipe: return "broken_pipe";
    case errc::connection_refused: return "connection_refused";
    case errc::connection_aborted: return "connection_aborted";
    case errc::timed_out: return "timed_out";
    case errc::address_in_use: return "address_in_use";
    case errc::address_not_available: return "address_not_available";
    case errc::unreachable: return "unreachable";
    case errc::name_resolution_failed: return "name_resolution_failed";
    case errc::permission_denied: return "permission_denied";
    case errc::too_many_open_files: return "too_many_open_files";
    case errc::out_of_resources: return "out_of_resources";
    case errc::no_such_file: return "no_such_file";
    case errc::invalid_argument: return "invalid_argument";
    case errc::bad_file_descriptor: return "bad_file_descriptor";
    case errc::write_after_eof: return "write_after_eof";
    case errc::not_supported: return "not_supported";
    case errc::protocol_failed: return "protocol_failed";
    case errc::protocol_down: return "protocol_down";
    case errc::transport_down: return "transport_down";
    case errc::closed: return "closed";
    case errc::would_deadlock: return "would_deadlock";
    case errc::no_such_process: return "no_such_process";
    case errc::message_too_long: return "message_too_long";
    case errc::tls_handshake_failed: return "tls_handshake_failed";
    case errc::certificate_verify_failed: return "certificate_verify_failed";
    case errc::tls_error: return "tls_error";
    case errc::frame_too_large: return "frame_too_large";
    case errc::incomplete_frame: return "incomplete_frame";
    case errc::malformed_input: return "malformed_input";
    case errc::not_connected: return "not_connected";
    case errc::os_error: return "os_error";
  }
  return "unknown";
}

caf::error make_error(errc x) {
  return caf::error{static_cast<uint8_t>(x), error_category};
}

caf::error make_error(errc x, std::string context) {
  return caf::error{static_cast<uint8_t>(x), error_category,
                    caf::make_message(std::move(context))};
}

errc from_errno(int err) {
  switch (err) {
    case 0: return errc::none;
    case ECONNRESET: return errc::connection_reset;
    case EPIPE: return errc::broken_pipe;
    case ECONNREFUSED: return errc::connection_refused;
    case ECONNABORTED: return errc::connection_aborted;
    case ETIMEDOUT: return errc::timed_out;
    case EADDRINUSE: return errc::address_in_use;
    case EADDRNOTAVAIL: return errc::address_not_available;
    case EHOSTUNREACH:
    case ENETUNREACH: return errc::unreachable;
    case EACCES:
    case EPERM: return errc::permission_denied;
    case EMFILE:
    case ENFILE: return errc::too_many_open_files;
    case ENOBUFS:
    case ENOMEM: return errc::out_of_resources;
    case ENOENT: return errc::no_such_file;
    case EMSGSIZE: return errc::message_too_long;
    case ESRCH: return errc::no_such_process;
    case EINVAL:
    case EAFNOSUPPORT: return errc::invalid_argument;
    case EBADF:
    case ENOTSOCK: return errc::bad_file_descriptor;
    default: return errc::os_error;
  }
}

caf::error error_from_errno(int err, std::string context) {
  auto code = from_errno(err);
  if (code == errc::os_error || code == errc::invalid_argument) {
    // Keep the OS's own words where the code alone says little.
    context += ": ";
    context += std::strerror(err);
  }
  return make_error(code, std::move(context));
}

errc code_of(const caf::error& err) {
  if (!err)
    return errc::none;
  if (err.category() != error_category)
    return errc::os_error;
  return static_cast<errc>(err.code());
}

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  if (err.category() != error_category)
    return caf::to_string(err);
  std::string result{to_string(static_cast<errc>(err.code()))};
  if (err.context().match_elements<std::string>()) {
    result += " (";
    result += err.context().get_as<std::string>(0);
    result += ")";
  }
  return result;
}

void add_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(
    error_category, [](uint8_t code, caf::atom_value, const caf::message& ctx) {
      std::string result = "tact::";
      result += to_string(static_cast<errc>(code));
      if (ctx.match_elements<std::string>()) {
        result += "(";
        result += ctx.get_as<std::string>(0);
        result += ")";
      }
      return result;
    });
}

} // namespace tact
