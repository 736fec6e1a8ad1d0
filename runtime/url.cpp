#include "tact/runtime/url.hpp"

#include <charconv>

#include "tact/runtime/errc.hpp"

namespace tact {

namespace {

caf::error bad(std::string_view text, std::string_view why) {
  return make_error(errc::invalid_argument,
                    "bad URL '" + std::string{text} + "': " + std::string{why});
}

} // namespace

caf::expected<url> parse_url(std::string_view text) {
  url result;
  auto sep = text.find("://");
  if (sep == std::string_view::npos || sep == 0)
    return bad(text, "expected SCHEME://...");
  result.scheme = std::string{text.substr(0, sep)};
  auto rest = text.substr(sep + 3);
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    auto query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    while (!query.empty()) {
      auto amp = query.find('&');
      auto item = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view{}
                                            : query.substr(amp + 1);
      if (item.empty())
        continue;
      auto eq = item.find('=');
      if (eq == 0)
        return bad(text, "query parameter without a name");
      if (eq == std::string_view::npos)
        result.query[std::string{item}] = "";
      else
        result.query[std::string{item.substr(0, eq)}]
          = std::string{item.substr(eq + 1)};
    }
  }
  if (result.scheme == "unix" || result.scheme == "tls+unix") {
    if (rest.empty())
      return bad(text, "expected " + result.scheme + "://PATH");
    result.path = std::string{rest};
    return result;
  }
  // host:port, with the host in brackets for IPv6.
  std::string_view host;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos)
      return bad(text, "missing ']' after an IPv6 address");
    host = rest.substr(1, close - 1);
    auto after = rest.substr(close + 1);
    if (after.empty() || after.front() != ':')
      return bad(text, "expected :PORT after the host");
    port = after.substr(1);
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos)
      return bad(text, "expected HOST:PORT");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return bad(text, "an IPv6 address needs brackets: [ADDRESS]:PORT");
  }
  if (host.empty())
    return bad(text, "empty host");
  if (host.find_first_of("/[] ") != std::string_view::npos)
    return bad(text, "invalid character in the host");
  if (port.empty())
    return bad(text, "empty port");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(),
                                   value);
  if (ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return bad(text, "the port must be a number from 0 to 65535");
  result.host = std::string{host};
  result.port = static_cast<uint16_t>(value);
  return result;
}

std::string to_string(const url& u) {
  if (u.scheme == "unix" || u.scheme == "tls+unix")
    return u.scheme + "://" + u.path;
  auto host = u.host.find(':') != std::string::npos ? "[" + u.host + "]"
                                                    : u.host;
  return u.scheme + "://" + host + ":" + std::to_string(u.port);
}

} // namespace tact
