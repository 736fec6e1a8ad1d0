// libFuzzer target: the frame parser (transports/frames.hpp) fed arbitrary
// streams. The first byte picks the format (length prefix with a 1, 2, 4
// or 8-byte header, or lines with one of three delimiters), the second
// seeds how the stream is cut into chunks. Whatever the bytes, the frames
// and the outcome must not depend on the cuts, no frame may break the
// format's rules, and the frames re-encoded must give back the stream
// they came from.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "tact/transports/frames.hpp"
#include "tact/runtime/errc.hpp"

namespace {

struct outcome {
  std::vector<tact::bytes> frames;
  tact::errc error = tact::errc::none;
  // Bytes of the stream that the frames account for.
  size_t parsed = 0;
};

void require(bool cond) {
  if (!cond)
    std::abort();
}

outcome decode(const tact::framing& f, const uint8_t* data, size_t size,
               uint32_t seed) {
  outcome out;
  tact::frame_decoder dec{f};
  auto take = [&] {
    for (;;) {
      auto x = dec.next();
      if (!x) {
        out.error = tact::code_of(x.error());
        return false;
      }
      if (!*x)
        return true;
      out.frames.push_back(std::move(**x));
    }
  };
  for (size_t pos = 0; pos < size;) {
    // A cheap generator: chunks of 1 to 64 bytes when seeded, else one.
    size_t n = size - pos;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (seed >> 16) % 64);
    }
    auto* p = reinterpret_cast<const char*>(data + pos);
    dec.feed(tact::bytes(p, p + n));
    pos += n;
    if (!take())
      return out;
  }
  auto last = dec.finish();
  if (!last)
    out.error = tact::code_of(last.error());
  else if (*last)
    out.frames.push_back(std::move(**last));
  return out;
}

std::string encode(const tact::framing& f,
                   const std::vector<tact::bytes>& frames) {
  std::string stream;
  for (auto& frame : frames) {
    std::vector<tact::bytes> chunks;
    require(!tact::encode_frame(f, frame, chunks));
    for (auto& c : chunks)
      stream.append(c.begin(), c.end());
  }
  return stream;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2)
    return 0;
  tact::framing f;
  auto pick = data[0] % 5;
  if (pick < 4) {
    f = tact::length_prefix_framing{1u << pick, 300};
  } else {
    static const char* delims[] = {"\n", "\r\n", "ab"};
    f = tact::line_framing{delims[data[0] / 5 % 3], 40};
  }
  uint32_t seed = data[1] | 1u;
  data += 2;
  size -= 2;
  auto whole = decode(f, data, size, 0);
  auto cut = decode(f, data, size, seed);
  require(whole.error == cut.error);
  require(whole.frames == cut.frames);
  if (auto* lines = std::get_if<tact::line_framing>(&f)) {
    for (auto& frame : whole.frames) {
      require(frame.size() <= lines->max_length);
      std::string text(frame.begin(), frame.end());
      require(text.find(lines->delimiter) == std::string::npos);
    }
  } else {
    for (auto& frame : whole.frames)
      require(frame.size() <= 300);
  }
  // The frames are the stream's start, re-encoded (a last line may have
  // come without its delimiter).
  auto again = encode(f, whole.frames);
  std::string stream(reinterpret_cast<const char*>(data), size);
  if (whole.error == tact::errc::none) {
    if (std::holds_alternative<tact::line_framing>(f)
        && again.size() == stream.size() + std::get<tact::line_framing>(f)
                                              .delimiter.size())
      again.resize(stream.size());
    require(again == stream);
  } else {
    require(stream.compare(0, again.size(), again) == 0);
  }
  return 0;
}
