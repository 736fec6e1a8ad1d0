#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "tact/export.hpp"

namespace tact {

/// An endpoint as the examples and tools take it on the command line:
/// `tcp://HOST:PORT`, `tcp://[IPV6]:PORT`, `unix://PATH`, each optionally
/// followed by `?key=value&...`. `tls+unix://PATH` has a path too (a TLS
/// server on a Unix socket names itself so).
struct url {
  /// `tcp` or `unix` (other schemes are parsed but left to the caller).
  std::string scheme;
  /// Host name or address, without brackets; empty for `unix`.
  std::string host;
  uint16_t port = 0;
  /// Socket path for `unix` and `tls+unix`.
  std::string path;
  /// Query parameters, in order of key.
  std::map<std::string, std::string> query;
};

/// Parses `text`; a malformed URL is `errc::invalid_argument` with a
/// message that says what is wrong.
TACT_EXPORT caf::expected<url> parse_url(std::string_view text);

/// Renders `u` back as text (brackets around IPv6 hosts; no query).
[[nodiscard]] TACT_EXPORT std::string to_string(const url& u);

} // namespace tact
