// libFuzzer target: the RESP command parser (protocols/resp.hpp) fed
// arbitrary streams, with small limits so that they are reached. The first
// byte seeds how the stream is cut into chunks. Whatever the bytes, the
// commands and the outcome must not depend on the cuts nor on how often
// the reader takes commands, no command may break the limits, and every
// command re-encoded must decode to itself.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tact/protocols/resp.hpp"
#include "tact/runtime/errc.hpp"

namespace {

constexpr tact::resp::limits small{64, 8, 48};

struct outcome {
  std::vector<tact::resp::command> commands;
  std::string error;
  size_t buffered = 0;
};

void require(bool cond) {
  if (!cond)
    std::abort();
}

// Feeds the stream whole (seed 0) or in chunks of 1 to 64 bytes; the
// reader takes commands after every chunk, or (`lazy`) after every fourth
// and at the end.
outcome decode(std::string_view stream, uint32_t seed, bool lazy) {
  outcome out;
  tact::resp::command_decoder dec{small};
  auto take = [&] {
    for (;;) {
      auto x = dec.next();
      if (!x) {
        require(tact::code_of(x.error()) == tact::errc::malformed_input);
        out.error = tact::describe(x.error());
        return false;
      }
      if (!*x)
        return true;
      out.commands.push_back(std::move(**x));
    }
  };
  unsigned feeds = 0;
  for (size_t pos = 0; pos < stream.size();) {
    size_t n = stream.size() - pos;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (seed >> 16) % 64);
    }
    dec.feed(stream.substr(pos, n));
    pos += n;
    if ((!lazy || ++feeds % 4 == 0) && !take())
      return out;
  }
  if (take())
    out.buffered = dec.buffered();
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  uint32_t seed = data[0] | 1u;
  std::string_view stream{reinterpret_cast<const char*>(data + 1), size - 1};
  auto whole = decode(stream, 0, false);
  auto cut = decode(stream, seed, false);
  auto lazy = decode(stream, seed, true);
  require(whole.error == cut.error && whole.error == lazy.error);
  require(whole.commands == cut.commands && whole.commands == lazy.commands);
  require(whole.buffered == cut.buffered && whole.buffered == lazy.buffered);
  require(whole.buffered <= stream.size());
  // An array holds at most max_elements bulk strings of max_bulk bytes; an
  // inline line at most max_inline bytes.
  auto most_args = std::max(small.max_elements, (small.max_inline + 1) / 2);
  auto longest = std::max(small.max_bulk, small.max_inline);
  for (auto& cmd : whole.commands) {
    require(!cmd.empty() && cmd.size() <= most_args);
    for (auto& arg : cmd)
      require(arg.size() <= longest);
    std::string again;
    tact::resp::append_command(again, cmd);
    tact::resp::command_decoder dec;
    dec.feed(again);
    auto x = dec.next();
    require(x && *x && **x == cmd);
    require(dec.buffered() == 0);
    auto y = dec.next();
    require(y && !*y);
  }
  return 0;
}
