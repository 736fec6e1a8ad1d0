// libFuzzer target: the endpoint URL parser (`tact::parse_url`), which
// every example and tool runs on its command line. Besides not crashing, a
// URL that parses must print back to text that parses to the same fields.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tact/runtime/url.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto u = tact::parse_url(text);
  if (!u)
    return 0;
  auto again = tact::parse_url(tact::to_string(*u));
  if (!again || again->scheme != u->scheme || again->host != u->host
      || again->port != u->port || again->path != u->path)
    std::abort();
  return 0;
}
